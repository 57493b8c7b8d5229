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
