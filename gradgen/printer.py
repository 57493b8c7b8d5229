"""Graph -> numpy source text, one function body at a time.

Dispatches on each node's op through its spelling in the rule table and
parenthesises by precedence, so the output reads like hand-written numpy. A node
gets its own line (and a name) when it is used more than once, when the spec named
it, or when it is long; otherwise it is written inline where it is used. Only
the nodes the results need are printed: there is no dead code. An op without a
spelling is refused loudly; there is no silent fallback.

For the array-API backend (`backend: array-api`) each op takes its array-API
spelling from the rule table (`Spelling.xp`), a function's code starts with `xp =
array_namespace(...)` of its arguments where it calls the namespace, dims are read
as `X.shape[0]`, and a condition used as a number is cast to the float type first
(the standard does not promote booleans).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

from . import buffers, naming
from .graph import LEAVES, Index, Node, ancestors
from .lower import Program, of_sizes
from .rules import ATOM, HELPERS_NEED, UNARY, Spelling, number
from .rules import spelling as spelling_of
from .simplify import MASKS
from .threads import Chunked, Schedule

#: What the spellings' {float}, {dtype} and {scalar} fields print, per dtype: the
#: float64 default prints as before (`dtype=float`, no `dtype=` on np.zeros); float32
#: names its type wherever numpy would otherwise make a float64 array or scalar.
DTYPE_FIELDS = {
    "float64": {"float": "float", "dtype": "", "scalar": "np.float64"},
    "float32": {
        "float": "np.float32",
        "dtype": ", dtype=np.float32",
        "scalar": "np.float32",
    },
}
#: The same fields for the array-API backend: the dtype always named, a scalar a
#: Python float (the standard's Python scalars take the array's dtype).
XP_DTYPE_FIELDS = {
    dtype: {"float": f"xp.{dtype}", "dtype": f", dtype=xp.{dtype}", "scalar": "float"}
    for dtype in DTYPE_FIELDS
}
#: Ops that take a condition as a condition; every other op given one (`g * (z >
#: 0)`) gets it as a number, which the array-API backend casts explicitly.
TAKES_CONDITIONS = frozenset({"where", "select", "and_", "or_", "not_", "as_float"})
INLINE_LIMIT = 60  # characters: longer subexpressions get a line of their own


@dataclass(frozen=True)
class Body:
    lines: tuple[str, ...]  # statements, in evaluation order
    results: tuple[str, ...]  # one expression per requested result
    helpers: frozenset[str]  # module-level helpers the code calls (e.g. "sigmoid")
    named: tuple[tuple[Node, str], ...] = ()  # the nodes given a line, by name
    # threaded: the driver's lines with the workers between them (`lines` is
    # their text, for `--dump lowered`)
    steps: tuple[str | Worker, ...] = ()


@dataclass(frozen=True)
class Worker:
    """A chunked phase: a function of the bounds of a chunk of rows."""

    name: str
    bounds: str  # its parameters, "lo, hi"
    lines: tuple[str, ...]
    returns: str  # a tuple of the chunk's partial sums


def print_program(program: Program) -> dict[str, Body]:
    """Every function of the program printed, by name."""
    return {
        k.name: print_body(
            list(k.results),
            k.names,
            list(k.args),
            k.dims,
            k.dtype,
            k.backend,
            k.arrays,
        )
        for k in program.kernels()
    }


def print_body(
    results: list[Node],
    names: Mapping[Node, str],
    args: list[str],
    dim_sources: Mapping[str, tuple[str, int]],
    dtype: str = "float64",
    backend: str = "numpy",
    arrays: Sequence[str] = (),
) -> Body:
    """Statements computing `results`.

    `names` gives preferred names (spec names, `dL_dw`...), `args` the function's
    parameters, `dim_sources` where each dim is read from: name -> (array, axis).
    For the array-API backend, `arrays` are the arguments that are arrays (a device
    is read from the first).
    """
    xp = backend == "array-api"
    needed = ancestors(results)
    uses: Counter[Node] = Counter()
    for n in needed:
        for a in n.args:
            uses[a] += 1
    for r in results:
        uses[r] += 1

    temps = naming.Temporaries(
        [*args, *names.values(), *dim_sources, *(["xp"] if xp else [])]
    )
    text: dict[Node, tuple[str, int]] = {}
    dims = {n.name for n in needed if n.op == "dim"}
    lines = _dim_lines(dims, args, dim_sources, xp)
    helpers: set[str] = set()

    named: set[str] = set()
    lined: list[tuple[Node, str]] = []
    fresh: list[str] = []  # the temporaries' names
    prefix = len(lines)
    device = f", device=device({(list(arrays) or args)[0]})" if args else ""
    for n in needed:
        code, prec = _spell_noting(n, text, dtype, helpers, device if xp else None)
        if n.op in LEAVES:
            text[n] = (code, prec)
            continue
        preferred = names.get(n)
        if preferred is not None and preferred in named:
            preferred = None  # one node, two spec names: the first one wins
        shared = uses[n] > 1 and not of_sizes(n)  # `2 / (N * k)`, written out
        if preferred is not None or shared or len(code) > INLINE_LIMIT:
            name = preferred if preferred is not None else temps.fresh()
            if preferred is None:
                fresh.append(name)
            named.add(name)
            lined.append((n, name))
            # in place needs `out=`, which the array API standard does not have
            in_place = (
                None
                if xp
                else buffers.in_place(n, name, text, uses, [m for m, _ in lined], spell)
            )
            lines += in_place if in_place is not None else [f"{name} = {code}"]
            text[n] = (name, ATOM)
        else:
            text[n] = (code, prec)
    returned = tuple(text[r][0] for r in results)
    if not xp:
        again = _reusing(results, lined, names, text, uses, dtype, fresh)
        if again is not None:
            lines = lines[:prefix] + again[0]
            returned, lined = again[1], again[2]
    namespace = xp and any("xp." in t or "device(" in t for t in (*lines, *returned))
    if namespace:
        # the namespace of the arguments (Python numbers among them are skipped)
        lines.insert(0, f"xp = array_namespace({', '.join(args)})")
    if xp and args and not arrays and (namespace or helpers):
        # every argument is a scalar and may be a Python number, which neither
        # array_namespace nor a helper takes: numbers become 0-d arrays first
        lines.insert(0, f"{_unpack(args)}_arrays({', '.join(args)}, dtype={dtype!r})")
        helpers.add("arrays")
    return Body(
        tuple(lines),
        returned,
        frozenset(helpers),
        tuple(lined),
    )


def _reusing(
    results: list[Node],
    lined: list[tuple[Node, str]],
    preferred: Mapping[Node, str],
    text: Mapping[Node, tuple[str, int]],
    uses: Counter[Node],
    dtype: str,
    fresh: list[str],
    known: Mapping[Node, tuple[str, int]] | None = None,
    destinations: Mapping[Node, tuple[str, str]] | None = None,
    scratch: (
        tuple[Callable[[Node], str | None], Callable[[Node], str], str] | None
    ) = None,
    size: Callable[[Node], object] | None = None,
) -> tuple[list[str], tuple[str, ...], list[tuple[Node, str]], set[Node]] | None:
    """The statements again, with dead temporaries' arrays reused
    (`buffers.Reuse`): the lines after the dims', the results, the named values;
    the destinations used; None where no array is reused. `known`: values written as given (default: the
    leaves in `text`); `destinations`: results to compute into a view of an array
    of the caller's, {value: (name, view)}, the view's line printed where used;
    `scratch`: a new scratch array's name for a value where no dead one fits (or
    None), and the text of a value's shape, for the line that takes them all
    (`t1, t2 = _scratch((t0,), (t0, k))`), after the line that binds the chunk's
    rows (`t0 = hi - lo`)."""
    if known is None:
        known = {n: t for n, t in text.items() if n.op in LEAVES}
    reuse = buffers.Reuse(
        results,
        lined,
        preferred,
        known,
        lambda n, t: spell(n, t, dtype),
        destinations,
        None if scratch is None else scratch[0],
        size,
    )
    lines: list[str] = []
    named: list[tuple[Node, str]] = []
    for i, (n, name) in enumerate(lined):
        lines += reuse.statement(i, n, name)
        if n in reuse.text:  # computed into a buffer, under its name or `name`
            if reuse.text[n][0] == name:
                named.append((n, name))
            continue
        texts = reuse.texts(n)
        done = [*(m for m, _ in lined[:i]), *reuse.held]  # never written over here
        steps = buffers.in_place(n, name, texts, uses, done, reuse.spell)
        lines += steps if steps is not None else [f"{name} = {texts[n][0]}"]
        reuse.text[n] = (name, ATOM)
        reuse.hold(n, name)
        named.append((n, name))
    lines += reuse.statement(len(lined), None)
    if not reuse.regions:
        return None
    if reuse.slots and scratch is not None:
        names = [name for name, _ in reuse.slots]
        shapes = ", ".join(scratch[1](n) for _, n in reuse.slots)
        fill = DTYPE_FIELDS[dtype]["dtype"]
        lines[:0] = [scratch[2], f"{_unpack(names)}_scratch({shapes}{fill})"]
    returned = [reuse.code(r)[0] for r in results]
    # the temporaries numbered afresh in order of appearance: some went unused
    fresh = [*fresh, *(name for name, _ in reuse.slots)]
    rename = _renumber(fresh, [*lines, *returned])
    lines = [rename(line) for line in lines]
    return (
        lines,
        tuple(rename(r) for r in returned),
        [(n, rename(name)) for n, name in named],
        reuse.written,
    )


def _renumber(names: Sequence[str], texts: Iterable[str]) -> Callable[[str], str]:
    """A renaming of the temporaries `names` (in the order they were made) that
    numbers them by their first appearance in `texts`: t0, t1... without gaps where
    some went unused."""
    if not names:
        return lambda code: code
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    mapping: dict[str, str] = {}
    for code in texts:
        for found in pattern.findall(code):
            if found not in mapping:
                mapping[found] = names[len(mapping)]
    return lambda code: pattern.sub(lambda m: mapping.get(m[1], m[1]), code)


def _spell_noting(
    node: Node,
    text: Mapping[Node, tuple[str, int]],
    dtype: str,
    helpers: set[str],
    device: str | None = None,
) -> tuple[str, int]:
    """`spell`, adding the module-level helpers the spelling calls to `helpers`."""
    helper = (spelling_of(node.op) if device is None else xp_spelling(node)).helper
    if helper:
        helpers.add(helper)
        helpers.update(HELPERS_NEED.get(helper, ()))
    return spell(node, text, dtype, device)


def _dim_lines(
    dims: set[str],
    args: list[str],
    dim_sources: Mapping[str, tuple[str, int]],
    xp: bool = False,
) -> list[str]:
    """`N = np.shape(X)[0]` (array API: `X.shape[0]`) for each dim, in the order of
    the arguments' axes."""
    position = {a: i for i, a in enumerate(args)}
    ordered = sorted(
        dims, key=lambda d: (position[dim_sources[d][0]], dim_sources[d][1])
    )
    lines = []
    for d in ordered:
        array, axis = dim_sources[d]
        lines.append(
            f"{d} = {array}.shape[{axis}]" if xp else f"{d} = np.shape({array})[{axis}]"
        )
    return lines


