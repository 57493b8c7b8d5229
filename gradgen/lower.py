"""Lowering: the derived graph -> the module's functions, each ready to print.

After differentiation (so that derivatives are taken of `a**k` itself, 3*x**2, not of
a product), each function of the generated module becomes a `Kernel`: its
arguments, the nodes it returns, and the names its values take. Lowering decides:

* fast spellings: a**k for integer 3 <= k <= 16 as products (numpy's `x**3` goes
  through pow() and is 50-140x slower than `x*x*x`); the sum (or mean) of the
  squares of an array, or of a product of two arrays, as a dot product `x @ x`,
  `u @ v` (`np.vdot` above rank 1), with no temporary array; a product of three or more einsum factors as
  nested pairs (`factor.pairwise`);
* element-wise regions as an expert writes them (`regions.py`): factored by sympy
  where that saves array operations, softplus, sigmoid and log-sigmoid in stable
  forms sharing one exp;
* ownership: every returned array is fresh, a copy only where a result would
  otherwise be the caller's array, a Python number, or another result's memory;
* names: the spec's names for its variables, `dL_dw` for gradients (`naming.py`);
* where each dim used by the code is read from (an argument's axis).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from . import factor, naming, regions
from .derive import Derivatives
from .graph import LEAVES, Axis, Exponent, Node, Position, ancestors, attr
from .model import Model
from .ops import Ops
from .simplify import MASKS, base, owned

MAX_PRODUCT_POWER = 16  # x**16 is 4 multiplications


@dataclass(frozen=True)
class Kernel:
    """One generated function's computation: what it takes, computes and returns."""

    name: str
    args: tuple[str, ...]  # the inputs and params it takes, in spec order
    results: tuple[Node, ...]  # lowered; arrays among them are fresh
    names: Mapping[Node, str]  # preferred names: the spec's, then `dL_dw`...
    dims: Mapping[str, tuple[str, int]]  # dim -> (argument, axis) it is read from
    dtype: str = "float64"  # the float type new arrays get (`Spec.dtype`)
    backend: str = "numpy"  # what the code is printed for (`Spec.backend`)
    arrays: tuple[str, ...] = ()  # the arguments that are arrays (rank > 0)


@dataclass(frozen=True)
class OutputKernels:
    name: str
    value: Kernel
    jacobian: Kernel
    params: tuple[str, ...]  # the params the output depends on: its Jacobian's fields


@dataclass(frozen=True)
class Program:
    """The module's computations: the loss's, and each output's."""

    loss: Kernel | None  # the loss alone
    loss_and_gradients: Kernel | None  # the loss, then dL/dparam for every param
    outputs: tuple[OutputKernels, ...]

    def kernels(self) -> list[Kernel]:
        found = [k for k in (self.loss, self.loss_and_gradients) if k is not None]
        for out in self.outputs:
            found += [out.value, out.jacobian]
        return found


def lower(model: Model, derivatives: Derivatives) -> Program:
    ops = model.ops
    every = (*model.inputs, *model.params)
    loss = loss_and_gradients = None
    derivation = derivatives.gradients
    # numpy returns the loss as a Python float; the array API as a 0-d array, fresh
    # like every other result
    numbers = 0 if model.spec.backend == "array-api" else 1
    if derivation is not None:
        loss = _kernel(model, "loss", [derivation.loss], every, {}, fresh_from=numbers)
        # dL_dw for each param's gradient, then dL_dz for the spec's other named
        # variables; a node keeps the first name it gets (the spec's own first).
        names: dict[Node, str] = {}
        for p, g in derivation.gradients.items():
            names.setdefault(g, naming.gradient(p))
        for node, adjoint in derivation.adjoints.items():
            if node in model.names:
                names.setdefault(adjoint, naming.gradient(model.names[node]))
        # two params with the same gradient still get two arrays
        gradients = fresh(ops, list(derivation.gradients.values()))
        loss_and_gradients = _kernel(
            model,
            "loss_and_gradients",
            [derivation.loss, *gradients],
            every,
            names,
            fresh_from=numbers,
            scales_late=True,
        )
    outputs: list[OutputKernels] = []
    for name, node in model.outputs.items():
        args = tuple(model.arguments_of([node]))  # may add an array to read a dim
        jacobians = derivatives.jacobians[name]
        value = _kernel(model, name, fresh(ops, [node]), args, {})
        jacobian = _kernel(
            model,
            naming.jacobian_function(name),
            fresh(ops, list(jacobians.values())),
            args,
            {},
        )
        outputs.append(OutputKernels(name, value, jacobian, tuple(jacobians)))
    return Program(loss, loss_and_gradients, tuple(outputs))


