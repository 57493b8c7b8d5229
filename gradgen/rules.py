"""The rule table: one entry per differentiable operation; adding an op touches only
this file.

Each `Rule` in `RULES` says, for one op:
  arity     how many operands it takes (the parser checks calls against it);
  shape     how its output shape follows from its operands' shapes and its
            attributes (`shapes.py`);
  vjp       its local derivative as a vector-Jacobian product: given the adjoint `g` of
            the output, the contribution to the adjoint of operand i (reverse mode,
            used for gradients). Element-wise Jacobians are diagonal, so these are
            element-wise products; no Jacobian matrix is ever formed. A vjp that
            returns None for an operand (a mask, an integer index, a condition) says
            that operand gets no derivative: the derivation passes nothing to it;
  jvp       the same derivative as a Jacobian-vector product: given the tangents of
            the operands (each with the differentiated param's axes appended), the
            tangent of the output (forward mode, used for `outputs:` Jacobians);
  spelling  its numpy spelling and operator precedence (`printer.py`), and its
            array-API spelling where it is not the numpy one with `np.` read as
            `xp.` (`Spelling.xp`: another name, as `xp.atan`, or a construct the
            standard lacks, through a helper of the array-API module);
  user      whether a spec may call it by name; `axis`, whether it takes `axis=`.

What each kind of op needs (the parser reads names, arities and `axis` from here):
  * an element-wise function f(x): one `elementwise(definition, spelling)` line; sympy
    derives f', and the vjp and jvp follow (`inverse` lets f' reuse the output);
  * an element-wise op of several operands (broadcasting): `diagonal(arity, shape,
    spelling, vjp)` with the vjp's formula; the jvp follows, and `derive.unbroadcast`
    sums each contribution back to its operand's shape;
  * a reduction along an axis: `reduction(spelling, vjp, jvp)`; its `Axis` attribute
    arrives typed (`attr(out, Axis).axis`);
  * an op with a non-differentiable operand: a vjp that returns None for it.
Ops that rules, lowering and the parser build but never differentiate (masks,
copies, einsum products, shape plumbing) have only a spelling, in `PLUMBING`.

Rules build their results with `Ops` (one constructor per op) and see only their
operands, their output and the incoming adjoint or tangents. Adjoints may be left
"lazily broadcast" (a scalar standing for a full array); `derive.py` reduces or
expands them to each operand's shape. Formulas are in numerator layout as in
Parr & Howard (docs/derivation.md); `g` is the adjoint dL/d(out), `out` the forward
value, reused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sympy as sp

from . import scalar, shapes
from .graph import (
    Attrs,
    Axes,
    Axis,
    Count,
    Dim,
    Exponent,
    Index,
    Node,
    Permutation,
    Position,
    Shape,
    attr,
)
from .scalar import SIGMOID, X, Y

if TYPE_CHECKING:
    from .ops import Ops

Vjp = Callable[["Ops", Node, Node, int], Node | None]
Jvp = Callable[["Ops", Node, tuple[Node | None, ...], Node], Node | None]
ShapeRule = Callable[[tuple[Shape, ...], Attrs | None], Shape]

# Precedence levels, as in Python's grammar (higher binds tighter).
CMP, OR, AND, ADD, MUL, UNARY, POW, ATOM = 5, 6, 8, 10, 20, 30, 40, 50
#: The constants a spec may name (a spec's own names take precedence).
CONSTANTS = {"pi": math.pi, "e": math.e}


@dataclass(frozen=True)
class Spelling:
    """numpy text: `template` with {0}, {1}... for operands, `prec` of the result,
    and the minimum precedence each operand needs to go without parentheses."""

    template: str
    prec: int = ATOM
    operand_prec: tuple[int, ...] = (0, 0, 0)
    helper: str | None = None  # a module-level helper function the spelling calls
    fields: Callable[[Any], dict[str, str]] | None = None  # attrs -> template fields
    # the array-API spelling (`backend: array-api`), or a function of the node giving
    # it; None: this one with `np.` read as `xp.`. Without `fields` of its own it
    # takes this spelling's. (tests/test_array_api.py checks every name it calls is
    # in the standard.)
    xp: Spelling | Callable[[Node], Spelling] | None = None
    # the spelling where the (first) operand is a scalar, which may be a Python
    # number (a literal, a dim, a scalar argument passed as a float) that numpy's
    # spelling means something else for (`~True` is -2) or refuses (`0.5[None]`)
    scalar: Spelling | None = None


@dataclass(frozen=True)
class Rule:
    arity: int  # -1: any number of operands
    shape: ShapeRule | None  # None: the builder states the shape
    spelling: Spelling
    vjp: Vjp
    jvp: Jvp
    elementwise: tuple[sp.Expr, sp.Expr | None, sp.Expr | None] | None = None
    user: bool = False  # callable by name from a spec expression
    broadcasts: bool = False  # operands broadcast to the output's shape (numpy rules)
    # takes `axis=` (its `Axis` attribute): None, no; "all", every axis by default (a
    # reduction); "last", the last axis by default (softmax)
    axis: str | None = None
    keepdims: bool = False  # takes `keepdims=` too


# --- shape rules ------------------------------------------------------------------


def same(shapes_: tuple[Shape, ...], _: Attrs | None) -> Shape:
    return shapes_[0]


def broadcast_shape(op: str) -> ShapeRule:
    return lambda s, _: shapes.broadcast(s[0], s[1], op)


# --- helpers shared by the rules ----------------------------------------------------


def tail(ops: Ops, a: Node, param: Node) -> Node:
    """`a` with the param's axes appended (size 1), to scale a tangent."""
    return ops.trail(a, param.rank)


def lifted(ops: Ops, t: Node | None, arg: Node, out: Node) -> Node | None:
    """A tangent of `arg`, with leading axes so it lines up with `out`'s tangent."""
    if t is None or arg.rank == out.rank:
        return t
    return ops.lift(t, out.rank - arg.rank)


def total(ops: Ops, *terms: Node | None) -> Node | None:
    present = [t for t in terms if t is not None]
    if not present:
        return None
    out = present[0]
    for t in present[1:]:
        out = ops.add(out, t)
    return out


def scaled(ops: Ops, t: Node | None, factor: Node, param: Node) -> Node | None:
    return None if t is None else ops.mul(t, tail(ops, factor, param))


# --- element-wise functions: sympy supplies the derivative --------------------------


def elementwise(
    definition: sp.Expr,
    template: str,
    inverse: sp.Expr | None = None,
    stable: sp.Expr | None = None,
    helper: str | None = None,
    xp: str | None = None,
) -> Rule:
    """f applied element-wise; its Jacobian is diag(f'(x)), so the vjp is g * f'(x).

    f' comes from sympy (`scalar.local_derivative`), written in terms of the output
    y = f(x) when that is cheaper, so the backward pass reuses the forward value.
    """

    def derivative(ops: Ops, out: Node) -> Node:
        expr = scalar.local_derivative(definition, inverse, stable)
        return scalar.to_graph(expr, out.args[0], out, ops)

    def vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
        return ops.mul(g, derivative(ops, out))

    return Rule(
        1,
        same,
        Spelling(
            template,
            ATOM,
            (0,),
            helper,
            xp=None if xp is None else Spelling(xp, ATOM, (0,)),
        ),
        vjp,
        diagonal_jvp(vjp),
        elementwise=(definition, inverse, stable),
        user=True,
    )


# --- structural rules ---------------------------------------------------------------


def add_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    return g  # d(a + b)/da = I, d(a + b)/db = I


def sub_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    return g if i == 0 else ops.neg(g)  # d(a - b)/da = I, d(a - b)/db = -I


def mul_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    return ops.mul(g, out.args[1 - i])  # d(a*b)/da = diag(b), d(a*b)/db = diag(a)


def div_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    b = out.args[1]
    if i == 0:
        return ops.div(g, b)  # d(a/b)/da = diag(1/b)
    return ops.neg(ops.div(ops.mul(g, out), b))  # d(a/b)/db = diag(-a/b^2) = -out/b


