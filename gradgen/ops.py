"""`Ops`: one constructor per operation, used by the parser and by the rules.

Each constructor checks the operands' shapes with the op's rule (raising
`ShapeError`), lets `simplify.fold` rewrite the node (constant folding, identities,
small powers as products), and interns the result in the graph.
"""

from __future__ import annotations

import ast

from .graph import (
    Attrs,
    Axes,
    Axis,
    Count,
    Dim,
    Exponent,
    Graph,
    Name,
    Node,
    Permutation,
    Position,
    Shape,
    Subscripts,
    TensorAxes,
    Value,
)
from .rules import RULES
from .shapes import ShapeError, broadcast
from .simplify import fold


class Ops:
    def __init__(self, graph: Graph | None = None) -> None:
        self.graph = graph or Graph()

    def make(
        self,
        op: str,
        *args: Node,
        attrs: Attrs | None = None,
        shape: Shape | None = None,
    ) -> Node:
        if shape is None:
            rule = RULES[op]  # plumbing ops state their shape
            assert rule.shape is not None, op
            shape = rule.shape(tuple(a.shape for a in args), attrs)
        folded = fold(self, op, args, attrs, shape)
        if folded is not None:
            return folded
        return self.graph.node(op, args, shape, attrs)

    # leaves
    def leaf(self, op: str, name: str, shape: Shape) -> Node:
        return self.make(op, attrs=Name(name), shape=shape)

    def const(self, value: float) -> Node:
        return self.make("const", attrs=Value(float(value) + 0.0), shape=())

    # arithmetic
    def add(self, a: Node, b: Node) -> Node:
        return self.make("add", a, b)

    def sub(self, a: Node, b: Node) -> Node:
        return self.make("sub", a, b)

    def mul(self, a: Node, b: Node) -> Node:
        return self.make("mul", a, b)

    def div(self, a: Node, b: Node) -> Node:
        return self.make("div", a, b)

    def neg(self, a: Node) -> Node:
        return self.make("neg", a)

    def powc(self, a: Node, k: float) -> Node:
        return self.make("powc", a, attrs=Exponent(float(k)))

    def pow(self, a: Node, b: Node) -> Node:
        if b.is_const:
            broadcast(a.shape, b.shape, "**")
            return self.powc(a, b.value)
        return self.make("pow", a, b)

    def call(self, name: str, *args: Node) -> Node:
        return self.make(name, *args)

    # comparisons (masks for kinks)
    def gt(self, a: Node, b: Node) -> Node:
        return self.make("gt", a, b, shape=broadcast(a.shape, b.shape, ">"))

    def eq(self, a: Node, b: Node) -> Node:
        return self.make("eq", a, b, shape=broadcast(a.shape, b.shape, "=="))

    def ne(self, a: Node, b: Node) -> Node:
        return self.make("ne", a, b, shape=broadcast(a.shape, b.shape, "!="))

    def compare(self, op: str, a: Node, b: Node) -> Node:
        """A comparison or a logical combination of conditions (`gt`, `and_`...)."""
        return self.make(op, a, b, shape=broadcast(a.shape, b.shape, op))

    def keep_sum(self, a: Node, axes: tuple[int, ...]) -> Node:
        """np.sum(a, axis=axes, keepdims=True)."""
        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        return self.make("sum_keep", a, attrs=Axes(axes), shape=shape)

    # linear algebra and reductions
    def matmul(self, a: Node, b: Node) -> Node:
        return self.make("matmul", a, b)

    def transpose(self, a: Node) -> Node:
        return self.make("transpose", a)

    def reduce(self, op: str, a: Node, axis: Axis | int | None) -> Node:
        """A reduction along `axis`: an `Axis`, one axis, or None for all of them."""
        if not isinstance(axis, Axis):
            axis = Axis(None if axis is None else (axis,))
        return self.make(op, a, attrs=axis)

    def stack(self, items: list[Node]) -> Node:
        first = items[0].shape
        for item in items:
            if item.shape != first:
                raise ShapeError(
                    "a vector literal needs elements of one shape"
                    f" (got {list(item.shape)} and {list(first)})"
                )
        return self.make("stack", *items, shape=(len(items), *first))

    def count(self, a: Node, axes: tuple[int, ...] | None) -> Node:
        """The number of elements `mean` divides by, from the dims of `a`."""
        return self.count_of(
            a.shape if axes is None else tuple(a.shape[i] for i in axes)
        )

    # plumbing for derivatives
    def index(self, a: Node, i: int) -> Node:
        return self.make("index", a, attrs=Position(i), shape=a.shape[1:])

    def expand_dims(self, a: Node, axis: int) -> Node:
        return self.make(
            "expand_dims",
            a,
            attrs=Position(axis),
            shape=(*a.shape[:axis], 1, *a.shape[axis:]),
        )

    def outer(self, a: Node, b: Node) -> Node:
        return self.make("outer", a, b, shape=a.shape + b.shape)

    def fill(self, g: Node, like: Node) -> Node:
        """A fresh array of `like`'s shape holding `g` broadcast."""
        return self.make("fill", g, self.shape_literal(like.shape), shape=like.shape)

    def sum_axes(self, a: Node, axes: tuple[int, ...]) -> Node:
        shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
        return self.make("sum_axes", a, attrs=Axes(axes), shape=shape)

    def sign(self, a: Node) -> Node:
        return self.make("sign", a, shape=a.shape)

    # plumbing for forward mode: tangents have the param's axes appended
    def trail(self, a: Node, count: int) -> Node:
        return self.make("trail", a, attrs=Count(count), shape=a.shape + (1,) * count)

    def lift(self, t: Node, count: int) -> Node:
        return self.make("lift", t, attrs=Count(count), shape=(1,) * count + t.shape)

    def tfill(self, t: Node, like: Node, param: Node) -> Node:
        """A tangent broadcast (a view) to its full shape, like.shape + param.shape."""
        shape = like.shape + param.shape
        return self.make("tfill", t, self.shape_literal(shape), shape=shape)

    def tfull(self, t: Node, like: Node, param: Node) -> Node:
        """A fresh array of shape like.shape + param.shape holding `t` broadcast."""
        shape = like.shape + param.shape
        return self.make("tfull", t, self.shape_literal(shape), shape=shape)

    def zeros(self, like: Node, param: Node) -> Node:
        shape = like.shape + param.shape
        return self.make("zeros", self.shape_literal(shape), shape=shape)

    def eye(self, d: Dim) -> Node:
        return self.make("eye", self.dimension(d), shape=(d, d))

    def seed(self, param: Node) -> Node:
        """The identity tangent of a param: d param / d param, shape param.shape * 2."""
        if param.rank == 1:
            return self.eye(param.shape[0])
        size = "*".join(str(d) for d in param.shape)  # a label: n*h is no spec dim
        eye = self.make("eye", self.count_of(param.shape), shape=(size, size))
        return self.make(
            "reshaped", eye, self.shape_literal(param.shape * 2), shape=param.shape * 2
        )

    def dimension(self, d: Dim) -> Node:
        """A dim's size as a value: a literal, or the dim's name bound at run time;
        a derived dim (`N - 1`, the length of `x[1:]`; `T*h`, of a reshape; `M + N`,
        of a concat) as that expression over the dims' names."""
        if isinstance(d, int):
            return self.const(d)
        if d.isidentifier():
            return self.leaf("dim", d, ())
        return self._dim_expression(ast.parse(d, mode="eval").body)

    def _dim_expression(self, node: ast.expr) -> Node:
        if isinstance(node, ast.Name):
            return self.leaf("dim", node.id, ())
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return self.const(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return self.neg(self._dim_expression(node.operand))
        assert isinstance(node, ast.BinOp), ast.dump(node)
        left = self._dim_expression(node.left)
        if isinstance(node.op, ast.Pow):
            power = node.right
            assert isinstance(power, ast.Constant) and isinstance(power.value, int)
            out = left
            for _ in range(power.value - 1):
                out = self.mul(out, left)
            return out
        right = self._dim_expression(node.right)
        if isinstance(node.op, ast.Add):
            return self.add(left, right)
        if isinstance(node.op, ast.Sub):
            return self.sub(left, right)
        assert isinstance(node.op, ast.Mult), ast.dump(node)
        return self.mul(left, right)

    def shape_literal(self, shape: Shape) -> Node:
        """A shape tuple such as (N, k) for the printed code."""
        dims = [self.dimension(d) for d in shape]
        return self.make("shape", *dims, attrs=Count(len(dims)), shape=(len(dims),))

    def count_of(self, shape: Shape) -> Node:
        """The number of elements of an array of this shape."""
        out = self.const(1.0)
        for d in shape:
            out = self.mul(out, self.dimension(d))
        return out

    def einsum(self, subscripts: str, a: Node, b: Node, shape: Shape) -> Node:
        return self.make("einsum", a, b, attrs=Subscripts(subscripts), shape=shape)

    def swap01(self, t: Node) -> Node:
        return self.make("swap01", t, shape=(t.shape[1], t.shape[0], *t.shape[2:]))

    def permute(self, t: Node, perm: tuple[int, ...]) -> Node:
        """np.transpose(t, perm) (plumbing: a tangent's value axes reordered)."""
        if perm == tuple(range(len(perm))):
            return t
        shape = tuple(t.shape[i] for i in perm)
        return self.make("permute", t, attrs=Permutation(perm), shape=shape)

    def swapaxes(self, a: Node) -> Node:
        """The last two axes exchanged: a stack of matrices, each transposed."""
        shape = (*a.shape[:-2], a.shape[-1], a.shape[-2])
        return self.make("swapaxes", a, shape=shape)

    def tensordot(
        self, a: Node, b: Node, left: tuple[int, ...], right: tuple[int, ...]
    ) -> Node:
        """np.tensordot(a, b, axes=(left, right)): one BLAS call."""
        shape = tuple(d for i, d in enumerate(a.shape) if i not in left) + tuple(
            d for i, d in enumerate(b.shape) if i not in right
        )
        attrs = TensorAxes(left, right)
        return self.make("tensordot", a, b, attrs=attrs, shape=shape)

    def broadcast_to(self, a: Node, shape: Shape) -> Node:
        """A read-only view of `a` broadcast to `shape`."""
        if a.shape == shape:
            return a
        return self.make("tfill", a, self.shape_literal(shape), shape=shape)
