"""Expression strings -> graph nodes, through `ast.parse` and an allow-list.

Nothing from a spec is ever evaluated: the text is parsed into Python's syntax tree
and only the constructs listed here are turned into graph nodes; anything else is an
error located at the offending character of the YAML file.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

from .errors import Location, did_you_mean
from .graph import Node
from .ops import Ops
from .rules import FUNCTIONS
from .shapes import ShapeError, show

MAX_LENGTH = 10_000  # characters in one expression
MAX_DEPTH = 64  # nesting of the syntax tree

_BINOPS: dict[type[ast.operator], tuple[str, str]] = {
    ast.Add: ("add", "+"),
    ast.Sub: ("sub", "-"),
    ast.Mult: ("mul", "*"),
    ast.Div: ("div", "/"),
    ast.Pow: ("pow", "**"),
    ast.MatMult: ("matmul", "@"),
}

#: Calls with their allowed operand counts (the axis keyword aside).
_ARITY: dict[str, int] = {name: 1 for name in FUNCTIONS} | {"max": 2, "min": 2, "dot": 2}
_REDUCTIONS = frozenset({"sum", "mean"})

_REFUSED: dict[type[ast.AST], str] = {
    ast.Subscript: "subscripts (`x[i]`) are not allowed in expressions",
    ast.Lambda: "lambdas are not allowed in expressions",
    ast.ListComp: "comprehensions are not allowed in expressions",
    ast.SetComp: "comprehensions are not allowed in expressions",
    ast.DictComp: "comprehensions are not allowed in expressions",
    ast.GeneratorExp: "comprehensions are not allowed in expressions",
    ast.Compare: "comparisons are not allowed in expressions",
    ast.BoolOp: "`and`/`or` are not allowed in expressions",
    ast.IfExp: "conditional expressions are not allowed in expressions",
    ast.JoinedStr: "strings are not allowed in expressions",
    ast.Dict: "dicts are not allowed in expressions",
    ast.Set: "sets are not allowed in expressions",
    ast.Tuple: "tuples are not allowed in expressions (a vector is `[a, b]`)",
    ast.Starred: "`*` unpacking is not allowed in expressions",
    ast.NamedExpr: "`:=` is not allowed in expressions",
    ast.Await: "`await` is not allowed in expressions",
    ast.Yield: "`yield` is not allowed in expressions",
    ast.YieldFrom: "`yield` is not allowed in expressions",
}


class ExpressionError(ValueError):
    """A problem at character `offset` of the expression text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class Parser:
    """Turns one expression into nodes, with names resolved in `scope`.

    `scope` maps the spec's names (inputs, params, earlier `define` entries) to
    nodes; `dims` are the dimension names, usable as numbers.
    """

    def __init__(
        self,
        ops: Ops,
        scope: Mapping[str, Node],
        dims: Mapping[str, Location],
        locate: Callable[[int], Location],
    ) -> None:
        self.ops = ops
        self.scope = scope
        self.dims = dims
        self.locate = locate
        self.text = ""
        self._line_starts: list[int] = [0]

    def parse(self, text: str) -> Node:
        if len(text) > MAX_LENGTH:
            raise ExpressionError(
                f"the expression is {len(text)} characters long; the limit is {MAX_LENGTH}", 0
            )
        if not text.strip():
            raise ExpressionError("empty expression", 0)
        self.text = text
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        try:
            tree = ast.parse(text.strip("\n"), mode="eval")
        except SyntaxError as e:
            offset = self._offset(e.lineno or 1, (e.offset or 1) - 1, byte=False)
            raise ExpressionError(f"invalid expression: {e.msg}", offset) from None
        except (RecursionError, MemoryError):
            raise ExpressionError("the expression is nested too deeply", 0) from None
        except ValueError as e:  # null bytes, over-long integer literals
            raise ExpressionError(f"invalid expression: {e}", 0) from None
        return self._node(tree.body, 0)

    # -- positions -------------------------------------------------------------------

    def _offset(self, lineno: int, col: int, byte: bool = True) -> int:
        start = self._line_starts[min(lineno, len(self._line_starts)) - 1]
        if byte:  # ast columns count UTF-8 bytes
            line_end = self.text.find("\n", start)
            line = self.text[start : line_end if line_end >= 0 else len(self.text)]
            col = len(line.encode()[:col].decode(errors="ignore"))
        return start + col

    def _at(self, node: ast.AST) -> int:
        return self._offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def _operator_at(self, node: ast.BinOp, symbol: str) -> int:
        """Offset of the operator symbol between a binary op's operands."""
        left_end = self._offset(node.left.end_lineno or 1, node.left.end_col_offset or 0)
        found = self.text.find(symbol, left_end, self._at(node.right))
        return found if found >= 0 else self._at(node)

    # -- the allow-list --------------------------------------------------------------

    def _node(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError("the expression is nested too deeply", self._at(node))
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            message = _REFUSED.get(type(node), f"`{type(node).__name__}` is not allowed in expressions")
            if isinstance(node, ast.Constant):
                message = "strings and other literals are not allowed in expressions"
            raise ExpressionError(message, self._at(node))
        self.ops.loc = self.locate(self._at(node))
        return method(node, depth + 1)  # type: ignore[no-any-return]

    def _Constant(self, node: ast.Constant, depth: int) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExpressionError(
                "strings and other literals are not allowed in expressions"
                if not isinstance(value, bool)
                else "booleans are not allowed in expressions",
                self._at(node),
            )
        try:
            number = float(value)
        except OverflowError:
            raise ExpressionError("the number is too large", self._at(node)) from None
        if number != number or abs(number) == float("inf"):
            raise ExpressionError("the number is too large", self._at(node))
        return self.ops.const(number)

    def _Name(self, node: ast.Name, depth: int) -> Node:
        name = node.id
        if name in self.scope:
            return self.scope[name]
        if name in self.dims:
            return self.ops.leaf("dim", name, ())
        if name in FUNCTIONS:
            raise ExpressionError(f"`{name}` is a function; call it as `{name}(...)`", self._at(node))
        known = [*self.scope, *self.dims]
        raise ExpressionError(f"undefined name `{name}`{did_you_mean(name, known)}", self._at(node))

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Node:
        operand = self._node(node.operand, depth)
        if isinstance(node.op, ast.USub):
            return self.ops.neg(operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        raise ExpressionError(f"the operator `{_unary(node.op)}` is not allowed", self._at(node))

    def _BinOp(self, node: ast.BinOp, depth: int) -> Node:
        kind = _BINOPS.get(type(node.op))
        if kind is None:
            raise ExpressionError(
                f"the operator `{type(node.op).__name__}` is not allowed", self._at(node)
            )
        op, symbol = kind
        left = self._node(node.left, depth)
        right = self._node(node.right, depth)
        where = self._operator_at(node, symbol)
        self.ops.loc = self.locate(where)
        try:
            return self.ops.pow(left, right) if op == "pow" else self.ops.make(op, left, right)
        except ShapeError as e:
            raise ExpressionError(str(e), where) from None

    def _Attribute(self, node: ast.Attribute, depth: int) -> Node:
        if node.attr != "T":
            end = self._offset(node.end_lineno or 1, node.end_col_offset or 0)
            raise ExpressionError(
                f"attribute access `.{node.attr}` is not allowed (only `.T`)",
                end - len(node.attr) - 1,
            )
        return self.ops.transpose(self._node(node.value, depth))

    def _List(self, node: ast.List, depth: int) -> Node:
        if not node.elts:
            raise ExpressionError("an empty vector `[]` has no value", self._at(node))
        items = [self._node(e, depth) for e in node.elts]
        for e, item in zip(node.elts, items, strict=True):
            if item.rank != 0:
                raise ExpressionError(
                    f"a vector literal takes scalars; this element has shape {show(item.shape)}",
                    self._at(e),
                )
        self.ops.loc = self.locate(self._at(node))
        return self.ops.stack(items)

    def _Call(self, node: ast.Call, depth: int) -> Node:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError("only the listed functions can be called", self._at(node))
        name = node.func.id
        if name not in FUNCTIONS:
            hint = did_you_mean(name, FUNCTIONS)
            if name in self.scope or name in self.dims:
                raise ExpressionError(f"`{name}` is not a function", self._at(node))
            raise ExpressionError(f"unknown function `{name}`{hint}", self._at(node))
        axis = self._axis(name, node)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError("`*` unpacking is not allowed in expressions", self._at(node))
        want = _ARITY[name]
        if len(node.args) != want:
            raise ExpressionError(
                f"`{name}` takes {want} argument{'s' if want > 1 else ''}, got {len(node.args)}",
                self._at(node),
            )
        args = [self._node(a, depth) for a in node.args]
        self.ops.loc = self.locate(self._at(node))
        op = FUNCTIONS[name]
        try:
            if name in _REDUCTIONS:
                return self.ops.reduce(op, args[0], axis)
            return self.ops.make(op, *args)
        except ShapeError as e:
            raise ExpressionError(str(e), self._at(node)) from None

    def _axis(self, name: str, node: ast.Call) -> int | None:
        axis: int | None = None
        for kw in node.keywords:
            at = self._at(kw.value) if kw.arg is None else self._at(kw)
            if kw.arg != "axis" or name not in _REDUCTIONS:
                shown = "**" if kw.arg is None else kw.arg
                raise ExpressionError(
                    f"`{name}` takes no keyword argument `{shown}`"
                    + (" (only `axis`, for sum and mean)" if kw.arg != "axis" else ""),
                    at,
                )
            value = kw.value
            if not (
                isinstance(value, ast.Constant)
                and type(value.value) is int
                and value.value in (0, 1)
            ):
                raise ExpressionError("`axis` must be 0 or 1", self._at(value))
            axis = value.value
        return axis


def _unary(op: ast.unaryop) -> str:
    return {ast.Not: "not", ast.Invert: "~"}.get(type(op), type(op).__name__)