def neg_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    return ops.neg(g)  # d(-a)/da = -I


def powc_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    k = attr(out, Exponent).k  # d(a^k)/da = diag(k a^(k-1))
    a = out.args[0]
    return ops.mul(g, ops.mul(ops.const(k), ops.powc(a, k - 1)))


def pow_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    a, b = out.args
    if i == 0:  # d(a^b)/da = b a^(b-1), finite at a = 0 for b >= 1
        return ops.mul(g, ops.mul(b, ops.pow(a, ops.sub(b, ops.const(1.0)))))
    # d(a^b)/db = a^b ln a = xlogy(out, a): 0 where out is 0 (a = 0), not 0 * -inf
    return ops.mul(g, ops.make("xlogy", out, a, shape=out.shape))


def extremum_vjp() -> Vjp:
    """max/min: the adjoint flows to the operand that was picked.

    At a tie it goes to a constant operand if there is one, else to the first, so
    that max(0, z) and max(z, 0) have relu's derivative 0 at z = 0 (the article).
    """

    def vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
        mine, other = out.args[i], out.args[1 - i]
        if i == 0 and not other.is_const:
            picked = ops.eq(out, mine)  # ties stay with the first operand
        else:
            picked = ops.ne(out, other)  # strictly picked
        return ops.mul(g, picked)

    return vjp


def matmul_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # C = A B:  dL/dA = G B^T,  dL/dB = A^T G  (vectors: outer products and A^T g).
    a, b = out.args
    g = ops.fill(g, out) if g.shape != out.shape else g
    if a.rank > 2 or b.rank > 2:
        return _batched_matmul_vjp(ops, a, b, g, i)
    if i == 0:
        if a.rank == 1 and b.rank == 1:
            return ops.mul(g, b)
        if b.rank == 1:
            return ops.outer(g, b)
        return ops.matmul(g, ops.transpose(b)) if a.rank == 2 else ops.matmul(b, g)
    if a.rank == 1 and b.rank == 1:
        return ops.mul(g, a)
    if a.rank == 1:
        return ops.outer(a, g)
    return ops.matmul(ops.transpose(a), g)


def _batched_matmul_vjp(ops: Ops, a: Node, b: Node, g: Node, i: int) -> Node:
    """A stack of products (numpy's matmul over leading batch axes): dA = G B^T and
    dB = A^T G per matrix, each summed back over the batch axes its operand was
    broadcast along. An operand with no batch axes (a weight matrix W in
    [B, T, d] @ [d, e]) gets the sum over the whole batch as one BLAS call,
    np.tensordot(A, G, axes=([0, 1], [0, 1]))."""
    if i == 0:
        if b.rank == 1:  # [..., m, k] @ [k]: dA = g[..., None] b
            return ops.mul(ops.expand_dims(g, g.rank), b)
        if a.rank == 1:  # [k] @ [..., k, n]: da_k = sum B[..., k, n] g[..., n]
            lead = tuple(range(b.rank - 2))
            return ops.tensordot(b, g, (*lead, b.rank - 1), tuple(range(g.rank)))
        if a.rank == 2:  # [m, k] @ [..., k, n]: dA = sum over the batch of G B^T
            lead = tuple(range(g.rank - 2))
            return ops.tensordot(g, b, (*lead, g.rank - 1), (*lead, b.rank - 1))
        bt = ops.transpose(b) if b.rank == 2 else ops.swapaxes(b)
        return batch_sum(ops, ops.matmul(g, bt), a)
    if a.rank == 1:  # [k] @ [..., k, n]: dB = a[:, None] g[..., None, :]
        return ops.mul(ops.trail(a, 1), ops.expand_dims(g, g.rank - 1))
    if b.rank == 1:  # [..., m, k] @ [k]: db_k = sum A[..., m, k] g[..., m]
        return ops.tensordot(a, g, tuple(range(a.rank - 1)), tuple(range(g.rank)))
    if b.rank == 2:  # [..., m, k] @ [k, n]: dB = sum over the batch of A^T G
        return ops.tensordot(a, g, tuple(range(a.rank - 1)), tuple(range(g.rank - 1)))
    at = ops.transpose(a) if a.rank == 2 else ops.swapaxes(a)
    return batch_sum(ops, ops.matmul(at, g), b)


def batch_sum(ops: Ops, c: Node, arg: Node) -> Node:
    """A matmul contribution of shape (the output's batch axes) + (arg's matrix
    axes) summed over the batch axes along which `arg` was broadcast: the ones it
    lacks, and its own size-1 ones (kept)."""
    lead = c.rank - arg.rank
    kept = tuple(
        lead + j
        for j in range(arg.rank - 2)
        if arg.shape[j] == 1 and c.shape[lead + j] != 1
    )
    if kept:
        c = ops.keep_sum(c, kept)
    if lead:
        c = ops.sum_axes(c, tuple(range(lead)))
    return c


def transpose_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    if g.shape != out.shape and g.rank > 0:
        g = ops.fill(g, out)
    return ops.transpose(g)  # d(A^T): the adjoint is transposed back


def reduced(out: Node) -> tuple[int, ...]:
    """The axes a reduction (or softmax) `out` runs along, in its operand's shape."""
    axes = attr(out, Axis).axes
    return tuple(range(out.args[0].rank)) if axes is None else axes


def restore(ops: Ops, out: Node, g: Node) -> Node:
    """`g`, shaped like the reduction `out`, made to broadcast against its operand:
    each reduced axis put back with size 1 (numpy aligns leading ones by itself)."""
    axes = reduced(out)
    if g.rank == 0 or attr(out, Axis).keepdims or axes == tuple(range(len(axes))):
        return g
    if g.rank < out.rank:
        g = ops.fill(g, out)
    for axis in sorted(axes):
        g = ops.expand_dims(g, axis)
    return g


def summed(ops: Ops, out: Node, t: Node, p: Node) -> Node:
    """A tangent of the reduction's operand summed along its axes (kept with size 1
    under keepdims); the param's trailing axes stay."""
    x, axes = out.args[0], reduced(out)
    full = ops.tfill(t, x, p)
    if not axes:
        return full
    if attr(out, Axis).keepdims:
        return ops.keep_sum(full, axes)
    return ops.sum_axes(full, axes)


def sum_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # grad sum(x) = 1^T: every element receives g (lazily broadcast); an axis that was
    # summed away is put back as size 1 so that g broadcasts along it.
    return restore(ops, out, g)


def mean_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    count = ops.count(out.args[0], attr(out, Axis).axes)  # mean = sum / count
    return restore(ops, out, ops.div(g, count))


def logsumexp_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # d logsumexp(x)/dx = softmax(x) = exp(x - out): stable, since x - out <= 0.
    x = out.args[0]
    softmax = ops.call("exp", ops.sub(x, restore(ops, out, out)))
    return ops.mul(restore(ops, out, g), softmax)


def _centred(ops: Ops, out: Node) -> Node:
    """x - mean(x) along the reduction's axes, broadcastable against x."""
    x = out.args[0]
    return ops.sub(x, ops.reduce("mean", x, Axis(reduced(out), keepdims=True)))


def var_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # var = mean((x - m)^2): d var/dx = 2 (x - m) / count (the m terms sum to 0)
    count = ops.count(out.args[0], attr(out, Axis).axes)
    return ops.mul(
        restore(ops, out, ops.div(ops.mul(ops.const(2.0), g), count)),
        _centred(ops, out),
    )


def std_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # std = sqrt(var): d std/dx = (x - m) / (count std), 0 where std = 0 (then x = m)
    count = ops.count(out.args[0], attr(out, Axis).axes)
    scale = ops.div(g, ops.mul(count, ops.make("nonzero", out, shape=out.shape)))
    return ops.mul(restore(ops, out, scale), _centred(ops, out))