def print_threaded(schedule: Schedule) -> Body:
    """The kernel as its schedule runs it (`threads.py`): the driver's statements,
    and each chunked phase as a worker `_rows_<i>(lo, hi)` that computes rows lo:hi,
    writes what later phases need into arrays the driver allocated, and returns its
    partial sums, which `_chunked` adds up in chunk order."""
    k = schedule.kernel
    dtype = k.dtype
    results = list(k.results)
    phases = schedule.phases
    printed = ancestors([*results, *(n for p in phases for n in p.nodes)])
    # where each of the kernel's nodes is computed, to name what crosses phases
    home: dict[Node, int] = {}
    for i, phase in enumerate(phases):
        if isinstance(phase, Chunked):
            home.update({n: i for _, n in phase.origin})
            home.update({n: i for n, _ in phase.partials})
        else:
            home.update({n: i for n in phase.nodes})
    uses: Counter[Node] = Counter(results)
    crossing: set[Node] = set()
    for n in ancestors(results):
        for a in n.args:
            uses[a] += 1
            if a in home and home[a] != home.get(n):
                crossing.add(a)
    lo, hi = schedule.bounds.split(", ")
    temps = naming.Temporaries([*k.args, *k.names.values(), *k.dims, lo, hi])
    first = set(temps.taken)
    dims = {n.name for n in printed if n.op == "dim"}
    dims |= {d for n in schedule.stored for d in n.shape if isinstance(d, str)}
    for phase in phases:
        if isinstance(phase, Chunked):
            dims |= {d for w in phase.widths for d in w if isinstance(d, str)}
    text: dict[Node, tuple[str, int]] = {}
    steps: list[str | Worker] = list(_dim_lines(dims, list(k.args), k.dims))
    helpers: set[str] = set()
    named: list[tuple[Node, str]] = []
    taken: set[str] = set()

    def name_for(node: Node) -> str:
        preferred = k.names.get(node)
        if preferred is not None and preferred not in taken:
            taken.add(preferred)
            return preferred
        return temps.fresh()

    def emit(
        nodes: list[Node],
        local: dict[Node, tuple[str, int]],
        counts: Mapping[Node, int],
        keep: set[Node],
        names: Mapping[Node, Node],
        record: list[tuple[Node, str, bool]] | None = None,
    ) -> list[str]:
        """Statements for `nodes` (those not in `local` yet); `keep` get a line,
        `names` maps a node to the kernel's node whose name it may take; `record`
        gets each line's value, name, and whether the name is a temporary's."""
        lines = []
        for n in nodes:
            if n in local:
                continue
            code, prec = _spell_noting(n, local, dtype, helpers)
            if n.op in LEAVES:
                local[n] = (code, prec)
                continue
            origin = names.get(n)
            wanted = origin is not None and origin in k.names
            if wanted or n in keep or counts[n] > 1 or len(code) > INLINE_LIMIT:
                name = name_for(origin) if origin is not None else temps.fresh()
                if origin is not None:
                    named.append((origin, name))
                if record is not None:
                    record.append((n, name, not wanted))
                lines.append(f"{name} = {code}")
                local[n] = (name, ATOM)
            else:
                local[n] = (code, prec)
        return lines

    chunks = 0
    for phase in phases:
        if not isinstance(phase, Chunked):
            needed = _until(phase.nodes, text)
            steps += emit(needed, text, uses, crossing, {n: n for n in needed})
            continue
        origin = dict(phase.origin)
        stored = dict(phase.stores)
        arrays = {n: name_for(n) for n in stored}
        for n, array in arrays.items():
            shape = ", ".join(str(d) for d in n.shape) + ("," if n.rank == 1 else "")
            fill = DTYPE_FIELDS[dtype]["dtype"]
            steps.append(f"{array} = np.empty(({shape}){fill})")
        local = dict(text)
        roots = [*stored.values(), *(p for _, p in phase.partials)]
        needed = _until(roots, local)
        counts: Counter[Node] = Counter(roots)
        for m in needed:
            counts.update(m.args)
        names = {m: n for m, n in origin.items() if n not in stored}
        known = dict(local)

        # the values with the chunk's rows: the row-wise nodes rebuilt on the chunk
        # (a partial sum may have the batch dim in its shape too: `mean(K, axis=0)`
        # of a K [N, N] has N entries, not hi - lo)
        rowed = {m for m, _ in phase.origin} | {m for m in needed if m.op == "rows"}

        def slot(value: Node, rowed: set[Node] = rowed) -> str | None:
            """A scratch array for a value with the chunk's rows, if any."""
            rows = [i for i, d in enumerate(value.shape) if d == schedule.batch]
            return temps.fresh() if rows == [0] and value in rowed else None

        span = temps.fresh()  # `t0 = hi - lo`, the chunk's rows, where scratch is used

        def shape_of(value: Node, span: str = span) -> str:
            dims = [span, *(str(d) for d in value.shape[1:])]
            return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"

        record: list[tuple[Node, str, bool]] = []
        lines = emit(needed, local, counts, set(), names, record)
        texts = [local[r][0] for r in roots]
        # the stored values computed straight into their rows of the full array
        views = {
            m: (temps.fresh(), f"{arrays[n]}[{lo}:{hi}]")
            for n, m in phase.stores
            if m not in known and m.rank == n.rank and m.shape[1:] == n.shape[1:]
        }
        again = _reusing(
            roots,
            [(n, name) for n, name, _ in record],
            {n: name for n, name, temporary in record if not temporary},
            known,
            counts,
            dtype,
            [
                *(name for _, name, temporary in record if temporary),
                *(name for name, _ in views.values()),
                span,
            ],
            known,
            {m: view for m, view in views.items()},
            (slot, shape_of, f"{span} = {hi} - {lo}"),
            partial(_size_in_worker, rowed=rowed),
        )
        written: set[Node] = set()
        if again is not None:
            lines, texts, written = again[0], list(again[1]), again[3]
        done = dict(zip(roots, texts, strict=True))
        for n, m in phase.stores:
            if m not in written:
                lines.append(f"{arrays[n]}[{lo}:{hi}] = {done[m]}")
        parts = [done[p] for _, p in phase.partials]
        worker = f"_rows_{chunks}"
        chunks += 1
        steps.append(Worker(worker, schedule.bounds, tuple(lines), _tuple(parts)))
        width = [" * ".join(str(d) for d in w) or "1" for w in phase.widths] or ["1"]
        call = (
            f"_chunked({worker}, {schedule.batch}, "
            + (width[0] if len(width) == 1 else f"max({', '.join(width)})")
            + ")"
        )
        totals = [name_for(s) for s, _ in phase.partials]
        for (s, _), total in zip(phase.partials, totals, strict=True):
            text[s] = (total, ATOM)
            named.append((s, total))
        steps.append(f"{_unpack(totals)}{call}")
        for n, array in arrays.items():
            text[n] = (array, ATOM)
            named.append((n, array))
    if chunks:
        helpers.add("chunked")
    # the temporaries numbered afresh (the workers' reuse of arrays left gaps)
    made = sorted(temps.taken - first, key=lambda name: int(name[1:]))
    printed_texts: list[str] = []
    for step in steps:
        if isinstance(step, Worker):
            printed_texts += [*step.lines, step.returns]
        else:
            printed_texts.append(step)
    rename = _renumber(made, [*printed_texts, *(text[r][0] for r in results)])
    steps = [
        (
            replace(
                step, lines=tuple(map(rename, step.lines)), returns=rename(step.returns)
            )
            if isinstance(step, Worker)
            else rename(step)
        )
        for step in steps
    ]
    text.update({r: (rename(text[r][0]), text[r][1]) for r in results})
    named = [(n, rename(name)) for n, name in named]
    flat: list[str] = []  # for `--dump lowered`; the template lays out `steps`
    for step in steps:
        if isinstance(step, Worker):
            flat.append(f"def {step.name}({step.bounds}):")
            flat += [f"    {line}" for line in step.lines]
            flat.append(f"    return {step.returns}")
        else:
            flat.append(step)
    return Body(
        tuple(flat),
        tuple(text[r][0] for r in results),
        frozenset(helpers),
        tuple(named),
        tuple(steps),
    )


