"""Simplification, applied to every node as it is built (a peephole rewriter).

Together with the hash-consing in `graph.Graph` (common subexpressions become one
node) and the printer emitting only what the results need (no dead code), this keeps
the generated code as lean as hand-written numpy:

* constant folding (a function of a literal too: `sigmoid(2)` is a number) and
  the identities x*1, x+0, x/1, -(-x), -(a - b) = b - a, with signs pulled out of
  products;
* small integer powers as products: numpy's `x**3` goes through pow() and is
  50-140x slower than `x*x*x`; `x**2` has a fast path and stays;
* numerically stable forms: log(1 + exp(x)) = softplus(x),
  log(sigmoid(x)) = -softplus(-x) and log(sum(exp(x))) = logsumexp(x), finite
  wherever the true value is finite.

A rewrite never changes a node's shape: an identity is applied only when the
surviving operand already has the result's shape.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import factor, scalar
from .graph import (
    LEAVES,
    Attrs,
    Axes,
    Axis,
    Count,
    Exponent,
    Node,
    Shape,
    Subscripts,
    ancestors,
    attr,
)
from .rules import RULES

if TYPE_CHECKING:
    from .ops import Ops

#: Ops whose value is a boolean array (a condition).
MASKS = frozenset({"gt", "ge", "lt", "le", "eq", "ne", "and_", "or_", "not_"})

_ARITHMETIC: dict[str, Callable[..., float]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "neg": operator.neg,
}


def _is(node: Node, value: float) -> bool:
    return node.is_const and node.value == value


def fold(
    ops: Ops, op: str, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """A simpler node equal to op(args), or None to build the node as it is."""
    if op in _ARITHMETIC and args and all(a.is_const for a in args):
        try:
            value = _ARITHMETIC[op](*(a.value for a in args))
        except ZeroDivisionError:
            return None
        if math.isfinite(value):
            return ops.const(value)
    rule = RULES.get(op)
    if rule is not None and rule.elementwise is not None and args[0].is_const:
        # a function of a literal is a literal: np.exp(-2) would be an np.float64,
        # which makes a float32 module's arrays float64
        found = scalar.value_at(rule.elementwise[0], args[0].value)
        if found is not None:
            return ops.const(found)
    rewrite = _REWRITES.get(op)
    return rewrite(ops, args, attrs, shape) if rewrite else None


def _add(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    a, b = args
    if _is(a, 0) and b.shape == shape:
        return b
    if _is(b, 0) and a.shape == shape:
        return a
    if b.op == "neg":
        return ops.sub(a, b.args[0])
    if a.op == "neg":
        return ops.sub(b, a.args[0])
    return None


def _sub(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    a, b = args
    if _is(b, 0) and a.shape == shape:
        return a
    if _is(a, 0) and b.shape == shape:
        return ops.neg(b)
    if b.op == "neg":
        return ops.add(a, b.args[0])
    return None


def _mul(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    a, b = args
    for one, other in ((a, b), (b, a)):
        if (_is(one, 1) or _is(one, -1)) and other.shape == shape:
            if other.op in MASKS:  # a bare mask would be a boolean array
                other = ops.make("as_float", other, shape=shape)
            return other if _is(one, 1) else ops.neg(other)
    for ratio, other in ((a, b), (b, a)):
        if ratio.op == "div" and _is(ratio.args[0], 1):
            return ops.div(other, ratio.args[1])  # (1/d) * x = x / d
    if a.rank == 0 and b.op == "mul" and b.args[0].rank == 0 and b.args[1].rank > 0:
        return ops.mul(ops.mul(a, b.args[0]), b.args[1])  # s * (c * x) = (s * c) * x
    if a.op == "neg":
        return ops.neg(ops.mul(a.args[0], b))
    if b.op == "neg":
        return ops.neg(ops.mul(a, b.args[0]))
    if b.is_const and not a.is_const:
        return ops.mul(b, a)  # constants first: 2 * x, as people write it
    for tangent, other in ((a, b), (b, a)):
        if other.op == "trail":  # a factored Jacobian times an element-wise factor
            param_rank = attr(other, Count).count
            made = factor.times_elementwise(
                ops, tangent, other.args[0], shape, param_rank
            )
            if made is not None:
                return made
    return None


def _div(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    a, b = args
    if _is(b, 1) and a.shape == shape:
        return a
    if b.op == "add":
        for one, term in (b.args, b.args[::-1]):
            if _is(one, 1) and term.op == "exp":
                # a / (1 + e^u) = a sigmoid(-u): finite (and so is its derivative)
                # where e^u overflows
                return ops.mul(a, ops.call("sigmoid", ops.neg(term.args[0])))
    if a.op == "neg":
        return ops.neg(ops.div(a.args[0], b))
    if b.rank == 0 and a.op == "mul" and a.args[0].rank == 0 and a.args[1].rank > 0:
        # (c * x) / d = (c / d) * x: the scalars combine first, one pass over x
        return ops.mul(ops.div(a.args[0], b), a.args[1])
    return None


def _neg(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    (a,) = args
    if a.op == "neg":
        return a.args[0]
    if a.op == "sub":
        return ops.sub(a.args[1], a.args[0])
    return None


def _powc(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    (a,) = args
    assert isinstance(attrs, Exponent)
    k = attrs.k
    if k == 1:
        return a
    if k == 0:  # a**0 = 1, with a's shape; its derivative is 0 (not 0 * a**-1)
        return ops.const(1.0) if a.rank == 0 else ops.fill(ops.const(1.0), a)
    if k == 0.5:
        return ops.call("sqrt", a)
    if k.is_integer() and -16 <= k <= -1:  # 1 / a**k, a product when lowered
        return ops.div(ops.const(1.0), ops.powc(a, -k))
    return None


def _log(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    (a,) = args
    if a.op == "exp":
        return a.args[0]  # log(exp(x)) = x
    if a.op == "sum" and a.args[0].op == "exp":
        # log(sum(exp(x))) = logsumexp(x): finite where exp(x) overflows
        return ops.reduce("logsumexp", a.args[0].args[0], attr(a, Axis))
    if a.op == "softmax":  # log(softmax(x)) = log_softmax(x): finite where y -> 0
        return ops.make("log_softmax", a.args[0], attrs=a.attrs)
    if a.op == "sigmoid":
        # log(sigmoid(x)) = -log(1 + e^-x) = -softplus(-x)
        return ops.neg(ops.call("softplus", ops.neg(a.args[0])))
    if a.op == "add" and _is(a.args[0], 1) and a.args[1].op == "exp":
        return ops.call("softplus", a.args[1].args[0])  # log(1 + e^x)
    if a.op == "add" and _is(a.args[1], 1) and a.args[0].op == "exp":
        return ops.call("softplus", a.args[0].args[0])  # log(e^x + 1)
    if a.op == "sub" and _is(a.args[0], 1) and a.args[1].op == "sigmoid":
        # log(1 - sigmoid(x)) = log(sigmoid(-x)) = -softplus(x)
        return ops.neg(ops.call("softplus", a.args[1].args[0]))
    return None


#: Element-wise ops defined only on part of the real line, and the operand that
#: must stay inside it. 1 is inside every one of them.
RESTRICTED = {"log": 0, "sqrt": 0, "log1p": 0, "div": 1, "pow": 0}
_ELEMENTWISE = frozenset(
    {"add", "sub", "mul", "div", "neg", "powc", "pow", "maximum", "minimum", "clip"}
)


def guard(ops: Ops, branch: Node, cond: Node) -> Node:
    """`branch` of `where`, with the arguments of its domain-restricted element-wise
    ops (log, sqrt, a divisor...) replaced by 1 where `cond` is false: the values
    where `cond` holds are unchanged, and the untaken positions can no longer
    produce a NaN or inf whose gradient (0 * inf) would leak through the mask. This
    is the double `where` experts write: `where(x > 0, sqrt(where(x > 0, x, 1)), 0)`.
    Only positions that line up with `cond` are guarded: the element-wise region
    below `branch`, where `cond` broadcasts into the argument's own shape."""
    region: dict[Node, None] = {}
    stack = [branch]
    while stack:
        n = stack.pop()
        if n in region:
            continue
        region[n] = None
        if n.op in _ELEMENTWISE or (n.op in RULES and RULES[n.op].elementwise):
            stack.extend(n.args)
    new: dict[Node, Node] = {}
    for n in sorted(region, key=lambda n: n.id):
        args = tuple(new.get(a, a) for a in n.args)
        restricted = RESTRICTED.get(n.op)
        if n.op == "powc":
            k = attr(n, Exponent).k
            restricted = None if k.is_integer() and k >= 0 else 0
        if restricted is not None:
            u = args[restricted]
            if u.rank >= cond.rank and u.shape[u.rank - cond.rank :] == cond.shape:
                safe = ops.make("where", cond, u, ops.const(1.0))
                args = (*args[:restricted], safe, *args[restricted + 1 :])
        if args != n.args:
            new[n] = ops.make(n.op, *args, attrs=n.attrs, shape=n.shape)
    return new.get(branch, branch)


