"""Scalar calculus with sympy: the local derivatives of element-wise functions.

Each element-wise function in the rule table is defined by a sympy expression in `x`.
`local_derivative` differentiates it and, where the function is invertible, rewrites
the derivative in terms of the function's own output `y` (so `sigmoid' = y*(1 - y)`,
`exp' = y`, `tanh' = 1 - y**2`): the backward pass then reuses the forward value
instead of recomputing it. The cheaper form (by sympy's operation count) wins.

`to_graph` turns such a sympy expression back into graph nodes, so derivatives and
the forward pass share one representation, one simplifier and one printer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

import sympy as sp

if TYPE_CHECKING:
    from .graph import Node
    from .ops import Ops

X = sp.Symbol("x", real=True)
Y = sp.Symbol("y", positive=True)


#: Placeholder for the stable logistic function inside a hand-given derivative.
SIGMOID = sp.Function("sigmoid")


@cache
def local_derivative(
    definition: sp.Expr, inverse: sp.Expr | None, stable: sp.Expr | None = None
) -> sp.Expr:
    """d definition / dx, in terms of x or (when cheaper) of the output y.

    `stable` is a numerically stable form of the derivative, for functions whose
    sympy derivative overflows (softplus' = e^x/(1 + e^x) is nan for large x); it is
    accepted only if sympy proves it equal to the derivative.
    """
    dx = sp.diff(definition, X)
    if stable is not None:
        as_sympy = stable.replace(SIGMOID, lambda u: 1 / (1 + sp.exp(-u)))
        if sp.simplify(as_sympy - dx) != 0:
            raise ValueError(f"{stable} is not the derivative of {definition}")
        return stable
    # Kinks follow the article: relu'(0) = 0, i.e. the Heaviside step with H(0) = 0.
    dx = dx.replace(sp.Heaviside, lambda arg, *_: sp.Heaviside(arg, 0))
    if inverse is None:
        return dx
    dy = sp.simplify(dx.subs(X, inverse))
    if dy.has(X) or _cost(dy) >= _cost(dx):
        return dx
    return dy


def value_at(definition: sp.Expr, x: float) -> float | None:
    """An element-wise function `definition` (in X) at a number, or None where it
    has no finite real value there (`log(0)`, `sqrt(-1)`)."""
    try:
        value = complex(sp.N(definition.subs(X, x)))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if value.imag or not math.isfinite(value.real):
        return None
    return value.real


def _cost(expr: sp.Expr) -> int:
    """Arithmetic operations, and a function call (exp, tanh) worth ten of them."""
    return int(sp.count_ops(expr)) + 10 * len(expr.atoms(sp.Function))


def to_graph(expr: sp.Expr, x: Node, y: Node, ops: Ops) -> Node:
    """Build graph nodes computing `expr`, with the symbols x, y bound to nodes."""
    if expr == X:
        return x
    if expr == Y:
        return y
    if expr.is_number:  # 2, 1/2, sqrt(pi)
        return ops.const(float(expr))
    if expr.is_Add:
        terms = [to_graph(t, x, y, ops) for t in _ordered(expr.args)]
        out = terms[0]
        for t in terms[1:]:
            out = ops.add(out, t)
        return out
    if expr.is_Mul:
        coeff, rest = expr.as_coeff_mul()
        numer = [f for f in rest if not _is_reciprocal(f)]
        denom = [1 / f for f in rest if _is_reciprocal(f)]
        top = ops.const(float(coeff)) if coeff != 1 or not numer else None
        for f in _ordered(numer):
            g = to_graph(f, x, y, ops)
            top = g if top is None else ops.mul(top, g)
        assert top is not None
        for f in _ordered(denom):
            top = ops.div(top, to_graph(f, x, y, ops))
        return top
    if expr.is_Pow:
        base, exp = expr.args
        if exp == sp.Rational(1, 2):
            return ops.call("sqrt", to_graph(base, x, y, ops))
        if exp.is_Number:
            return ops.powc(to_graph(base, x, y, ops), float(exp))
    if isinstance(expr, sp.Heaviside):
        # H(u) with H(0) = 0: the mask u > 0.
        return ops.gt(to_graph(expr.args[0], x, y, ops), ops.const(0.0))
    if expr.func == SIGMOID:
        return ops.call("sigmoid", to_graph(expr.args[0], x, y, ops))
    if isinstance(expr, sp.sign):
        return ops.sign(to_graph(expr.args[0], x, y, ops))
    name = _FUNCTIONS.get(type(expr))
    if name is not None:
        return ops.call(name, to_graph(expr.args[0], x, y, ops))
    raise NotImplementedError(f"gradgen cannot print the sympy expression {expr}")


def _is_reciprocal(f: sp.Expr) -> bool:
    return bool(f.is_Pow and f.args[1].is_Number and f.args[1] < 0)


def _ordered(exprs: Iterable[Any]) -> list[sp.Expr]:
    """sympy's canonical argument order: stable output across runs and hash seeds."""
    found: list[sp.Expr] = sorted(exprs, key=sp.default_sort_key)
    return found


_FUNCTIONS: dict[type, str] = {
    sp.exp: "exp",
    sp.log: "log",
    sp.sin: "sin",
    sp.cos: "cos",
    sp.tanh: "tanh",
    sp.tan: "tan",
    sp.atan: "arctan",
    sp.sinh: "sinh",
    sp.cosh: "cosh",
    sp.erf: "erf",
}