def _size_in_worker(value: Node, rowed: set[Node]) -> object:
    """What makes two values' arrays interchangeable in a worker: the shape, and
    whether its batch dim is the chunk's rows."""
    return (value.shape, value in rowed)


def _until(roots: Iterable[Node], known: Mapping[Node, object]) -> list[Node]:
    """What the roots need that is not `known` yet, in topological order."""
    seen: dict[int, Node] = {}
    stack = [r for r in roots if r not in known]
    while stack:
        n = stack.pop()
        if n.id not in seen:
            seen[n.id] = n
            stack.extend(a for a in n.args if a not in known)
    return [seen[i] for i in sorted(seen)]


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _unpack(names: list[str]) -> str:
    if not names:
        return ""
    return f"({names[0]},) = " if len(names) == 1 else f"{', '.join(names)} = "


def xp_spelling(node: Node) -> Spelling:
    """The array-API spelling of `node` (`Spelling.xp`, else the numpy one with
    `np.` read as `xp.`), with the numpy spelling's fields unless it has its own."""
    spelling = spelling_of(node.op)
    given = spelling.xp
    if given is None:
        return replace(spelling, template=spelling.template.replace("np.", "xp."))
    chosen = given if isinstance(given, Spelling) else given(node)
    return chosen if chosen.fields else replace(chosen, fields=spelling.fields)


