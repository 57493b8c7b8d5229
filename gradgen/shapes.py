"""Shape inference with symbolic dimensions, following numpy's rules.

A shape is a tuple of dims; a dim is a name from the spec (`N`) or an integer. Two
dims agree when they are equal; a 1 stretches to match, as in numpy broadcasting.
Every function raises `ShapeError` with a message for the caller to locate.
"""

from __future__ import annotations

import ast
from typing import Any

from .graph import Dim, Shape


class ShapeError(ValueError):
    pass


def show(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast(a: Shape, b: Shape, op: str) -> Shape:
    """numpy broadcasting of two shapes, dims aligned from the right."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"shapes {show(a)} and {show(b)} do not broadcast for `{op}`"
                f" ({da} vs {db})"
            )
    return tuple(reversed(out))


def matmul(a: Shape, b: Shape) -> Shape:
    """numpy `@` (`np.matmul`): [m,k]@[k,n]=[m,n], [m,k]@[k]=[m], [k]@[k,n]=[n],
    [k]@[k]=[]; operands of rank 3 or more are stacks of matrices over their leading
    (batch) axes, which broadcast: [B,T,d]@[d,e]=[B,T,e], [B,m,k]@[B,k,n]=[B,m,n]."""
    if not a or not b:
        raise ShapeError(
            f"`@` needs operands of rank 1 or more, got {show(a)} @ {show(b)}"
        )
    inner = b[-2] if len(b) >= 2 else b[0]
    if a[-1] != inner:
        raise ShapeError(
            f"shapes {show(a)} and {show(b)} do not match for `@`"
            f" ({a[-1]} vs {inner})"
        )
    if len(a) <= 2 and len(b) <= 2:
        return a[:-1] + b[1:]
    try:
        batch = broadcast(a[:-2], b[:-2], "@")
    except ShapeError:
        pairs = zip(reversed(a[:-2]), reversed(b[:-2]), strict=False)
        da, db = next((x, y) for x, y in pairs if x != y and 1 not in (x, y))
        raise ShapeError(
            f"the batch axes of {show(a)} and {show(b)} do not broadcast for `@`"
            f" ({da} vs {db})"
        ) from None
    return batch + a[-2:-1] + (b[-1:] if len(b) >= 2 else ())


def reduce(shape: Shape, axes: tuple[int, ...] | None, keepdims: bool) -> Shape:
    """The shape after reducing `axes` (all of them for None); the parser has
    checked them against the rank."""
    gone = range(len(shape)) if axes is None else axes
    if keepdims:
        return tuple(1 if i in gone else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in gone)


def crossed(
    a: Shape,
    b: Shape,
    new_a: frozenset[int] = frozenset(),
    new_b: frozenset[int] = frozenset(),
) -> Dim | None:
    """The dim that broadcasting `a` against `b` pairs with itself, or None.

    numpy's silent bug: `w: [n, 1]` makes `X @ w` a column [N, 1], and `X @ w - y`
    with `y: [N]` is [N, N], every residual against every target. The pattern: a
    dim that one operand has along one axis and the other operand along another
    axis, each axis stretched over a 1 (or a missing axis) of the other operand,
    so the result holds that dim twice, an array larger than either operand along
    it. Only when the operands' ranks differ: the vector was lifted to a row
    implicitly. Legitimate broadcasts are left alone: a scalar; a bias row
    ([N, h] + [h]); a per-row statistic (`x - mean(x, axis=1, keepdims=True)`,
    [N, k] - [N, 1]); an outer product of different dims ([N, 1] * [k]); and a
    pairwise table written as such: with both shapes explicit (`x - x.T`,
    [N, 1] - [1, N]), or with the new axis written with `None` (`d[:, None] * d`,
    `X[:, None, :] - X`). `new_a` and `new_b` are the axes of `a` and `b` written
    with `None`, counted from the end (-1 the last): a 1 there stretched over the
    other operand's dim is deliberate.
    """
    if len(a) == len(b):
        return None
    rank = max(len(a), len(b))
    only_a: list[Dim] = []  # dims along axes that only `a` brings
    only_b: list[Dim] = []
    for i in range(1, rank + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != 1 and db == 1 and -i not in new_b:
            only_a.append(da)
        elif db != 1 and da == 1 and -i not in new_a:
            only_b.append(db)
    return next((d for d in only_a if d in only_b), None)


# --- derived dims: the length of `x[1:]` is `N - 1`, of a reshape `T*h` ----------------
# A dim that is not a spec's name is kept as text over names and integers under
# `+ - *` (`ops.dimension` turns it into nodes); sympy decides equalities of them.


def _symbolic(d: Dim) -> Any:
    import sympy as sp

    if isinstance(d, int):
        return sp.Integer(d)
    return _dim_tree(ast.parse(d, mode="eval").body)


def _dim_tree(node: ast.expr) -> Any:
    import sympy as sp

    if isinstance(node, ast.Name):
        return sp.Symbol(node.id, positive=True, integer=True)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sp.Integer(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_dim_tree(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = node.right
        assert isinstance(exponent, ast.Constant) and type(exponent.value) is int
        return _dim_tree(node.left) ** exponent.value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
        left, right = _dim_tree(node.left), _dim_tree(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        return left - right if isinstance(node.op, ast.Sub) else left * right
    raise ValueError(f"not a dim: {ast.unparse(node)}")


def out_of_range(index: str, length: Dim) -> bool:
    """Whether an index written over dims and integers (`T`, `N + 1`, `-N - 1`) is
    out of range for an axis of `length` whatever the sizes of the dims: at least
    the length, or below minus the length, identically."""
    try:
        i, n = _symbolic(index), _symbolic(length)
    except (ValueError, SyntaxError):
        return False
    return bool((i - n).is_nonnegative or (i + n).is_negative)


def derived(expr: Any) -> Dim:
    """A sympy expression over dims as a dim: an int, a spec's name, or the
    canonical text of the expanded polynomial (`T*h`, `M + N`)."""
    import sympy as sp

    expanded = sp.expand(expr)
    if expanded.is_Integer:
        return int(expanded)
    return str(expanded)


def dim_of_text(text: str) -> Dim:
    """A dim written as text over dims' names and integers under + - *: `T * h`
    becomes `T*h`, `2 * 3` becomes 6, a name stays itself."""
    return derived(_symbolic(text))


def count(shape: Shape) -> Any:
    """The number of elements of an array of this shape, as a sympy expression."""
    import sympy as sp

    return sp.expand(sp.Mul(*(_symbolic(d) for d in shape)))


def same_count(a: Shape, b: Shape) -> bool:
    """Whether two shapes have the same number of elements for every size of the
    dims (the difference of the products expands to 0)."""
    return bool(count(a) - count(b) == 0)


def quotient(total: Any, known: Shape) -> Dim | None:
    """The dim `d` with count(known) * d == total identically, if it is a
    polynomial in the dims with integer coefficients (a reshape's -1)."""
    import sympy as sp

    q = sp.cancel(total / count(known))
    if sp.fraction(q)[1] != 1:
        return None
    if not q.free_symbols:
        return int(q) if q.is_Integer and q > 0 else None
    poly = sp.Poly(q, *sorted(q.free_symbols, key=str))
    if not all(c.is_Integer for c in poly.coeffs()):
        return None
    return derived(q)


def dim_sum(dims: tuple[Dim, ...]) -> Dim:
    """The length of arrays joined along an axis: `N + M`, `5`."""
    import sympy as sp

    return derived(sp.Add(*(_symbolic(d) for d in dims)))