def _reshape_noop(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """trail/lift by 0 axes, or of a scalar (a scalar broadcasts anyway)."""
    (a,) = args
    return a if attrs == Count(0) or a.rank == 0 else None


#: Ops whose numpy result can be a view of their first operand's memory.
VIEWS = frozenset(
    {
        "transpose",
        "swap01",
        "index",
        "expand_dims",
        "tfill",
        "lift",
        "trail",
        "reshape",
        "reshaped",
        "permute",
        "swapaxes",
        "diag",
        "getitem",
    }
)


def base(node: Node) -> Node:
    """The node whose memory the value lives in: itself, or what it is a view of."""
    while node.op in VIEWS or (node.op == "einsum" and len(node.args) == 1):
        node = node.args[0]
    return node


def borrowed(node: Node) -> bool:
    """True if the value is (a view of) an array the caller passed in."""
    return base(node).op in ("input", "iinput", "param")


def constant(node: Node) -> bool:
    """True if the value is built from literals and dims only."""
    return not any(n.op in ("input", "iinput", "param") for n in ancestors([node]))


#: Ops that build a new float array, whatever their operands (a 0-d one too).
BUILDERS = frozenset(
    {"fill", "tfull", "zeros", "ones", "zeros_like", "copy", "as_float"}
)


def owned(node: Node) -> bool:
    """True if the value is a writable float array of its own: not (a view of) a
    leaf (the caller's array, a literal, a dim), not a broadcast view (read-only,
    every element one memory cell), and not a number computed from literals and
    dims alone, which the printed code holds as a Python number."""
    view = node
    while view is not base(view):
        if view.op == "tfill":
            return False  # np.broadcast_to: a read-only view
        view = view.args[0]
    if view.op in LEAVES or view.op == "tfill":
        return False
    return node.rank > 0 or node.op in BUILDERS or not constant(node)


def _exact(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """A fresh result array (`fill`, `tfull`) of a shape the value already has: the
    value itself, if it is a fresh float array already (see `owned`)."""
    a = args[0]
    if a.shape != shape or not owned(a):
        return None
    return ops.make("as_float", a, shape=shape) if a.op in MASKS else a


def _view(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """A broadcast view (`tfill`) of a shape the value already has: the value."""
    return args[0] if args[0].shape == shape else None


def _transpose(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    (a,) = args
    if a.rank < 2:
        return a  # numpy's .T of a vector or scalar is itself
    if a.op == "transpose":
        return a.args[0]  # (A^T)^T = A
    if a.op == "outer":
        return ops.outer(a.args[1], a.args[0])  # (a b^T)^T = b a^T
    return None


def _sum_axes(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    assert isinstance(attrs, Axes)
    if attrs.axes == ():
        return args[0]
    a = args[0]
    if a.op == "einsum":  # a factored Jacobian: the axis leaves the output
        return factor.drop(ops, a, attrs.axes, shape)
    if a.op == "mul" and "einsum" in (a.args[0].op, a.args[1].op):
        scale, product = a.args if a.args[1].op == "einsum" else a.args[::-1]
        if scale.rank == 0:  # sum(s * T) = s * sum(T) for a scalar s
            return ops.mul(scale, ops.sum_axes(product, attrs.axes))
    return None


def _einsum(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """A matmul tangent of a factored Jacobian joins its product."""
    assert isinstance(attrs, Subscripts)
    if "..." not in attrs.spec or not any(a.op == "einsum" for a in args):
        return None
    return factor.contract(ops, attrs.spec, args, shape)


def _select(
    ops: Ops, args: tuple[Node, ...], attrs: Attrs | None, shape: Shape
) -> Node | None:
    """np.where(c, k, 0) of two Python numbers (literals, dims) is k * c as a float
    array: np.where would make an int64 or float64 array of them (and so upcast a
    float32 module)."""
    c, a, b = args
    numbers = a.rank == b.rank == 0 and constant(a) and constant(b)
    if not numbers or c.shape != shape or not (_is(a, 0) or _is(b, 0)):
        return None
    if _is(b, 0):
        return ops.mul(a, ops.make("as_float", c, shape=shape))
    if _is(a, 0):
        flipped = ops.make("not_", c, shape=c.shape)
        return ops.mul(b, ops.make("as_float", flipped, shape=shape))
    return None


_REWRITES: dict[
    str, Callable[[Ops, tuple[Node, ...], Attrs | None, Shape], Node | None]
] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "neg": _neg,
    "powc": _powc,
    "log": _log,
    "trail": _reshape_noop,
    "lift": _reshape_noop,
    "fill": _exact,
    "tfill": _view,
    "tfull": _exact,
    "sum_axes": _sum_axes,
    "transpose": _transpose,
    "einsum": _einsum,
    "select": _select,
}