def norm_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # norm = sqrt(sum(x^2)): d norm/dx = x / norm, 0 at x = 0 (as relu'(0) = 0)
    scale = ops.div(g, ops.make("nonzero", out, shape=out.shape))
    return ops.mul(restore(ops, out, scale), out.args[0])


def extreme_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # max(x) (min): the adjoint goes to the elements equal to the result, shared
    # equally among ties (numpy's max has no preferred one)
    x = out.args[0]
    hit = ops.make("as_float", ops.eq(x, restore(ops, out, out)), shape=x.shape)
    ties = ops.keep_sum(hit, reduced(out))
    return ops.mul(restore(ops, out, g), ops.div(hit, ties))


def stack_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # [e1, ..., ek]: element i receives g[i]; a g broadcast along the vector (a
    # scalar, or size 1) gives every element the same value
    if out.attrs is not None:  # stack([...], axis=k): element i receives g[..., i]
        axis = attr(out, Position).i
        if g.shape != out.shape:
            g = ops.fill(g, out)
        items = (*[":"] * axis, str(i))
        return ops.make("getitem", g, attrs=Index(items), shape=out.args[i].shape)
    if g.rank == 0:
        return g
    return ops.index(g, 0 if g.shape[0] == 1 else i)


# --- forward-mode (Jacobian) rules ----------------------------------------------------


def diagonal_jvp(vjp: Vjp) -> Jvp:
    """Element-wise ops have diagonal Jacobians: the tangent of operand i is scaled by
    the local partial d out/d operand_i, which is the vjp of a unit adjoint."""

    def jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
        one = ops.const(1.0)
        terms: list[Node | None] = []
        for i, (t, a) in enumerate(zip(ts, out.args, strict=True)):
            partial = None if t is None else vjp(ops, out, one, i)
            if partial is not None:  # None: the operand gets no derivative
                terms.append(scaled(ops, lifted(ops, t, a, out), partial, p))
        return total(ops, *terms)

    return jvp


def diagonal(
    arity: int, shape: ShapeRule, spelling: Spelling, vjp: Vjp, user: bool = False
) -> Rule:
    """An element-wise op (diagonal Jacobian): forward mode follows from its vjp.

    Its vjp returns contributions shaped like the output; `derive.unbroadcast`
    sums them back to each operand's shape."""
    return Rule(
        arity, shape, spelling, vjp, diagonal_jvp(vjp), user=user, broadcasts=arity > 1
    )


# Tangents of a matmul are contracted with einsum; "..." stands for the param's axes.
_MATMUL_TANGENT = {
    (2, 2): ("ik...,kj->ij...", "ik,kj...->ij..."),
    (2, 1): ("ik...,k->i...", "ik,k...->i..."),
    (1, 2): ("k...,kj->j...", "k,kj...->j..."),
    (1, 1): ("k...,k->...", "k,k...->..."),
}


def _seeded_matmul(
    ops: Ops, a: Node, b: Node, ts: tuple[Node | None, ...], p: Node, shape: Shape
) -> Node | None:
    """The tangent of a @ b when one operand is the differentiated param itself and
    the other is constant: written from the structure of the identity seed, without
    contracting an identity matrix (for W of shape [k, n], d(A W)/dW[p, q] has
    entries A[i, p] delta(j, q))."""
    if p.rank > 2:
        return None
    if ts[1] is not None and ts[0] is None and b is p and ts[1] is ops.seed(p):
        if b.rank == 1:
            return a  # d(A w)/dw = A, d(v . w)/dw = v (A may be a stack)
        eye = ops.eye(b.shape[1])
        batch = _BATCH[: a.rank - 2]
        spec = f"{batch}ip,jq->{batch}ijpq" if a.rank >= 2 else "p,jq->jpq"
        return ops.einsum(spec, a, eye, shape)
    if ts[0] is not None and ts[1] is None and a is p and ts[0] is ops.seed(p):
        if a.rank == 1:  # d(w B)/dw = B^T (of each matrix of a stack)
            if b.rank == 1:
                return b
            return ops.transpose(b) if b.rank == 2 else ops.swapaxes(b)
        eye = ops.eye(a.shape[0])
        batch = _BATCH[: b.rank - 2]
        spec = f"ip,{batch}qj->{batch}ijpq" if b.rank >= 2 else "ip,q->ipq"
        return ops.einsum(spec, eye, b, shape)
    return None


_BATCH = "abcd"  # einsum labels of a matmul's batch axes (rank 6 leaves 4)
_PARAM = "pqrstu"  # of the param's axes in a tangent


def _batched_matmul_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node, shape: Shape
) -> Node | None:
    """The tangent of a stack of products, as einsums with explicit labels: the
    output's batch axes, its matrix axes, then the param's axes."""
    a, b = out.args
    batch = _BATCH[: out.rank - (a.rank >= 2) - (b.rank >= 2)]
    params = _PARAM[: p.rank]

    def labels(x: Node, core: str) -> str:
        return batch[len(batch) - (x.rank - 2) :] + core if x.rank >= 2 else "k"

    def aligned(x: Node, core: str, value: Node | None = None) -> Node:
        # an operand (or the tangent `value` of one) whose own batch axes have size
        # 1 where the output's do not is broadcast first: a label has one size
        mine = labels(x, core)[:-2] if x.rank >= 2 else ""
        want = out.shape[len(batch) - len(mine) : len(batch)] + x.shape[len(mine) :]
        if value is None:
            return ops.broadcast_to(x, want)
        return ops.broadcast_to(value, want + p.shape)

    la, lb = labels(a, "ik"), labels(b, "kj")
    lo = batch + "i" * (a.rank >= 2) + "j" * (b.rank >= 2)
    terms: list[Node | None] = []
    if ts[0] is not None:
        ta = aligned(a, "ik", ops.tfill(ts[0], a, p))
        spec = f"{la}{params},{lb}->{lo}{params}"
        terms.append(ops.einsum(spec, ta, aligned(b, "kj"), shape))
    if ts[1] is not None:
        tb = aligned(b, "kj", ops.tfill(ts[1], b, p))
        spec = f"{la},{lb}{params}->{lo}{params}"
        terms.append(ops.einsum(spec, aligned(a, "ik"), tb, shape))
    return total(ops, *terms)


def matmul_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    a, b = out.args
    shape = out.shape + p.shape
    shortcut = _seeded_matmul(ops, a, b, ts, p, shape)
    if shortcut is not None:
        return shortcut
    if a.rank > 2 or b.rank > 2:
        return _batched_matmul_jvp(ops, out, ts, p, shape)
    left, right = _MATMUL_TANGENT[(a.rank, b.rank)]
    ta = None if ts[0] is None else ops.einsum(left, ops.tfill(ts[0], a, p), b, shape)
    tb = None if ts[1] is None else ops.einsum(right, a, ops.tfill(ts[1], b, p), shape)
    return total(ops, ta, tb)


def transpose_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    t = ts[0]
    if t is None or out.rank < 2:
        return t
    if out.rank == 2:
        return ops.swap01(ops.tfill(t, out.args[0], p))
    # .T reverses every value axis; the param's trailing axes stay in place
    perm = (*reversed(range(out.rank)), *range(out.rank, out.rank + p.rank))
    return ops.permute(ops.tfill(t, out.args[0], p), perm)


def sum_jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
    t = ts[0]
    return None if t is None else summed(ops, out, t, p)


def mean_jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
    s = sum_jvp(ops, out, ts, p)
    count = ops.count(out.args[0], attr(out, Axis).axes)
    return None if s is None else ops.div(s, count)


def weighted_jvp(vjp: Vjp) -> Jvp:
    """A reduction whose local derivative is an element-wise weight w(x) followed by
    the sum (logsumexp: softmax; norm: x / norm): the tangent is sum(w t). The
    weight is the vjp of a unit adjoint."""

    def jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
        t = ts[0]
        if t is None:
            return None
        weight = vjp(ops, out, ops.const(1.0), 0)
        assert weight is not None
        # the weight has x's full shape, so the product is exact before the sum
        return summed(ops, out, ops.mul(t, tail(ops, weight, p)), p)

    return jvp


