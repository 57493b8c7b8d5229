"""Lowering: the derived graph -> the module's functions, each ready to print.

After differentiation (so that derivatives are taken of `a**k` itself, 3*x**2, not of
a product), each function of the generated module becomes a `Kernel`: its
arguments, the nodes it returns, and the names its values take. Lowering decides:

* fast spellings: a**k for integer 3 <= k <= 16 as products (numpy's `x**3` goes
  through pow() and is 50-140x slower than `x*x*x`); the sum (or mean) of the
  squares of a vector, or of a product of two vectors, as a dot product `x @ x`,
  `u @ v`, with no temporary array; a product of three or more einsum factors as
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
from dataclasses import dataclass

from . import factor, naming, regions
from .derive import Derivatives
from .graph import Exponent, Node, Position, ancestors, attr
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
) -> Kernel:
    """The kernel computing `results`; those from `fresh_from` on are arrays the
    caller may keep (see `fresh`), the ones before are returned as numbers."""
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
    current[fresh_from:] = fresh(ops, current[fresh_from:])
    renamed: dict[Node, str] = {}
    for n, v in preferred.items():
        if n in lowered and lowered[n] in factored and factored[lowered[n]] in stable:
            renamed.setdefault(stable[factored[lowered[n]]], v)
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
    if node.op in ("sum", "mean") and node.rank == 0:  # all of a vector's elements
        (a,) = args
        pair: tuple[Node, Node] | None = None
        if a.rank == 1 and (
            a.op == "square" or (a.op == "powc" and a.attrs == Exponent(2.0))
        ):
            pair = (a.args[0], a.args[0])
        elif (
            a.op == "mul"
            and a.rank == 1
            and all(f.shape == a.shape for f in a.args)
            and not all(regions.boolean(f) for f in a.args)  # bool @ bool is a bool
        ):
            pair = (a.args[0], a.args[1])  # sum(u * v) = u @ v, no temporary
        if pair is not None:
            dot = ops.matmul(*pair)
            return dot if node.op == "sum" else ops.div(dot, ops.count(a, None))
    return None


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
