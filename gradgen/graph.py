"""The expression graph: frozen nodes with their op, operands, shape and attributes.

Nodes carry no behaviour (the rules live in `rules.py`). A `Graph` hash-conses them:
asking twice for the same op on the same operands returns the same node, which is
common-subexpression elimination for free and keeps node ids (creation order) a
deterministic topological order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from .spec import Dim, Shape

__all__ = [
    "LEAVES",
    "Attrs",
    "Axes",
    "Axis",
    "Count",
    "Dim",
    "Exponent",
    "Graph",
    "Index",
    "Name",
    "Node",
    "Permutation",
    "Position",
    "Shape",
    "Subscripts",
    "TensorAxes",
    "Value",
    "ancestors",
    "attr",
    "leaves_of",
]

# -- an op's attributes: what it needs besides its operands, typed ---------------------


@dataclass(frozen=True)
class Name:
    """The name of a leaf: an input, a param or a dim."""

    name: str


@dataclass(frozen=True)
class Value:
    """The number a `const` holds."""

    value: float


@dataclass(frozen=True)
class Exponent:
    """k in `a ** k` (`powc`)."""

    k: float


@dataclass(frozen=True)
class Axis:
    """The axes a reduction (or a softmax) runs along, counted from 0 in the
    operand's shape; None: every axis. `keepdims` keeps them, with size 1."""

    axes: tuple[int, ...] | None
    keepdims: bool = False


@dataclass(frozen=True)
class Axes:
    """The axes summed over (`sum_axes`, `sum_keep`)."""

    axes: tuple[int, ...]


@dataclass(frozen=True)
class Position:
    """An index along the first axis (`index`), an axis to insert (`expand_dims`,
    `stack`), the axis arrays are joined along (`concat`), or which result a `copy`
    is for (two copies of one value stay two arrays)."""

    i: int


@dataclass(frozen=True)
class Permutation:
    """The order of the axes after a transpose: `transpose(x, (1, 0, 2))`; `.T`
    and the forward-mode `permute` of a tangent's value axes."""

    perm: tuple[int, ...]


@dataclass(frozen=True)
class TensorAxes:
    """The axes `np.tensordot` sums over: `left` of its first operand against
    `right` of its second, pairwise."""

    left: tuple[int, ...]
    right: tuple[int, ...]


@dataclass(frozen=True)
class Count:
    """How many axes are added (`trail`, `lift`) or listed (`shape`)."""

    count: int


@dataclass(frozen=True)
class Index:
    """A numpy index `x[...]`, one item per axis it consumes or adds, each a text
    over the op's operands: `{1}` (an integer index), `:`, `{1}:`, `:{2}`, `None`.
    `axis` is where an `arange` pick or a class axis runs (`take_along`)."""

    items: tuple[str, ...] = ()
    axis: int = 0


@dataclass(frozen=True)
class Subscripts:
    """An einsum's subscripts, `"ij,jk->ik"`."""

    spec: str


Attrs = (
    Name
    | Value
    | Exponent
    | Axis
    | Axes
    | Position
    | Count
    | Subscripts
    | Index
    | Permutation
    | TensorAxes
)
A = TypeVar(
    "A",
    Name,
    Value,
    Exponent,
    Axis,
    Axes,
    Position,
    Count,
    Subscripts,
    Index,
    Permutation,
    TensorAxes,
)


@dataclass(frozen=True, eq=False)
class Node:
    id: int
    op: str
    args: tuple[Node, ...]
    shape: Shape
    attrs: Attrs | None = None

    def __hash__(self) -> int:
        return self.id

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    @property
    def value(self) -> float:
        """The number held by a `const` node."""
        return attr(self, Value).value

    @property
    def name(self) -> str:
        """The name held by a leaf (`input`, `param`, `dim`)."""
        return attr(self, Name).name


def attr(node: Node, kind: type[A]) -> A:
    """The node's attributes, of the kind its op takes."""
    found = node.attrs
    assert isinstance(found, kind), f"{node.op} has {found!r}, not {kind.__name__}"
    return found


LEAVES = frozenset({"input", "iinput", "param", "const", "dim"})


class Graph:
    """A hash-consed DAG of nodes; node ids give a topological order."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._interned: dict[tuple[object, ...], Node] = {}

    def node(
        self,
        op: str,
        args: Iterable[Node],
        shape: Shape,
        attrs: Attrs | None = None,
    ) -> Node:
        args = tuple(args)
        key = (op, tuple(a.id for a in args), attrs)
        found = self._interned.get(key)
        if found is not None:
            return found
        made = Node(len(self.nodes), op, args, shape, attrs)
        self.nodes.append(made)
        self._interned[key] = made
        return made

    def find(self, op: str, args: Iterable[Node], attrs: Attrs | None) -> Node | None:
        """The node op(args) if the graph already has it."""
        return self._interned.get((op, tuple(a.id for a in args), attrs))


def ancestors(roots: Iterable[Node]) -> list[Node]:
    """Every node the roots depend on (roots included), in topological (id) order."""
    seen: dict[int, Node] = {}
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen[n.id] = n
        stack.extend(n.args)
    return [seen[i] for i in sorted(seen)]


def leaves_of(roots: Iterable[Node], op: str) -> set[str]:
    """Names of the leaves of kind `op` (e.g. 'param') that the roots depend on."""
    return {n.name for n in ancestors(roots) if n.op == op}
