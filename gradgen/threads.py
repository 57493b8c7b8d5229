"""Threads: `loss_and_gradients` scheduled over row chunks of the batch.

For `gradgen generate --threads` (or `threads: true`), the `loss_and_gradients`
kernel is split into phases that alternate between the calling thread (the *driver*)
and a pool of threads that each take a chunk of rows of the batch dim B:

* a node is *row-wise* when rows lo:hi of its value follow from rows lo:hi of its
  operands whose leading axis is B, and from the whole of its other operands:
  element-wise ops and their masks (broadcasting against operands without B), copies,
  reductions and softmaxes along axes other than B, `x[:, ...]`, `E[ids]` for ids
  with B leading. Row-wise nodes are computed per chunk, in a worker;
* a *B-reduction* sums a row-wise value over B (`sum`, `mean`, the sum over a
  broadcast axis, a dot product `u @ v` of two vectors of length B): each chunk
  computes its part (a dot product as `np.einsum`, which never calls BLAS), and the
  driver adds the parts in chunk order, so the result does not depend on which
  thread ran which chunk;
* everything else runs on the driver: matrix products (BLAS threads them itself),
  work without B, gathers and scatters.

Phases follow from the dependencies: a row-wise node runs in the first chunked phase
after the driver values it needs; its value is written to a full-size array
(`H[lo:hi] = ...`) only where a later phase or a result needs it, so a chain of
element-wise work never leaves the chunk. Only float arrays are written back: a mask
or an integer array needed later is computed by the driver instead.

The batch dim: the leading dim the inputs share (integer ids included), or, for a
model without array inputs, the leading dim its params share; a spec names it with
`threads: <dim>` where that is ambiguous. A kernel with no row-wise work (a scalar
model, or all matrix products) has no chunked phase and runs as the plain one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Diagnostic, SpecError
from .graph import LEAVES, Axes, Axis, Dim, Index, Name, Node, Subscripts, ancestors
from .lower import Kernel, Program, integral
from .model import Model
from .rules import RULES
from .spec import Spec

#: Element-wise ops the rule table does not mark as such: masks, selections, copies.
_ELEMENTWISE_PLUMBING = frozenset(
    {
        "sign",
        "gt",
        "ge",
        "lt",
        "le",
        "and_",
        "or_",
        "not_",
        "eq",
        "ne",
        "xlogy",
        "select",
        "nonzero",
        "copy",
        "as_float",
        "neg",  # element-wise ops of one operand with a rule of their own
        "powc",
    }
)
#: Reductions (and softmaxes) along an `Axis`: row-wise when B is not among its axes.
_ALONG = frozenset(
    {
        "sum",
        "mean",
        "logsumexp",
        "var",
        "std",
        "norm",
        "amax",
        "amin",
        "softmax",
        "log_softmax",
    }
)
#: Row-wise ops that make a view of their operand.
_VIEWS = frozenset({"getitem", "trail"})
#: Sums over B whose parts per chunk add up to the whole.
_SUMS = frozenset({"sum", "mean", "sum_axes", "sum_keep"})


@dataclass(frozen=True)
class Chunked:
    """One chunked phase: `nodes` computed on rows lo:hi, of which `stores` are
    written to full-size arrays and `partials` returned to be added up."""

    nodes: tuple[Node, ...]  # rebuilt on chunks, topological; the worker's lines
    stores: tuple[tuple[Node, Node], ...]  # (row-wise node, its value on the chunk)
    partials: tuple[tuple[Node, Node], ...]  # (B-reduction, its part on the chunk)
    widths: tuple[tuple[Dim, ...], ...]  # elements per row: the largest of these
    origin: tuple[tuple[Node, Node], ...] = ()  # (rebuilt node, the kernel's node)


@dataclass(frozen=True)
class Driver:
    """Nodes computed on the calling thread, in order."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Schedule:
    """The kernel `kernel` as phases; `stored`: the row-wise nodes written to
    full-size arrays (allocated by the driver before the first phase)."""

    kernel: Kernel
    batch: str
    bounds: str  # the worker's two arguments, "lo, hi"
    phases: tuple[Driver | Chunked, ...]
    stored: tuple[Node, ...]

    @property
    def chunked(self) -> bool:
        return any(isinstance(p, Chunked) for p in self.phases)