def stack_jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
    if all(t is None for t in ts):
        return None
    parts = [
        ops.tfill(t, a, p) if t is not None else ops.zeros(a, p)
        for t, a in zip(ts, out.args, strict=True)
    ]
    if out.attrs is not None:  # stack([...], axis=k): the tangents along axis k
        return ops.make("stack", *parts, attrs=out.attrs, shape=out.shape + p.shape)
    return ops.stack(parts)


def reduction(
    function: str,
    vjp: Vjp,
    jvp: Jvp | None = None,
    helper: str | None = None,
    xp: str | None = None,
) -> Rule:
    """A reduction over all elements or along `axis=` (an int or a tuple, negative
    counting from the end), with `keepdims=`: its `Axis` attribute. Without a jvp,
    the tangent is the weighted sum the vjp implies (`weighted_jvp`)."""
    return Rule(
        1,
        lambda s, a: shapes.reduce(s[0], *_axes_of(a)),
        Spelling(
            function + "({0}{axis})" + ("{close}" if helper else ""),
            ATOM,
            (0,),
            helper=helper,
            fields=_helper_axis_fields if helper else _axis_fields,
            # the array-API helpers take keepdims themselves
            xp=(
                None
                if xp is None
                else Spelling(xp + "({0}{axis})", ATOM, (0,), helper, _axis_fields)
            ),
        ),
        vjp,
        jvp or weighted_jvp(vjp),
        user=True,
        axis="all",
        keepdims=True,
    )


def _axes_of(attrs: Attrs | None) -> tuple[tuple[int, ...] | None, bool]:
    assert isinstance(attrs, Axis)
    return attrs.axes, attrs.keepdims


def _axis_fields(a: Axis) -> dict[str, str]:
    text = "" if a.axes is None else f", axis={axes_arg(a.axes)}"
    return {"axis": text + (", keepdims=True" if a.keepdims else ""), "keep": ""}


def _helper_axis_fields(a: Axis) -> dict[str, str]:
    """A helper without keepdims (`_logsumexp`): np.expand_dims puts the axes back."""
    if not a.keepdims:
        return {**_axis_fields(a), "close": ""}
    assert a.axes is not None  # the parser lists every axis under keepdims
    return {
        "keep": "np.expand_dims(",
        "axis": f", axis={axes_arg(a.axes)}",
        "close": f", {axes_arg(a.axes) if len(a.axes) == 1 else repr(a.axes)})",
    }


def softmax_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # y = softmax(x) along its axis: x̄ = y (ḡ - sum(ḡ y)), the sum kept along it
    return ops.mul(out, ops.sub(g, ops.keep_sum(ops.mul(g, out), reduced(out))))


def softmax_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # ṫ = y (t - sum(y t)), y with the param's axes appended
    t = ts[0]
    if t is None:
        return None
    t, y = ops.tfill(t, out.args[0], p), tail(ops, out, p)
    return ops.mul(y, ops.sub(t, ops.keep_sum(ops.mul(y, t), reduced(out))))


def log_softmax_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # y = x - logsumexp(x): x̄ = ḡ - softmax(x) sum(ḡ), softmax(x) = e^y
    if g.shape != out.shape:
        g = ops.fill(g, out)  # a lazily broadcast ḡ: its sum counts every element
    softmax = ops.call("exp", out)
    return ops.sub(g, ops.mul(softmax, ops.keep_sum(g, reduced(out))))


def log_softmax_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # ṫ = t - sum(softmax t): d logsumexp = softmax · dx, kept along the axis
    t = ts[0]
    if t is None:
        return None
    t, softmax = ops.tfill(t, out.args[0], p), tail(ops, ops.call("exp", out), p)
    return ops.sub(t, ops.keep_sum(ops.mul(softmax, t), reduced(out)))


def along_axis(function: str, vjp: Vjp, jvp: Jvp, helper: str) -> Rule:
    """An op of one operand that works along an axis (`axis=`, the last by default)
    and keeps the operand's shape: softmax, log_softmax."""
    return Rule(
        1,
        same,
        Spelling(
            f"{function}({{0}}, axis={{axis}})",
            helper=helper,
            fields=lambda a: {"axis": axes_arg(a.axes)},
        ),
        vjp,
        jvp,
        user=True,
        axis="last",
    )


def clip_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # clip(x, lo, hi): x̄ = ḡ where lo < x < hi; lō = ḡ where x <= lo; hī = ḡ where
    # x >= hi. At x = lo the adjoint goes to lo, as relu'(0) = 0 sends it to the 0.
    x, lo, hi = out.args
    if i == 0:
        inside = ops.compare("and_", ops.compare("gt", x, lo), ops.compare("lt", x, hi))
        return ops.mul(g, inside)
    if i == 1:
        return ops.mul(g, ops.compare("le", x, lo))
    return ops.mul(g, ops.compare("ge", x, hi))


def where_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # where(c, a, b): ā = ḡ where c, b̄ = ḡ where not c; the condition gets nothing.
    # np.where, not a product with the mask: a non-finite ḡ never leaks across.
    c = out.args[0]
    if i == 0:
        return None
    zero = ops.const(0.0)
    picked = (c, g, zero) if i == 1 else (c, zero, g)
    return ops.make("select", *picked, shape=_broadcast3(*(n.shape for n in picked)))


def _broadcast3(a: Shape, b: Shape, c: Shape) -> Shape:
    return shapes.broadcast(shapes.broadcast(a, b, "where"), c, "where")


def getitem_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # y = x[index] (basic indexing): x̄ = zeros of x's shape with ḡ put at the
    # index; the integer indices get nothing
    if i:
        return None
    x, *index = out.args
    shape = ops.shape_literal(x.shape)  # the last operand; the index's stay in place
    return ops.make("put", g, *index, shape, attrs=out.attrs, shape=x.shape)


def getitem_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # the same index picks the tangent's value axes; the param's axes trail
    t = ts[0]
    if t is None:
        return None
    x, *index = out.args
    t = ops.tfill(t, x, p)
    return ops.make("getitem", t, *index, attrs=out.attrs, shape=out.shape + p.shape)


def gather_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # y = W[ids] (rows picked by an integer array): W̄ = the rows of ḡ added up at
    # ids, repeated ids summing (a scatter-add; no one-hot matrix is built)
    if i:
        return None
    w, ids = out.args
    g = ops.fill(g, out) if g.shape != out.shape else g
    size = ops.dimension(w.shape[0])
    return ops.make("scatter_add", g, ids, size, shape=w.shape)


def gather_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    t = ts[0]
    if t is None:
        return None
    w, ids = out.args
    return ops.make("gather", ops.tfill(t, w, p), ids, shape=out.shape + p.shape)


def take_along_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # y = x picked at `labels` along the axis (one entry per slice, as Z[arange(N),
    # y]): x̄ = zeros with ḡ put at the labels; the labels get nothing
    if i:
        return None
    x, labels = out.args
    axis = attr(out, Index).axis
    g = ops.fill(g, out) if g.shape != out.shape else g
    size = ops.dimension(x.shape[axis])
    return ops.make("put_along", g, labels, size, attrs=out.attrs, shape=x.shape)


def take_along_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    t = ts[0]
    if t is None:
        return None
    x, labels = out.args
    t = ops.tfill(t, x, p)
    return ops.make("take_along", t, labels, attrs=out.attrs, shape=out.shape + p.shape)


def permute_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # y = transpose(x, perm): x̄ = transpose(ḡ, the inverse permutation)
    perm = attr(out, Permutation).perm
    if g.shape != out.shape:
        g = ops.fill(g, out)
    inverse = tuple(sorted(range(len(perm)), key=lambda k: perm[k]))
    return ops.permute(g, inverse)


def permute_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # the value axes are permuted; the param's trailing axes stay in place
    t = ts[0]
    if t is None:
        return None
    perm = attr(out, Permutation).perm
    full = (*perm, *range(len(perm), len(perm) + p.rank))
    return ops.permute(ops.tfill(t, out.args[0], p), full)