def _kernel(
    model: Model,
    name: str,
    results: list[Node],
    args: tuple[str, ...],
    names: Mapping[Node, str],
    fresh_from: int = 0,
    scales_late: bool = False,
) -> Kernel:
    """The kernel computing `results`; those from `fresh_from` on are arrays the
    caller may keep (see `fresh`), the ones before are returned as numbers.
    `scales_late`: numbers such as 2 / N multiply the results (gradients, the size
    of a param) instead of the batch-sized arrays they are derived from."""
    ops = model.ops
    preferred = {n: v for n, v in model.names.items() if v not in args}
    for n, v in names.items():
        preferred.setdefault(n, v)  # never rename a variable the spec named
    lowered = lower_powers(ops, results)
    current = [lowered[r] for r in results]
    # named variables are computed as they are: they bound the regions around them
    kept = [lowered[n] for n in preferred if n in lowered]
    factored = regions.simplify(ops, current, kept)
    current = [factored[r] for r in current]
    stable = regions.stabilise(ops, current)
    current = [stable[r] for r in current]
    late = {n: n for n in ancestors(current)}
    if scales_late:
        params = {d for p in model.params.values() for d in p.shape}
        batch = {d for i in model.inputs.values() for d in i.shape} - params
        moved = scale_late(ops, current)
        if _cost([moved[r] for r in current], batch) < _cost(current, batch):
            late = moved
    current = [late[r] for r in current]
    current[fresh_from:] = fresh(ops, current[fresh_from:])
    renamed: dict[Node, str] = {}
    for n, v in preferred.items():
        if n in lowered and lowered[n] in factored and factored[lowered[n]] in stable:
            now = late.get(stable[factored[lowered[n]]])
            if now is not None:
                renamed.setdefault(now, v)
    return Kernel(
        name,
        args,
        tuple(current),
        renamed,
        model.dim_sources(list(args)),
        model.spec.dtype,
        model.spec.backend,
        tuple(a for a in args if _node_of(model, a).rank > 0),
    )


#: Ops linear in their first operand (the rest are indices, shapes and masks).
_LINEAR = frozenset(
    {
        "neg",
        "sum",
        "mean",
        "sum_axes",
        "sum_keep",
        "transpose",
        "swap01",
        "swapaxes",
        "permute",
        "reshape",
        "reshaped",
        "index",
        "getitem",
        "take_along",
        "gather",
        "expand_dims",
        "lift",
        "trail",
    }
)
#: Ops linear in each of their two operands.
_BILINEAR = frozenset({"mul", "matmul", "einsum", "tensordot", "outer", "vdot"})
#: Linear ops whose result is (usually) smaller than their operands.
_REDUCING = frozenset(
    {"sum", "mean", "sum_axes", "sum_keep", "matmul", "einsum", "tensordot", "vdot"}
)