def batch_dim(model: Model) -> str | None:
    """B: named by the spec (`threads: N`), else the leading dim the array inputs
    share, else the one the array params share; None for a model without arrays.
    Two candidates are a located error."""
    spec = model.spec
    if spec.batch is not None:
        return spec.batch
    for kind, decls in (("inputs", spec.inputs), ("params", spec.params)):
        arrays = [d for d in decls if d.shape]
        if not arrays:
            continue
        leading = dict.fromkeys(
            d.shape[0] for d in arrays if isinstance(d.shape[0], str)
        )
        if len(leading) == 1:
            return next(iter(leading))
        if len(leading) > 1:
            raise SpecError([_ambiguous(spec, kind, list(leading))])
        return None  # every array leads with a number: no batch to split
    return None


def _ambiguous(spec: Spec, kind: str, dims: list[object]) -> Diagnostic:
    shown = ", ".join(str(d) for d in dims)
    return Diagnostic(
        spec.threads_at or spec.loc,
        f"threads: the {kind} lead with different dims ({shown}); name the batch"
        f" dim to split with `threads: <dim>`, e.g. `threads: {dims[0]}`",
    )


#: The module-level names a threaded module adds (an output is a module function).
MODULE_NAMES = frozenset({"os", "threading", "ThreadPoolExecutor", "THREADS", "CHUNK"})


def schedule(model: Model, program: Program) -> Schedule | None:
    """The threaded schedule of `loss_and_gradients` (None: the model has no loss)."""
    kernel = program.loss_and_gradients
    if kernel is None:
        return None
    if model.spec.backend != "numpy":
        raise SpecError(
            [
                Diagnostic(
                    model.spec.threads_at or model.spec.loc,
                    "threads are for the numpy backend: an array-API module runs on"
                    " its library's own threads (and dask's scheduler); drop one",
                )
            ]
        )
    clashes = [d for d in model.spec.outputs if d.name in MODULE_NAMES]
    if clashes:
        raise SpecError(
            [
                Diagnostic(
                    d.loc,
                    f"output `{d.name}` would hide the threaded module's `{d.name}`;"
                    " rename it",
                )
                for d in clashes
            ]
        )
    batch = batch_dim(model)
    taken = {*kernel.args, *kernel.names.values(), *kernel.dims}
    lo, hi = "lo", "hi"
    while lo in taken or hi in taken:
        lo, hi = lo + "_", hi + "_"
    bounds = f"{lo}, {hi}"
    results = list(kernel.results)
    if batch is None:
        return Schedule(kernel, "", bounds, (Driver(tuple(ancestors(results))),), ())
    return _Scheduler(model, kernel, batch, f"{lo}:{hi}").run(bounds)