def reshape_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # y = reshape(x, shape): the same elements in the same (C) order, so
    # x̄ = reshape(ḡ, x.shape); the shape operand gets nothing
    if i:
        return None
    x = out.args[0]
    if g.rank == 0:
        return g  # a lazily broadcast scalar stands for any shape
    if g.shape != out.shape:
        g = ops.fill(g, out)
    return ops.make("reshape", g, ops.shape_literal(x.shape), shape=x.shape)


def reshape_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # the value axes are reshaped; the param's trailing axes stay
    t = ts[0]
    if t is None:
        return None
    shape = out.shape + p.shape
    full = ops.tfill(t, out.args[0], p)
    return ops.make("reshape", full, ops.shape_literal(shape), shape=shape)


def concat_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # y = concatenate([a, b, ...], axis): each operand's adjoint is its slice of ḡ
    axis = attr(out, Position).i
    if g.shape != out.shape:
        g = ops.fill(g, out)
    sizes = [a.shape[axis] for a in out.args]
    lead = [":"] * axis
    if i == 0:
        end = ops.dimension(sizes[0])
        return ops.make(
            "getitem",
            g,
            end,
            attrs=Index((*lead, ":{1}")),
            shape=out.args[0].shape,
        )
    start = ops.dimension(shapes.dim_sum(tuple(sizes[:i])))
    if i == len(sizes) - 1:
        return ops.make(
            "getitem", g, start, attrs=Index((*lead, "{1}:")), shape=out.args[i].shape
        )
    end = ops.dimension(shapes.dim_sum(tuple(sizes[: i + 1])))
    return ops.make(
        "getitem",
        g,
        start,
        end,
        attrs=Index((*lead, "{1}:{2}")),
        shape=out.args[i].shape,
    )


def concat_jvp(
    ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node
) -> Node | None:
    # the tangents joined along the same value axis (zeros for an operand that
    # does not depend on the param)
    if all(t is None for t in ts):
        return None
    parts = [
        ops.tfill(t, a, p) if t is not None else ops.zeros(a, p)
        for t, a in zip(ts, out.args, strict=True)
    ]
    return ops.make("concat", *parts, attrs=out.attrs, shape=out.shape + p.shape)


def diag_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # y = the diagonal of S (of each matrix of a stack): S̄ = zeros with ḡ on the
    # diagonal, ḡ[..., :, None] * eye(n)
    s = out.args[0]
    if g.shape != out.shape:
        g = ops.fill(g, out)
    return ops.mul(ops.expand_dims(g, g.rank), ops.eye(s.shape[-1]))


def diag_jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
    # the diagonal of the tangent's last two value axes; numpy puts it last, so it
    # is moved back in front of the param's axes
    t = ts[0]
    if t is None:
        return None
    s = out.args[0]
    r = s.rank
    full = ops.tfill(t, s, p)
    shape = (*s.shape[:-2], *p.shape, s.shape[-1])
    picked = ops.make("diag", full, attrs=Axes((r - 2, r - 1)), shape=shape)
    k = out.rank - 1  # where the diagonal goes among the value axes
    perm = (*range(k), k + p.rank, *range(k, k + p.rank))
    return ops.permute(picked, perm)


def _diag_shape(s: tuple[Shape, ...], _: Attrs | None) -> Shape:
    (shape,) = s  # the diagonal along the last two axes
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise shapes.ShapeError(
            f"`diag` takes a square matrix (or a stack of them), got {shapes.show(shape)}"
        )
    return shape[:-1]


def _diag_fields(a: Axes) -> dict[str, str]:
    if a.axes == (0, 1):
        return {"axes": ""}
    return {"axes": f", axis1={a.axes[0]}, axis2={a.axes[1]}"}


def _stack_fields(a: Position | None) -> dict[str, str]:
    # the vector literal [a, b] has no attrs; stack([...], axis=k) has its axis
    if a is None:
        return {"open": "np.array(", "close": ")"}
    return {"open": "np.stack(", "close": f", axis={a.i})"}


# --- the table ----------------------------------------------------------------------