def scale_late(ops: Ops, results: list[Node]) -> dict[Node, Node]:
    """Numbers made of literals and sizes (the 2 / N of a mean's gradient) applied
    where they cost least: carried through the linear steps of the backward pass
    (products, matrix products, sums, views) and multiplied into what comes out,
    the param-sized gradients, or into the operand of the first step that is not
    linear. As an expert writes it: `g = e * (z > 0)`, `dL_dw = 2 / N * (X.T @ g)`
    rather than one more pass over the batch for `2 / N * e`. A number that meets
    no sum or matrix product on its way stays where it was.

    Returns old node -> new node for every node the results need."""
    core: dict[Node, Node] = {}  # n == scale[n] * core[n]
    scale: dict[Node, Node | None] = {}
    reduced: dict[Node, bool] = {}  # a sum or a matrix product since the number

    def whole(n: Node) -> Node:
        s = scale[n]
        if s is None:
            return core[n]
        return ops.mul(s, core[n]) if reduced[n] else n

    def times(a: Node | None, b: Node | None) -> Node | None:
        return b if a is None else a if b is None else ops.mul(a, b)

    def rebuilt(n: Node, args: list[Node]) -> Node:
        # as it is, never folded: a fold could undo the stable forms
        return ops.graph.node(n.op, args, n.shape, n.attrs)

    for n in ancestors(results):
        args = n.args
        scale[n], reduced[n] = None, False
        if n.op in LEAVES or (n.rank == 0 and of_sizes(n)):
            core[n] = n
        elif (pair := _scaled(n)) is not None and not integral(core[pair[1]]):
            number, array = pair  # 2 / N * e; never 2 / N * mask (a bool)
            core[n], scale[n] = core[array], times(number, scale[array])
            reduced[n] = reduced[array] and scale[array] is not None
        elif n.op == "div" and of_sizes(args[1]) and not integral(core[args[0]]):
            top = scale[args[0]]
            top = top if top is not None else ops.const(1.0)
            core[n], scale[n] = core[args[0]], ops.div(top, args[1])
            reduced[n] = reduced[args[0]] and scale[args[0]] is not None
        elif n.op == "div" and scale[args[1]] is None:  # linear in the numerator
            core[n] = rebuilt(n, [core[args[0]], args[1]])
            scale[n], reduced[n] = scale[args[0]], reduced[args[0]]
        elif n.op in _BILINEAR and len(args) == 2:
            core[n] = rebuilt(n, [core[a] for a in args])
            scale[n] = times(scale[args[0]], scale[args[1]])
            reduced[n] = n.op in _REDUCING or any(reduced[a] for a in args)
        elif n.op in _LINEAR and all(scale[a] is None for a in args[1:]):
            core[n] = rebuilt(n, [core[args[0]], *args[1:]])
            scale[n] = scale[args[0]]
            reduced[n] = n.op in _REDUCING or reduced[args[0]]
        elif n.op in ("add", "sub") and scale[args[0]] is scale[args[1]]:
            core[n] = rebuilt(n, [core[a] for a in args])
            scale[n] = scale[args[0]]
            reduced[n] = any(reduced[a] for a in args)
        else:
            core[n] = rebuilt(n, [whole(a) for a in args])
        if scale[n] is None:
            reduced[n] = False
    return {n: whole(n) for n in core}


def _scaled(node: Node) -> tuple[Node, Node] | None:
    """(number, array) for a float array times a number made of literals and sizes."""
    if node.op != "mul" or node.rank == 0:
        return None
    for number, array in (node.args, node.args[::-1]):
        if number.rank == 0 and of_sizes(number) and not integral(array):
            return number, array
    return None


def _cost(roots: list[Node], batch: AbstractSet[object]) -> float:
    """regions.cost, with the dims only inputs have (the batch: N, B, T) counted a
    hundred times larger than the dims of params (n, h, k): 2 / N on the [n, h]
    gradient beats 2 / N on the [N, k] residual."""

    def size(node: Node) -> float:
        total = 1.0
        for d in node.shape:
            total *= d if isinstance(d, int) else 10_000.0 if d in batch else 100.0
        return total

    return regions.cost(roots, size)


def of_sizes(node: Node) -> bool:
    """A number made of literals and sizes alone (`2 / (N * k)`): what `scale_late`
    moves, and what the printer writes out wherever it is used instead of naming."""
    return all(
        a.op in ("const", "dim", "float", "mul", "div", "add", "sub", "neg")
        for a in ancestors([node])
    )


def _node_of(model: Model, name: str) -> Node:
    """The leaf of an input or param."""
    return model.inputs[name] if name in model.inputs else model.params[name]


def fresh(ops: Ops, results: list[Node]) -> list[Node]:
    """The results as fresh float arrays that the caller may keep and modify: never
    the caller's own array (or a view of it), nor a Python number, nor an array
    another result also returns (or a view of it); a copy wherever needed."""
    made: list[Node] = []
    taken: set[Node] = set()  # the memory of the results so far
    for i, node in enumerate(results):
        if not owned(node) or base(node) in taken or integral(node):
            node = ops.make("copy", node, attrs=Position(i), shape=node.shape)
        taken.add(base(node))
        made.append(node)
    return made