class _Scheduler:
    def __init__(self, model: Model, kernel: Kernel, batch: str, rows: str) -> None:
        self.model = model
        self.kernel = kernel
        self.batch = batch
        self.rows = Name(rows)
        self.nodes = ancestors(kernel.results)
        self.driver: set[Node] = set()  # forced onto the driver (not float)

    def run(self, bounds: str) -> Schedule:
        while True:
            kinds, levels = self.classify()
            stored = self.stored(kinds, levels)
            # a mask or ids are computed by the driver; so is a view (`x[:, None]`),
            # which costs nothing there and would be copied if written back
            unfit = {n for n in stored if not self.floating(n) or n.op in _VIEWS}
            if not unfit:
                break
            self.driver |= unfit
        phases: list[Driver | Chunked] = []
        top = max(levels.values(), default=0)
        for level in range(top + 1):
            members = [n for n in self.nodes if levels[n] == level]
            if level % 2 == 0:
                drive = [n for n in members if kinds[n] == "driver"]
                if drive or level == 0:
                    phases.append(Driver(tuple(drive)))
            else:
                rows = [n for n in members if kinds[n] == "row"]
                sums = [
                    n
                    for n in self.nodes
                    if kinds[n] == "sum" and levels[n] == level + 1
                ]
                if rows or sums:
                    phases.append(self.chunk(rows, sums, stored, kinds))
        return Schedule(
            self.kernel,
            self.batch,
            bounds,
            tuple(phases),
            tuple(n for n in self.nodes if n in stored),
        )

    # --- which node runs where --------------------------------------------------------

    def leading(self, node: Node) -> bool:
        return node.rank > 0 and node.shape[0] == self.batch

    def aligned(self, node: Node) -> tuple[int, ...] | None:
        """The operands of `node` whose rows are its rows, if `node` is row-wise."""
        if not self.leading(node) or node in self.driver:
            return None
        op, args = node.op, node.args
        rule = RULES.get(op)
        if (rule is not None and (rule.elementwise or rule.broadcasts)) or (
            op in _ELEMENTWISE_PLUMBING
        ):
            return tuple(
                i for i, a in enumerate(args) if a.rank == node.rank and self.leading(a)
            )
        if op in _ALONG or op in ("sum_axes", "sum_keep"):
            axes = self.axes(node)
            if axes is not None and 0 not in axes and self.leading(args[0]):
                return (0,)
            return None
        if op == "trail" and self.leading(args[0]):
            return (0,)
        if op == "getitem":
            index = node.attrs
            if isinstance(index, Index) and index.items[:1] == (":",):
                return (0,) if self.leading(args[0]) else None
            return None
        if op == "gather" and self.leading(args[1]):
            return (1,)
        return None

    @staticmethod
    def axes(node: Node) -> tuple[int, ...] | None:
        """The axes a reduction runs along (None: every axis)."""
        attrs = node.attrs
        if isinstance(attrs, Axis):
            return attrs.axes
        assert isinstance(attrs, Axes), node.op
        return attrs.axes

    def summed(self, node: Node) -> bool:
        """A sum over B of row-wise values (its parts per chunk add up)."""
        if node in self.driver:
            return False
        if node.op in _SUMS:
            (a,) = node.args
            axes = self.axes(node)
            return self.leading(a) and (axes is None or 0 in axes)
        if node.op == "matmul":
            return all(a.rank == 1 and self.leading(a) for a in node.args)
        return False

    def classify(self) -> tuple[dict[Node, str], dict[Node, int]]:
        """Each node's kind (leaf, row, sum, driver) and level: driver phase k is
        level 2k, chunked phase k level 2k + 1; a sum's level is the driver level
        where its total is known."""
        kinds: dict[Node, str] = {}
        levels: dict[Node, int] = {}

        def whole(a: Node) -> int:
            """The level from which the whole of `a` is known on the driver."""
            return levels[a] + (1 if kinds[a] == "row" else 0)

        def sliced(a: Node) -> int:
            """The earliest chunked level that can read rows of `a`."""
            if kinds[a] == "row":
                return levels[a]
            return whole(a) | 1

        for n in self.nodes:
            if n.op in LEAVES:
                kinds[n], levels[n] = "leaf", 0
                continue
            rows = self.aligned(n)
            if rows:
                kinds[n] = "row"
                levels[n] = max(
                    sliced(a) if i in rows else (whole(a) + 1) | 1
                    for i, a in enumerate(n.args)
                )
            elif self.summed(n) and any(kinds[a] == "row" for a in n.args):
                kinds[n] = "sum"
                levels[n] = max(sliced(a) for a in n.args) + 1
            else:
                kinds[n] = "driver"
                levels[n] = max((whole(a) for a in n.args), default=0)
                levels[n] += levels[n] % 2
        return kinds, self.late(kinds, levels)

    def late(
        self, kinds: Mapping[Node, str], levels: dict[Node, int]
    ) -> dict[Node, int]:
        """The levels moved as late as their users allow: a value is computed in
        the phase that uses it (an element-wise value in the chunks that need it,
        instead of being written back; a transpose next to its product), except
        results and B-reductions, which stay where they are first known."""
        users: dict[Node, list[Node]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for a in n.args:
                users[a].append(n)
        results = set(self.kernel.results)
        final = max(levels.values(), default=0)
        final += final % 2
        for n in reversed(self.nodes):
            if kinds[n] in ("leaf", "sum") or n in results:
                continue
            bounds = [
                (
                    levels[c] - {"driver": 0, "row": 1, "sum": 2}[kinds[c]]
                    if kinds[n] == "driver"
                    else levels[c] - {"driver": 1, "row": 0, "sum": 1}[kinds[c]]
                )
                for c in users[n]
            ]
            levels[n] = max(levels[n], min(bounds, default=final))
            assert levels[n] % 2 == (kinds[n] == "row"), (n, kinds[n], levels[n])
        return levels

    def stored(
        self, kinds: Mapping[Node, str], levels: Mapping[Node, int]
    ) -> set[Node]:
        """The row-wise nodes whose whole value a later phase or a result needs."""
        found = {r for r in self.kernel.results if kinds[r] == "row"}
        for n in self.nodes:
            for a in n.args:
                if kinds[a] != "row":
                    continue
                same_chunk = kinds[n] in ("row", "sum") and (
                    levels[n] == levels[a]
                    or (kinds[n] == "sum" and levels[n] == levels[a] + 1)
                )
                if not same_chunk:
                    found.add(a)
        return found

    def floating(self, node: Node) -> bool:
        """Computed as floats (not a mask, not integer ids)."""
        if integral(node):
            return False
        leaves = [n for n in ancestors([node]) if n.op in LEAVES]
        return not all(n.op in ("iinput", "const", "dim") for n in leaves)

    # --- one chunked phase ------------------------------------------------------------

    def chunk(
        self,
        rows: list[Node],
        sums: list[Node],
        stored: set[Node],
        kinds: Mapping[Node, str],
    ) -> Chunked:
        graph = self.model.ops.graph
        on_chunk: dict[Node, Node] = {}

        def operand(n: Node, i: int, aligned: tuple[int, ...]) -> Node:
            a = n.args[i]
            if a in on_chunk:
                return on_chunk[a]
            if i in aligned:
                return graph.node("rows", (a,), a.shape, self.rows)
            return a

        for n in rows:
            aligned = self.aligned(n) or ()
            args = [operand(n, i, aligned) for i in range(len(n.args))]
            on_chunk[n] = graph.node(n.op, args, n.shape, n.attrs)
        made = set(on_chunk.values())
        partials: list[tuple[Node, Node]] = []
        for s in sums:
            everything = tuple(range(len(s.args)))
            args = [operand(s, i, everything) for i in range(len(s.args))]
            if s.op == "matmul":  # u @ v without BLAS: einsum sums its products itself
                part = graph.node("einsum", args, s.shape, Subscripts("i,i->"))
            elif s.op == "mean":
                (a,) = s.args
                total = graph.node("sum", args, s.shape, s.attrs)
                part = self.model.ops.div(total, self.model.ops.count(a, self.axes(s)))
            else:
                part = graph.node(s.op, args, s.shape, s.attrs)
            partials.append((s, part))
        kernel = set(self.nodes)
        nodes = [
            m
            for m in ancestors([*on_chunk.values(), *(p for _, p in partials)])
            if m not in kernel
        ]
        widths = {
            tuple(d for d in m.shape[1:] if d != 1)
            for m in nodes
            if m.op == "rows" or m in made
        }
        return Chunked(
            tuple(nodes),
            tuple((n, on_chunk[n]) for n in rows if n in stored),
            tuple(partials),
            _largest(widths),
            tuple((m, n) for n, m in on_chunk.items()),
        )


def _largest(widths: set[tuple[Dim, ...]]) -> tuple[tuple[Dim, ...], ...]:
    """The row widths no other one contains (dims are >= 1, so n <= n * k)."""

    def contains(big: tuple[Dim, ...], small: tuple[Dim, ...]) -> bool:
        rest = list(big)
        for d in small:
            if d not in rest:
                return False
            rest.remove(d)
        return True

    kept = [w for w in widths if not any(v != w and contains(v, w) for v in widths)]
    return tuple(sorted(kept, key=str))