def number(value: float) -> str:
    """A float literal as a person writes it: 2, 0.5, 1e-08."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def nones(count: int) -> str:
    return ", ".join(["None"] * count)


def axes_arg(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else repr(axes)


# --- array-API spellings that depend on the node ---------------------------------------


def _xp_transpose(node: Node) -> Spelling:
    # .T is for matrices only in the standard: every axis reversed by permute_dims
    rank = node.rank
    if rank == 2:
        return Spelling("{0}.T", ATOM, (ATOM,))
    return Spelling(f"xp.permute_dims({{0}}, {tuple(reversed(range(rank)))!r})")


def _xp_getitem(node: Node) -> Spelling:
    # the standard wants every axis indexed: `...` for the rest, if no item is one
    if "..." in attr(node, Index).items:
        return Spelling("{0}[{index}]", ATOM, (ATOM,))
    return Spelling("{0}[{index}, ...]", ATOM, (ATOM,))


def _xp_swap01(node: Node) -> Spelling:
    perm = (1, 0, *range(2, node.rank))
    return Spelling(f"xp.permute_dims({{0}}, {perm!r})")


def _xp_diag(node: Node) -> Spelling:
    # xp.linalg.diagonal takes the last two axes; others are moved there first
    (x,) = node.args
    axes = attr(node, Axes).axes
    if axes == (x.rank - 2, x.rank - 1):
        return Spelling("xp.linalg.diagonal({0})")
    perm = (*(i for i in range(x.rank) if i not in axes), *axes)
    return Spelling(f"xp.linalg.diagonal(xp.permute_dims({{0}}, {perm!r}))")


def _xp_stack(node: Node) -> Spelling:
    if node.attrs is None:  # the vector literal of scalars: each made a 0-d array
        items = ", ".join(
            f"xp.asarray({{{i}}}, dtype={{float}})" for i in range(len(node.args))
        )
        return Spelling(f"xp.stack([{items}])")
    return Spelling(
        "xp.stack([{args}], axis={axis})", fields=lambda a: {"axis": str(a.i)}
    )


_XP_FULL = Spelling("xp.zeros({1}, dtype={float}{device}) + {0}", ADD, (ADD + 1, 0))

_BIN = (ADD, ADD + 1)
_PRODUCT = (MUL, MUL + 1)
_CMP = (CMP + 1, CMP + 1)
_PICK = extremum_vjp()


RULES: dict[str, Rule] = {
    # arithmetic, broadcasting like numpy
    "add": diagonal(2, broadcast_shape("+"), Spelling("{0} + {1}", ADD, _BIN), add_vjp),
    "sub": diagonal(2, broadcast_shape("-"), Spelling("{0} - {1}", ADD, _BIN), sub_vjp),
    "mul": diagonal(
        2, broadcast_shape("*"), Spelling("{0} * {1}", MUL, _PRODUCT), mul_vjp
    ),
    "div": diagonal(
        2, broadcast_shape("/"), Spelling("{0} / {1}", MUL, _PRODUCT), div_vjp
    ),
    "neg": diagonal(1, same, Spelling("-{0}", UNARY, (UNARY,)), neg_vjp),
    # a**k for a constant k (small integer powers become products in lower.py)
    "powc": diagonal(
        1,
        same,
        Spelling("{0}**{k}", POW, (POW + 1,), fields=lambda a: {"k": number(a.k)}),
        powc_vjp,
    ),
    "pow": diagonal(
        2, broadcast_shape("**"), Spelling("{0}**{1}", POW, (POW + 1, UNARY)), pow_vjp
    ),
    "maximum": diagonal(
        2, broadcast_shape("max"), Spelling("np.maximum({0}, {1})"), _PICK, user=True
    ),
    "minimum": diagonal(
        2, broadcast_shape("min"), Spelling("np.minimum({0}, {1})"), _PICK, user=True
    ),
    # element-wise functions: definition in x; `inverse` (x in terms of y = f(x)) lets
    # sympy write f' with the forward value y
    "exp": elementwise(sp.exp(X), "np.exp({0})", inverse=sp.log(Y)),  # exp' = y
    "log": elementwise(sp.log(X), "np.log({0})"),  # log' = 1/x
    "sin": elementwise(sp.sin(X), "np.sin({0})"),  # sin' = cos x
    "cos": elementwise(sp.cos(X), "np.cos({0})"),  # cos' = -sin x
    "tanh": elementwise(
        sp.tanh(X), "np.tanh({0})", inverse=sp.atanh(Y)
    ),  # tanh' = 1 - y^2
    # sigmoid' = y (1 - y); printed through a helper that never overflows
    "sigmoid": elementwise(
        1 / (1 + sp.exp(-X)),
        "_sigmoid({0})",
        inverse=sp.log(Y / (1 - Y)),
        helper="sigmoid",
    ),
    "relu": elementwise(sp.Max(0, X), "np.maximum({0}, 0)"),  # relu' = H(x), H(0) = 0
    "sqrt": elementwise(sp.sqrt(X), "np.sqrt({0})", inverse=Y**2),  # sqrt' = 1/(2y)
    "abs": elementwise(sp.Abs(X), "np.abs({0})"),  # abs' = sign x
    "square": elementwise(X**2, "np.square({0})"),  # square' = 2x
    # softplus(x) = log(1 + e^x), through a helper with one exp and one log1p (not
    # np.logaddexp, a scalar loop in some numpy builds); softplus' = sigmoid(x)
    "softplus": elementwise(
        sp.log(1 + sp.exp(X)), "_softplus({0})", stable=SIGMOID(X), helper="softplus"
    ),
    "log1p": elementwise(sp.log(1 + X), "np.log1p({0})"),  # log1p' = 1/(1 + x)
    # expm1' = e^x = y + 1
    "expm1": elementwise(sp.exp(X) - 1, "np.expm1({0})", inverse=sp.log(Y + 1)),
    "tan": elementwise(sp.tan(X), "np.tan({0})", inverse=sp.atan(Y)),  # tan' = 1 + y^2
    "arctan": elementwise(
        sp.atan(X), "np.arctan({0})", xp="xp.atan({0})"
    ),  # arctan' = 1/(1 + x^2)
    "sinh": elementwise(sp.sinh(X), "np.sinh({0})"),  # sinh' = cosh x
    "cosh": elementwise(sp.cosh(X), "np.cosh({0})"),  # cosh' = sinh x
    # log sigmoid(x) = -softplus(-x), through a helper with one exp and one log1p;
    # its derivative is sigmoid(-x) = 1 - sigmoid(x)
    "log_sigmoid": elementwise(
        -sp.log(1 + sp.exp(-X)),
        "_log_sigmoid({0})",
        stable=SIGMOID(-X),
        helper="log_sigmoid",
    ),
    # erf' = 2/sqrt(pi) e^(-x^2); numpy has no erf: a helper accurate to 1e-14
    "erf": elementwise(sp.erf(X), "_erf({0})", helper="erf"),
    # gelu(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, exact (not the tanh form);
    # gelu' = Phi(x) + x phi(x)
    "gelu": elementwise(
        X * (1 + sp.erf(X / sp.sqrt(2))) / 2, "_gelu({0})", helper="gelu"
    ),
    # reductions and linear algebra
    "sum": reduction("np.sum", sum_vjp, sum_jvp),  # grad sum(x) = 1^T
    "mean": reduction("np.mean", mean_vjp, mean_jvp),  # mean = sum / count
    # logsumexp(x) = log(sum(exp(x))), through a helper that factors out the maximum
    # keepdims puts the axes back around the helper (np.expand_dims), as numpy would
    "logsumexp": reduction(
        "{keep}_logsumexp", logsumexp_vjp, helper="logsumexp", xp="_logsumexp"
    ),
    "var": reduction("np.var", var_vjp),  # var' = 2 (x - mean) / count
    "std": reduction("np.std", std_vjp),  # std' = (x - mean) / (count std), 0 at std 0
    "norm": reduction(
        "np.linalg.norm", norm_vjp, xp="xp.linalg.vector_norm"
    ),  # norm' = x / norm, 0 at x = 0
    # max(x) and min(x) with one argument: the adjoint shared among the ties
    "amax": reduction("np.max", extreme_vjp),
    "amin": reduction("np.min", extreme_vjp),
    "matmul": Rule(
        2,
        lambda s, _: shapes.matmul(s[0], s[1]),
        Spelling("{0} @ {1}", MUL, _PRODUCT),
        matmul_vjp,
        matmul_jvp,
    ),
    # x.T reverses every axis, as numpy's; transpose(x, perm) puts them in any order
    "transpose": Rule(
        1,
        lambda s, _: tuple(reversed(s[0])),
        Spelling("{0}.T", ATOM, (ATOM,), xp=_xp_transpose),
        transpose_vjp,
        transpose_jvp,
        user=True,
    ),
    "permute": Rule(
        1,
        None,
        Spelling(
            "np.transpose({0}, {perm})",
            fields=lambda a: {"perm": repr(a.perm)},
            xp=Spelling("xp.permute_dims({0}, {perm})"),
        ),
        permute_vjp,
        permute_jvp,
    ),
    # reshape(x, [B, T * h]): the second operand is the shape, written from dims
    "reshape": Rule(
        2,
        None,
        Spelling("np.reshape({0}, {1})"),
        reshape_vjp,
        reshape_jvp,
        user=True,
    ),
    # the vector literal [e1, e2] (elements scalars), and stack([a, b], axis=k)
    "stack": Rule(
        -1,
        None,
        Spelling("{open}[{args}]{dtype}{close}", fields=_stack_fields, xp=_xp_stack),
        stack_vjp,
        stack_jvp,
        user=True,
        axis="first",
    ),
    "concat": Rule(
        -1,
        None,
        Spelling(
            "np.concatenate([{args}], axis={axis})",
            fields=lambda a: {"axis": str(a.i)},
            xp=Spelling("xp.concat([{args}], axis={axis})"),
        ),
        concat_vjp,
        concat_jvp,
        user=True,
        axis="first",
    ),
    # the diagonal of a square matrix (of each matrix of a stack): its last two axes
    "diag": Rule(
        1,
        _diag_shape,
        Spelling("np.diagonal({0}{axes})", fields=_diag_fields, xp=_xp_diag),
        diag_vjp,
        diag_jvp,
    ),
    # softmax along an axis (the last by default), through max-shifted helpers
    "softmax": along_axis("_softmax", softmax_vjp, softmax_jvp, "softmax"),
    "log_softmax": along_axis(
        "_log_softmax", log_softmax_vjp, log_softmax_jvp, "log_softmax"
    ),
    # clip(x, lo, hi) = min(max(x, lo), hi), broadcasting its three operands
    "clip": diagonal(
        3,
        lambda s, _: _broadcast3(*s),
        # the standard leaves clip undefined where lo > hi: min(max(x, lo), hi), as
        # numpy computes it
        Spelling(
            "np.clip({0}, {1}, {2})",
            xp=Spelling("xp.minimum(xp.maximum({0}, {1}), {2})"),
        ),
        clip_vjp,
        user=True,
    ),
    # indexing (the parser states the shapes): x[t, :, None] with integer-valued
    # indices; W[ids] by an integer array; Z[arange(N), y] as a pick along an axis
    "getitem": Rule(
        -1,
        None,
        Spelling(
            "{0}[{index}]",
            ATOM,
            (ATOM,),
            xp=_xp_getitem,
            scalar=Spelling("np.asarray({0}, dtype={float})[{index}]"),
        ),
        getitem_vjp,
        getitem_jvp,
    ),
    # the standard indexes by an integer array only through take (of a 1-d index)
    "gather": Rule(
        2,
        None,
        Spelling(
            "{0}[{1}]", ATOM, (ATOM,), xp=Spelling("_take({0}, {1})", helper="take")
        ),
        gather_vjp,
        gather_jvp,
    ),
    "take_along": Rule(
        2,
        None,
        Spelling(
            "_take_along({0}, {1}, {axis})",
            helper="take_along",
            fields=lambda a: {"axis": str(a.axis)},
        ),
        take_along_vjp,
        take_along_jvp,
    ),
    # where(cond, a, b): cond is a comparison (or & | ~ of comparisons)
    "where": diagonal(
        3,
        lambda s, _: _broadcast3(*s),
        Spelling("np.where({0}, {1}, {2})"),
        where_vjp,
        user=True,
    ),
}


def _axes(a: Axes) -> dict[str, str]:
    return {"axes": axes_arg(a.axes)}


def _nones(a: Count) -> dict[str, str]:
    return {"nones": nones(a.count)}


#: Ops with a numpy spelling and no derivative: the values the caller supplies, and
#: what rules, lowering and the parser build but never differentiate. Their shapes
#: are stated by the `Ops` constructor that builds them.
PLUMBING: dict[str, Spelling] = {
    # leaves: values supplied by the caller (inputs, params, dims) or by the spec
    "input": Spelling("{name}", fields=lambda a: {"name": a.name}),
    "param": Spelling("{name}", fields=lambda a: {"name": a.name}),
    "dim": Spelling("{name}", fields=lambda a: {"name": a.name}),
    "const": Spelling("{value}", fields=lambda a: {"value": number(a.value)}),
    # a dim used as a number, made a float where the integers could overflow
    "float": Spelling("{scalar}({0})", xp=Spelling("xp.asarray({0}, dtype={float})")),
    # masks and helpers that derivatives of kinks and powers use
    "sign": Spelling("np.sign({0})", ATOM, (0,)),
    "gt": Spelling("{0} > {1}", CMP, _CMP),
    "ge": Spelling("{0} >= {1}", CMP, _CMP),
    "lt": Spelling("{0} < {1}", CMP, _CMP),
    "le": Spelling("{0} <= {1}", CMP, _CMP),
    "and_": Spelling("{0} & {1}", AND, (AND, AND + 1)),
    "or_": Spelling("{0} | {1}", OR, (OR, OR + 1)),
    # ~ of a comparison of Python numbers would be a bitwise not of a Python bool
    "not_": Spelling("~{0}", UNARY, (UNARY,), scalar=Spelling("np.logical_not({0})")),
    "eq": Spelling("{0} == {1}", CMP, _CMP),
    "ne": Spelling("{0} != {1}", CMP, _CMP),
    "xlogy": Spelling("_xlogy({0}, {1})", helper="xlogy"),
    "as_float": Spelling(
        "np.asarray({0}, dtype={float})", xp=Spelling("xp.astype({0}, {float})")
    ),
    "select": Spelling("np.where({0}, {1}, {2})"),  # where, in derivatives
    # the sum of u * v over every element of two same-shape arrays (BLAS, flat)
    "vdot": Spelling(
        "np.vdot({0}, {1})",
        xp=Spelling("xp.vecdot(xp.reshape({0}, (-1,)), xp.reshape({1}, (-1,)))"),
    ),
    "iinput": Spelling("{name}", fields=lambda a: {"name": a.name}),  # integer ids
    # adjoints of indexing: zeros with the adjoint put (or added up) at the index
    "put": Spelling(
        "_put({0}, np.s_[{index}], {last}, {float})",
        helper="put",
        # no np.s_ in the standard: the index as a tuple of slice objects
        xp=Spelling("_put({0}, {slices}, {last}, {float})", helper="put"),
    ),
    "scatter_add": Spelling(
        "_scatter_add({0}, {1}, {2}, {float})", helper="scatter_add"
    ),
    "put_along": Spelling(
        "_put_along({0}, {1}, {2}, {axis}, {float})",
        helper="put_along",
        fields=lambda a: {"axis": str(a.axis)},
    ),
    # one_hot(y, k): a float matrix of the integer ids (not differentiable)
    "one_hot": Spelling(
        "np.eye({1}{dtype})[{0}]",
        xp=Spelling("xp.astype({0}[..., None] == xp.arange({1}{device}), {float})"),
    ),
    "arange": Spelling("np.arange({0})", xp=Spelling("xp.arange({0}{device})")),
    # a divisor made safe where it is 0 (the numerator is 0 there too)
    "nonzero": Spelling("np.where({0} == 0, 1, {0})"),
    # adjoints: indexing, broadcasting back, summing over broadcast axes
    # the standard wants every axis indexed: `...` for the rest
    "index": Spelling(
        "{0}[{i}]",
        ATOM,
        (ATOM,),
        fields=lambda a: {"i": str(a.i)},
        xp=Spelling("{0}[{i}, ...]", ATOM, (ATOM,)),
    ),
    "expand_dims": Spelling(
        "{0}[{index}]",
        ATOM,
        (ATOM,),
        fields=lambda a: {"index": ", ".join([":"] * a.i + ["None"])},
        xp=Spelling("{0}[{index}, ...]", ATOM, (ATOM,)),
    ),
    "outer": Spelling(
        "np.outer({0}, {1})", xp=Spelling("{0}[:, None] * {1}", MUL, (ATOM, MUL + 1))
    ),
    # xp.full takes a Python number only: zeros plus the value, fresh and lazy
    "fill": Spelling("np.full({1}, {0}, dtype={float})", xp=_XP_FULL),
    "copy": Spelling(
        "np.array({0}, dtype={float})",
        xp=Spelling("xp.asarray({0}, dtype={float}, copy=True)"),
    ),
    "shape": Spelling(
        "({args}{comma})", fields=lambda a: {"comma": "," if a.count == 1 else ""}
    ),
    "sum_keep": Spelling(
        "np.sum({0}, axis={axes}, keepdims=True)", ATOM, (0,), fields=_axes
    ),
    "zeros_like": Spelling("np.zeros_like({0}, dtype={float})", ATOM, (0,)),
    "sum_axes": Spelling("np.sum({0}, axis={axes})", ATOM, (0,), fields=_axes),
    # forward mode: a tangent carries the param's axes after the value's axes
    "trail": Spelling("{0}[..., {nones}]", ATOM, (ATOM,), fields=_nones),
    "lift": Spelling(
        "{0}[{nones}]",
        ATOM,
        (ATOM,),
        fields=_nones,
        xp=Spelling("{0}[{nones}, ...]", ATOM, (ATOM,)),
    ),
    "tfill": Spelling("np.broadcast_to({0}, {1})"),
    "tfull": Spelling("np.full({1}, {0}, dtype={float})", xp=_XP_FULL),
    "zeros": Spelling(
        "np.zeros({0}{dtype})", xp=Spelling("xp.zeros({0}, dtype={float}{device})")
    ),
    "eye": Spelling(
        "np.eye({0}{dtype})", xp=Spelling("xp.eye({0}, dtype={float}{device})")
    ),
    "reshaped": Spelling(  # the identity seed
        "{0}.reshape({1})", ATOM, (ATOM, 0), xp=Spelling("xp.reshape({0}, {1})")
    ),
    # the standard has no einsum: a helper contracting a pair by matmul
    "einsum": Spelling(
        'np.einsum("{subscripts}", {args})',
        fields=lambda a: {"subscripts": a.spec},
        xp=Spelling('_einsum("{subscripts}", {args})', helper="einsum"),
    ),
    "swap01": Spelling("np.swapaxes({0}, 0, 1)", xp=_xp_swap01),
    # adjoints of a stack of matrix products (batched matmul)
    "swapaxes": Spelling(
        "np.swapaxes({0}, -1, -2)", xp=Spelling("xp.matrix_transpose({0})")
    ),
    "tensordot": Spelling(
        "np.tensordot({0}, {1}, axes=({left}, {right}))",
        fields=lambda a: {"left": str(list(a.left)), "right": str(list(a.right))},
    ),
    # ones(shape), zeros(shape): constants of a shape written from dims
    "ones": Spelling(
        "np.ones({0}{dtype})", xp=Spelling("xp.ones({0}, dtype={float}{device})")
    ),
    # rows lo:hi of an array, in a threaded kernel's worker (`threads.py`)
    "rows": Spelling("{0}[{rows}]", ATOM, (ATOM,), fields=lambda a: {"rows": a.name}),
}
assert not RULES.keys() & PLUMBING.keys()
#: Helpers that call other helpers (`templates/helper_<name>.py.jinja`).
HELPERS_NEED: dict[str, tuple[str, ...]] = {"gelu": ("erf",)}

#: Piecewise-constant ops: their derivative is zero wherever it exists, so the
#: derivation passes nothing through them (a mask's condition gets no gradient).
STEPWISE = frozenset(
    {"gt", "ge", "lt", "le", "eq", "ne", "and_", "or_", "not_", "sign", "as_float"}
)


#: What the derivatives are where the true derivative does not exist, for each op
#: that has such points: one row per op, `(op as written in a spec, convention)`.
#: A generated module's header lists the rows of the ops it uses; the README has
#: the table, and tests/test_explain.py checks every row against generated code.
CONVENTIONS: dict[str, tuple[str, str]] = {
    "relu": (
        "relu",
        "relu'(0) = 0, as in the article (the step function with H(0) = 0)",
    ),
    "abs": ("abs", "abs'(0) = sign(0) = 0"),
    "maximum": (
        "max",
        "at a tie a == b the whole gradient goes to one operand: a constant one if"
        " there is one (so max(0, z) is relu, 0 at z = 0), else the first",
    ),
    "minimum": ("min", "at a tie, as max: a constant operand, else the first"),
    "sqrt": (
        "sqrt",
        "sqrt'(0) = 1/(2*0) = inf: the gradient of sqrt(sum(x**2)) at x = 0 is nan"
        " (inf * 0), not 0 (norm(x)'s is 0)",
    ),
    "norm": (
        "norm",
        "norm'(x) = x / norm(x), taken as 0 at x = 0 (the closed form's division"
        " by norm(x) is by 1 there)",
    ),
    "std": (
        "std",
        "std'(x) = (x - mean(x)) / (count * std(x)), taken as 0 where std(x) = 0"
        " (the closed form's division by std(x) is by 1 there)",
    ),
    "pow": (
        "a**b",
        "d(a**b)/db = a**b * log(a), taken as 0 at a = 0 (xlogy);"
        " d(a**b)/da = b * a**(b - 1), inf at a = 0 when b < 1",
    ),
}


def spelling(op: str) -> Spelling:
    """The numpy spelling of any op, differentiable or not."""
    rule = RULES.get(op)
    return rule.spelling if rule is not None else PLUMBING[op]


# --- compositions: functions a spec calls that are built from the ops above -----------
# Each lowers to its numerically stable form; the derivation never sees them.


def _mean(ops: Ops, x: Node) -> Node:
    return ops.reduce("mean", x, None)


def mse(ops: Ops, a: Node, y: Node) -> Node:
    # mse(a, y) = mean((a - y)^2)
    return _mean(ops, ops.call("square", ops.sub(a, y)))


def binary_cross_entropy_with_logits(ops: Ops, z: Node, y: Node) -> Node:
    # -mean(y log sigmoid(z) + (1 - y) log sigmoid(-z)) = mean(softplus(z) - y z):
    # finite for every z
    return _mean(ops, ops.sub(ops.call("softplus", z), ops.mul(y, z)))


def huber(ops: Ops, r: Node, delta: Node) -> Node:
    # mean of r^2/2 where |r| <= delta, else delta (|r| - delta/2)
    size = ops.call("abs", r)
    half = ops.const(0.5)
    quadratic = ops.mul(half, ops.call("square", r))
    linear = ops.mul(delta, ops.sub(size, ops.mul(half, delta)))
    inside = ops.compare("le", size, delta)
    return _mean(ops, ops.make("where", inside, quadratic, linear))


def cross_entropy(ops: Ops, logits: Node, labels: Node, axis: Axis) -> Node:
    # integer labels: -mean(log_softmax(z)[labels]) along the class axis, its
    # gradient (softmax(z) - onehot) / N with the one-hot written by index;
    # probabilities of the logits' shape: -mean(sum(Y log_softmax(z), axis))
    log_p = ops.make("log_softmax", logits, attrs=axis)
    assert axis.axes is not None
    (k,) = axis.axes
    if labels.op == "iinput":
        picked = ops.make(
            "take_along", log_p, labels, attrs=Index((), k), shape=labels.shape
        )
        return ops.neg(_mean(ops, picked))
    return ops.neg(_mean(ops, ops.reduce("sum", ops.mul(labels, log_p), k)))


def one_hot(ops: Ops, ids: Node, size: Node) -> Node:
    # one_hot(y, k)[..., j] = [y == j]: a float matrix (not differentiable)
    k: Dim = size.name if size.op == "dim" else int(size.value)
    return ops.make("one_hot", ids, ops.dimension(k), shape=(*ids.shape, k))


def diag(ops: Ops, s: Node) -> Node:
    # the diagonal of a square matrix, of each matrix of a stack: the `diag` op
    # along the last two axes
    return ops.make("diag", s, attrs=Axes((s.rank - 2, s.rank - 1)))


def trace(ops: Ops, s: Node) -> Node:
    # trace(S) = sum(diag(S)), of each matrix of a stack
    diagonal = diag(ops, s)
    return ops.reduce("sum", diagonal, None if s.rank == 2 else s.rank - 2)


def ones(ops: Ops, shape: Shape) -> Node:
    # a constant array of ones, its shape written from dims: ones([N, 3])
    return ops.make("ones", ops.shape_literal(shape), shape=shape)


def zeros(ops: Ops, shape: Shape) -> Node:
    return ops.make("zeros", ops.shape_literal(shape), shape=shape)


@dataclass(frozen=True)
class Composition:
    arity: int
    build: Callable[..., Node]
    ids: int | None = None  # the operand that is integer ids (`one_hot`'s)
    size: int | None = None  # the operand that is a dim or a positive integer
    shape: int | None = None  # the operand that is a shape, `[B, T * h]`
    axis: str | None = None  # takes `axis=` ("last" by default), passed to `build`
    keepdims: bool = False


COMPOSITIONS: dict[str, Composition] = {
    "mse": Composition(2, mse),
    "binary_cross_entropy_with_logits": Composition(
        2, binary_cross_entropy_with_logits
    ),
    "huber": Composition(2, huber),
    "cross_entropy": Composition(2, cross_entropy, axis="last"),
    "one_hot": Composition(2, one_hot, ids=0, size=1),
    "diag": Composition(1, diag),
    "trace": Composition(1, trace),
    "ones": Composition(1, ones, shape=0),
    "zeros": Composition(1, zeros, shape=0),
}


#: Names a spec calls an op by besides its own (max and min are numpy's maximum and
#: minimum, which a spec calls only by the short names).
ALIASES = {"max": "maximum", "min": "minimum", "dot": "matmul"}
_ONLY_BY_ALIAS = frozenset({"maximum", "minimum", "amax", "amin"})
#: Names whose one-argument call is another op: max(x) reduces, max(a, b) compares.
_ONE_ARGUMENT = {"max": "amax", "min": "amin"}


def one_argument_form(name: str) -> str | None:
    """The op a one-argument call of `name` means, if it differs from its usual op."""
    return _ONE_ARGUMENT.get(name)


def functions() -> dict[str, str]:
    """The names a spec may call, mapped to ops: every `user` rule and the aliases.
    Read from the table each time, so a rule added to `RULES` is callable at once."""
    found = {op: op for op, rule in RULES.items() if rule.user}
    found.update(ALIASES)
    found.update({name: name for name in COMPOSITIONS})
    return {name: op for name, op in found.items() if name not in _ONLY_BY_ALIAS}
