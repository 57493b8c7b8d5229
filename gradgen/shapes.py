"""Shape inference with symbolic dimensions, following numpy's rules.

A shape is a tuple of dims; a dim is a name from the spec (`N`) or an integer. Two
dims agree when they are equal; a 1 stretches to match, as in numpy broadcasting.
Every function raises `ShapeError` with a message for the caller to locate.
"""

from __future__ import annotations

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
    """numpy `@` for ranks 1 and 2: [m,k]@[k,n]=[m,n], [m,k]@[k]=[m], [k]@[k,n]=[n], [k]@[k]=[]."""
    if not a or not b or len(a) > 2 or len(b) > 2:
        raise ShapeError(
            f"`@` needs operands of rank 1 or 2, got {show(a)} @ {show(b)}"
        )
    if a[-1] != b[0]:
        raise ShapeError(
            f"shapes {show(a)} and {show(b)} do not match for `@`"
            f" ({a[-1]} vs {b[0]})"
        )
    return a[:-1] + b[1:]


def reduce(shape: Shape, axes: tuple[int, ...] | None, keepdims: bool) -> Shape:
    """The shape after reducing `axes` (all of them for None); the parser has
    checked them against the rank."""
    gone = range(len(shape)) if axes is None else axes
    if keepdims:
        return tuple(1 if i in gone else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in gone)


def crossed(a: Shape, b: Shape) -> Dim | None:
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
    pairwise table written with both shapes explicit (`x - x.T`, [N, 1] - [1, N]).
    """
    if len(a) == len(b):
        return None
    rank = max(len(a), len(b))
    only_a: list[Dim] = []  # dims along axes that only `a` brings
    only_b: list[Dim] = []
    for i in range(1, rank + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != 1 and db == 1:
            only_a.append(da)
        elif db != 1 and da == 1:
            only_b.append(db)
    return next((d for d in only_a if d in only_b), None)