def spell(
    node: Node,
    text: Mapping[Node, tuple[str, int]],
    dtype: str = "float64",
    device: str | None = None,
) -> tuple[str, int]:
    """`node` as code over its operands' `text`: numpy, or the array API standard
    when a `device` (its `, device=...` argument, possibly empty) is given."""
    xp = device is not None
    spelling = xp_spelling(node) if xp else spelling_of(node.op)
    if spelling.scalar is not None and node.args and node.args[0].rank == 0:
        spelling = spelling.scalar  # `~True` is -2; `0.5[None]` is refused
        if xp:
            spelling = replace(
                spelling, template=spelling.template.replace("np.", "xp.")
            )
    fields = spelling.fields(node.attrs) if spelling.fields else {}
    fields.update(XP_DTYPE_FIELDS[dtype] if xp else DTYPE_FIELDS[dtype])
    fields["device"] = device or ""
    if node.op == "const":
        value = node.value
        return number(value), (UNARY if value < 0 else ATOM)
    operands: list[str] = []
    for i, arg in enumerate(node.args):
        code, prec = text[arg]
        if xp and arg.op in MASKS and node.op not in TAKES_CONDITIONS:
            code, prec = f"xp.astype({code}, {fields['float']})", ATOM
        need = spelling.operand_prec[i] if i < len(spelling.operand_prec) else 0
        operands.append(f"({code})" if prec < need else code)
    if node.op == "add" and operands[1].startswith("-"):  # x - 1 / B * y, not x + -1...
        return f"{operands[0]} - {operands[1][1:]}", spelling.prec
    if "{args}" in spelling.template:
        fields["args"] = ", ".join(operands)
    if operands and "{last}" in spelling.template:
        fields["last"] = operands[-1]
    if isinstance(node.attrs, Index):  # x[t, :, None]: items over the operands
        items = [item.format(*operands) for item in node.attrs.items]
        fields["index"] = ", ".join(items)
        fields["slices"] = "(" + "".join(f"{_slice(i)}, " for i in items) + ")"
    return spelling.template.format(*operands, **fields), spelling.prec


def _slice(item: str) -> str:
    """An index item as an expression: `1:` as `slice(1, None)`, others as they are."""
    if ":" not in item:
        return item
    return (
        "slice(" + ", ".join(part.strip() or "None" for part in item.split(":")) + ")"
    )