#: Ops whose result is an integer (or boolean) array when every operand is one.
_KEEPS_INTEGERS = frozenset(
    {
        "add",
        "sub",
        "mul",
        "neg",
        "maximum",
        "minimum",
        "matmul",
        "outer",
        "stack",
        "einsum",
        "sum_axes",
        "sum_keep",
        "tfill",
        "lift",
        "trail",
        "index",
        "expand_dims",
        "transpose",
        "swap01",
        "reshape",
        "reshaped",
        "permute",
        "swapaxes",
        "concat",
        "diag",
        "tensordot",
    }
)


def integral(node: Node) -> bool:
    """True if numpy would compute `node` as integers or booleans: built from
    conditions, whole-number literals and dims by ops that keep integers (a mask
    summed over a broadcast axis is an int64 array). Such a result is copied as
    float."""
    memo: dict[Node, bool] = {}
    for n in ancestors([node]):
        if n.op in MASKS or n.op == "dim":
            memo[n] = True
        elif n.is_const:
            memo[n] = n.value.is_integer()
        elif n.op in ("tfill", "reshape", "reshaped"):  # the second operand is a shape
            memo[n] = memo[n.args[0]]
        elif n.op in _KEEPS_INTEGERS:
            memo[n] = all(memo[a] for a in n.args)
        else:
            memo[n] = False
    return memo[node]


def lower_powers(ops: Ops, roots: list[Node]) -> dict[Node, Node]:
    """The fast spellings listed above, for every node the roots need.

    Returns old node -> new node.
    """
    new: dict[Node, Node] = {}
    for node in ancestors(roots):
        args = tuple(new[a] for a in node.args)
        lowered = _lower(ops, node, args)
        if lowered is not None:
            new[node] = lowered
        elif args == node.args:
            new[node] = node
        else:
            new[node] = ops.make(node.op, *args, attrs=node.attrs, shape=node.shape)
    return new


def _lower(ops: Ops, node: Node, args: tuple[Node, ...]) -> Node | None:
    if node.op == "powc":
        k = attr(node, Exponent).k
        if k.is_integer() and 3 <= k <= MAX_PRODUCT_POWER:
            return _power_by_squaring(ops, args[0], int(k))
    if node.op == "einsum":
        return factor.pairwise(
            ops, ops.make("einsum", *args, attrs=node.attrs, shape=node.shape)
        )
    if node.op in ("sum", "mean") and node.rank == 0:  # all of an array's elements
        return _dot_of_all(ops, node, args[0])
    return None


def _dot_of_all(ops: Ops, node: Node, a: Node) -> Node | None:
    """sum(x**2) or sum(u * v) over every element as one dot product, no temporary:
    `u @ v` for vectors, `np.vdot(u, v)` (BLAS, flat) for higher ranks. A mean
    divides by the count; nested reductions that end in all elements, such as
    mean(mean(x, axis=1)), are the one reduction they amount to."""
    divisor: Node | None = ops.count(a, None) if node.op == "mean" else None
    while a.op in ("sum", "mean") and not attr(a, Axis).keepdims:
        (inner,) = a.args
        if a.op == "mean":
            count = ops.count(inner, attr(a, Axis).axes)
            divisor = count if divisor is None else ops.mul(divisor, count)
        a = inner
    pair: tuple[Node, Node] | None = None
    if a.rank == 0:
        return None
    if a.op == "square" or (a.op == "powc" and a.attrs == Exponent(2.0)):
        pair = (a.args[0], a.args[0])
    elif (
        a.op == "mul"
        and all(f.shape == a.shape for f in a.args)
        and not all(regions.boolean(f) for f in a.args)  # bool @ bool is a bool
    ):
        pair = (a.args[0], a.args[1])  # sum(u * v) = u @ v, no temporary
    if pair is None:
        return None
    if a.rank == 1:
        dot = ops.matmul(*pair)
    else:
        dot = ops.make("vdot", *pair, shape=())
    return dot if divisor is None else ops.div(dot, divisor)


def _power_by_squaring(ops: Ops, a: Node, k: int) -> Node:
    """a**k as products, squaring as it goes: a**8 = ((a*a)**2)**2 is three
    multiplications; the graph shares the squares, so each is computed once."""
    result: Node | None = None
    square = a
    while True:
        if k & 1:
            result = square if result is None else ops.mul(square, result)
        k >>= 1
        if not k:
            assert result is not None
            return result
        square = ops.mul(square, square)
