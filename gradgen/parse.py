"""Expression strings -> graph nodes, through `ast.parse` and an allow-list.

Nothing from a spec is ever evaluated: the text is parsed into Python's syntax tree
and only the constructs listed here are turned into graph nodes; anything else is an
error located at the offending character of the YAML file.

The allow-list: numbers; the spec's names (inputs, params, earlier `define` entries,
dims); unary `-` and `+`; the binary operators `+ - * / ** @`; `.T`; vector literals
`[a, b]`; calls of gradgen's functions by name, with the keyword `axis` for `sum` and
`mean` only. Everything else (other attributes, subscripts, lambdas, comprehensions,
strings, comparisons, other keywords, undeclared names...) is refused.

Warnings are collected in `Parser.warnings`, never raised: a broadcast that pairs a
dim with itself (`[N, 1] - [N]` is [N, N]; `shapes.crossed`), located at its operator.

Resource limits keep a hostile expression cheap: its length, its nesting depth (a
long chain `a + b + c + ...` is not nesting: it is walked iteratively), and its
constant exponents; constant powers are computed here, so a huge one is refused
rather than written into the generated code.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import shapes
from .errors import WARNING, Diagnostic, Location, did_you_mean
from .graph import Axis, Dim, Index, Node, Permutation, Position, attr
from .limits import (
    MAX_EXPONENT,
    MAX_EXPRESSION_DEPTH,
    MAX_LENGTH,
    MAX_RANK,
    MAX_VECTOR,
)
from .load import control_character
from .ops import Ops
from .rules import (
    COMPOSITIONS,
    CONSTANTS,
    RULES,
    Composition,
    Rule,
    functions,
    one_argument_form,
)
from .rules import number as number_text
from .shapes import ShapeError, broadcast, crossed, show
from .simplify import MASKS, guard

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.Pow: "pow",
    ast.MatMult: "matmul",
    ast.BitAnd: "and_",
    ast.BitOr: "or_",
}
_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
    ast.Eq: "eq",
    ast.NotEq: "ne",
}
_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}


def _function_list() -> str:
    """The callable names, for messages; from the rule table, like everything the
    parser knows about calls (names, operand counts, `axis` support)."""
    return ", ".join(sorted(functions()))


def _rule_of(name: str, op: str) -> Rule | Composition:
    """What a callable name means: a composition, or the rule of its op."""
    return COMPOSITIONS.get(name) or RULES[one_argument_form(name) or op]


def _axis_list(keepdims: bool = False) -> str:
    """The functions that take `axis=` (or `keepdims=`), in table order: "sum, mean
    and logsumexp"."""
    names = [
        name
        for name, op in functions().items()
        if (rule := _rule_of(name, op)).axis is not None
        and (rule.keepdims or not keepdims)
    ]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


_COMPARISONS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Is: "is",
    ast.IsNot: "is",
    ast.In: "in",
    ast.NotIn: "not",
}
_COMPREHENSION = "comprehensions (`... for ... in ...`) are not allowed in expressions"
_REFUSED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambdas are not allowed in expressions",
    ast.ListComp: _COMPREHENSION,
    ast.SetComp: _COMPREHENSION,
    ast.DictComp: _COMPREHENSION,
    ast.GeneratorExp: _COMPREHENSION,
    ast.Compare: "comparisons are not allowed in expressions",
    ast.BoolOp: "`and`/`or` are not allowed in expressions",
    ast.IfExp: "conditional expressions (`a if c else b`) are not allowed in expressions",
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
    """A problem at character `offset` of the expression text; `name` is set when
    the problem is an undefined name (the caller may know better what it is)."""

    def __init__(self, message: str, offset: int, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.name = name


@dataclass
class Integers:
    """Which inputs are integer ids, shared by the parsers of one spec: declared
    `dtype: int`, or used as one (an index, `one_hot`'s ids, `cross_entropy`'s
    labels). An input used both as ids and as a number is an error, reported by
    `model.build` at the number."""

    declared: frozenset[str] = frozenset()
    as_ids: dict[str, Location] = field(default_factory=dict)  # first use as ids
    as_number: dict[str, Location] = field(default_factory=dict)  # first as a number


class Parser:
    """Turns one expression into nodes, with names resolved in `scope`.

    `scope` maps the spec's names (inputs, params, earlier `define` entries) to
    nodes; `dims` are the dimension names, usable as numbers; `locate` maps a
    character offset of the expression text to its place in the spec file.
    """

    def __init__(
        self,
        ops: Ops,
        scope: Mapping[str, Node],
        dims: Mapping[str, Location],
        locate: Callable[[int], Location],
        integers: Integers | None = None,
    ) -> None:
        self.ops = ops
        self.integers = integers or Integers()
        self.scope = scope
        self.dims = dims
        self.locate = locate
        self.warnings: list[Diagnostic] = []  # found while parsing, in text order
        self._written_axes: dict[Node, frozenset[int]] = {}  # `_new_axes`, memo
        self.text = ""
        self._start = 0  # where the parsed text starts (leading blanks skipped)
        self._line_starts: list[int] = [0]

    def parse(self, text: str) -> Node:
        if len(text) > MAX_LENGTH:
            raise ExpressionError(
                f"the expression is {len(text)} characters long;"
                f" the limit is {MAX_LENGTH}",
                0,
            )
        body = text.lstrip()
        if not body:
            raise ExpressionError("empty expression", 0)
        bad = control_character(text)
        if bad is not None:  # the text is copied into the module's docstring
            raise ExpressionError(
                f"the expression contains the control character"
                f" U+{ord(text[bad]):04X}",
                bad,
            )
        self.text = text
        self._start = len(text) - len(body)
        self._line_starts = [self._start]
        for i in range(self._start, len(text)):
            if text[i] == "\n":
                self._line_starts.append(i + 1)
        try:
            tree = syntax_tree(body)
        except SyntaxError as e:
            offset = self._offset(e.lineno or 1, (e.offset or 1) - 1, byte=False)
            raise ExpressionError(f"invalid expression: {e.msg}", offset) from None
        except (RecursionError, MemoryError):
            raise ExpressionError(
                "the expression is too long or nested too deeply to parse", self._start
            ) from None
        except ValueError as e:  # over-long integer literals
            raise ExpressionError(f"invalid expression: {e}", self._start) from None
        return self._node(tree.body, 0)

    # -- positions -------------------------------------------------------------------

    def _offset(self, lineno: int, col: int, byte: bool = True) -> int:
        """The offset in `text` of a position `ast` reports in the parsed body."""
        start = self._line_starts[max(min(lineno, len(self._line_starts)), 1) - 1]
        if byte:  # ast columns count UTF-8 bytes
            line_end = self.text.find("\n", start)
            line = self.text[start : line_end if line_end >= 0 else len(self.text)]
            col = len(line.encode()[:col].decode(errors="ignore"))
        return start + max(col, 0)

    def _at(self, node: ast.AST) -> int:
        return self._offset(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def _end(self, node: ast.AST) -> int:
        return self._offset(
            getattr(node, "end_lineno", None) or 1,
            getattr(node, "end_col_offset", None) or 0,
        )

    def _token_after(self, node: ast.AST, token: str, limit: int | None = None) -> int:
        """The offset of `token` after `node`, skipping closing parentheses, blanks,
        comments and line continuations (all that can come between)."""
        i = self._end(node)
        stop = len(self.text) if limit is None else limit
        while i < stop:
            if self.text.startswith(token, i):
                return i
            if self.text[i] == "#":
                newline = self.text.find("\n", i)
                i = stop if newline < 0 else newline
            i += 1
        return self._at(node)

    def _check_broadcast(self, what: str, a: Node, b: Node, where: int) -> bool:
        """Warn about a broadcast of `a` against `b` that pairs a dim with itself
        (unless the pairing goes through an axis written with `None`)."""
        dim = crossed(a.shape, b.shape, self._new_axes(a), self._new_axes(b))
        if dim is None:
            return False
        both = show(broadcast(a.shape, b.shape, what))
        self.warnings.append(
            Diagnostic(
                self.locate(where),
                f"`{what}` broadcasts {show(a.shape)} and {show(b.shape)} to {both},"
                f" pairing each of the {dim} entries of one with each of the other's;"
                " if they should line up element by element, give both the same shape",
                WARNING,
            )
        )
        return True

    def _new_axes(self, node: Node) -> frozenset[int]:
        """The size-1 axes of `node` that a spec wrote as a new axis with `None`
        (`x[:, None]`), counted from the end (-1 the last), as element-wise
        operations keep them (`exp(-x[:, None])`, `x[:, None] + c`)."""
        if 1 not in node.shape:
            return frozenset()
        found = self._written_axes.get(node)
        if found is not None:
            return found
        if node.op == "getitem":
            found = self._indexed_new_axes(node)
        elif _aligned(node.op):
            found = frozenset(
                i for a in node.args for i in self._new_axes(a) if node.shape[i] == 1
            )
        else:
            found = frozenset()
        self._written_axes[node] = found
        return found

    def _indexed_new_axes(self, node: Node) -> frozenset[int]:
        """`_new_axes` of `x[index]`: its `None`s, and the axes of `x` written with
        `None` that the index passes through whole (`:`, or after the index)."""
        x = node.args[0]
        inherited = {i + x.rank for i in self._new_axes(x)}  # counted from 0
        axes: set[int] = set()
        out = at = 0  # the result's axis, x's axis
        for item in attr(node, Index).items:
            if item == "None":  # a new axis
                axes.add(out)
                out += 1
            elif ":" in item:  # a slice: the axis stays
                if item == ":" and at in inherited:
                    axes.add(out)
                out, at = out + 1, at + 1
            else:  # an integer index: the axis goes
                at += 1
        axes.update(out + k for k in range(x.rank - at) if at + k in inherited)
        return frozenset(a - node.rank for a in axes)

    # -- the allow-list --------------------------------------------------------------

    def _node(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"the expression is nested too deeply (more than {MAX_EXPRESSION_DEPTH} levels)",
                self._at(node),
            )
        method = _HANDLERS.get(type(node))
        if method is None:
            message = _REFUSED.get(
                type(node), f"`{type(node).__name__}` is not allowed in expressions"
            )
            raise ExpressionError(message, self._at(node))
        made = method(self, node, depth)
        if made.rank > MAX_RANK:  # `x[None]` of rank 6, `stack` of them, `E[ids]`...
            where = (
                self._token_after(node.value, "[")
                if isinstance(node, ast.Subscript)
                else self._at(node)
            )
            raise ExpressionError(
                f"arrays have rank 0 to {MAX_RANK}; this one would have rank"
                f" {made.rank}: {show(made.shape)}",
                where,
            )
        return made

    def _Constant(self, node: ast.Constant, depth: int) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExpressionError(_literal_problem(value), self._at(node))
        try:
            number_ = float(value)
        except OverflowError:
            number_ = math.inf
        if not math.isfinite(number_):
            literal = self.text[self._at(node) : self._end(node)]
            raise ExpressionError(
                f"the number `{literal[:40]}` is too large for a float", self._at(node)
            )
        return self.ops.const(number_)

    def _Name(self, node: ast.Name, depth: int) -> Node:
        name = node.id
        if name in self.scope:
            found = self.scope[name]
            if found.op in ("input", "iinput"):
                self.integers.as_number.setdefault(name, self.locate(self._at(node)))
            return found
        if name in self.dims:
            return self.ops.leaf("dim", name, ())
        if name in CONSTANTS:
            return self.ops.const(CONSTANTS[name])
        if name in functions():
            raise ExpressionError(
                f"`{name}` is a function; call it as `{name}(...)`", self._at(node)
            )
        known = [*self.scope, *self.dims]
        raise ExpressionError(
            f"undefined name `{name}`{did_you_mean(name, known)}",
            self._at(node),
            name=name,
        )

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Node:
        if isinstance(node.op, ast.Not):
            raise ExpressionError(
                "the operator `not` is not allowed in expressions (write `~`)",
                self._at(node),
            )
        operand = self._node(node.operand, depth + 1)
        if isinstance(node.op, ast.Invert):
            return self.ops.make(
                "not_", self._condition(operand, "~", node), shape=operand.shape
            )
        if isinstance(node.op, ast.USub):
            return self.ops.neg(number(self.ops, operand))
        return operand

    def _condition(self, node: Node, what: str, at: ast.AST) -> Node:
        """`node`, which must be a condition: a comparison, or & | ~ of them."""
        if node.op not in MASKS:
            raise ExpressionError(
                f"`{what}` needs a condition (a comparison such as `x > 0`),"
                f" not a number of shape {show(node.shape)}",
                self._at(at),
            )
        return node

    def _Compare(self, node: ast.Compare, depth: int) -> Node:
        """`a < b`, and a chain `a < b <= c` as `(a < b) & (b <= c)`: a condition."""
        left = number(self.ops, self._node(node.left, depth + 1))
        found: Node | None = None
        before = node.left
        for op_node, right_ast in zip(node.ops, node.comparators, strict=True):
            op = _COMPARE_OPS.get(type(op_node))
            where = self._token_after(before, _COMPARISONS[type(op_node)])
            before = right_ast
            if op is None:
                raise ExpressionError(
                    f"the comparison `{_COMPARISONS[type(op_node)]}` is not allowed"
                    " in expressions",
                    where,
                )
            right = number(self.ops, self._node(right_ast, depth + 1))
            try:
                test = self.ops.compare(op, left, right)
                found = test if found is None else self.ops.compare("and_", found, test)
            except ShapeError as e:
                raise ExpressionError(str(e), where) from None
            self._check_broadcast(_COMPARISONS[type(op_node)], left, right, where)
            left = right
        assert found is not None
        return found

    def _BinOp(self, node: ast.BinOp, depth: int) -> Node:
        # a + b + c + ... nests to the left: walk that spine in a loop, so a long
        # sum costs no recursion and does not count as nesting.
        chain = [node]
        left = node.left
        while isinstance(left, ast.BinOp):
            chain.append(left)
            left = left.left
        value = self._node(left, depth)
        for op_node in reversed(chain):
            value = self._binary(op_node, value, depth)
        return value

    def _binary(self, node: ast.BinOp, left: Node, depth: int) -> Node:
        symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
        where = self._token_after(node.left, symbol, self._at(node.right))
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExpressionError(
                f"the operator `{symbol}` is not allowed in expressions", where
            )
        right = self._node(node.right, depth + 1)
        try:
            if op in ("and_", "or_"):
                made = self.ops.compare(
                    op,
                    self._condition(left, symbol, node.left),
                    self._condition(right, symbol, node.right),
                )
            else:
                left, right = number(self.ops, left), number(self.ops, right)
                if op == "div" and right.is_const and right.value == 0:
                    raise ExpressionError("division by zero", where)
                made = (
                    self._power(left, right, where)
                    if op == "pow"
                    else self.ops.make(op, left, right)
                )
        except ShapeError as e:
            raise ExpressionError(str(e), where) from None
        if op != "matmul":
            self._check_broadcast(symbol, left, right, where)
        return made

    def _power(self, base: Node, exponent: Node, where: int) -> Node:
        """`base ** exponent`; constant powers are computed, and constant exponents
        are bounded, so the generated code never holds a power that explodes."""
        if base.is_const and exponent.is_const:
            k = exponent.value
            shown = f"`{number_text(base.value)} ** {number_text(k)}`"
            try:
                value = math.pow(base.value, k)
            except OverflowError:
                raise ExpressionError(
                    f"{shown} is too large for a float", where
                ) from None
            except ValueError:
                raise ExpressionError(
                    f"{shown} has no finite real value", where
                ) from None
            return self.ops.const(value)
        if exponent.is_const and abs(exponent.value) > MAX_EXPONENT:
            raise ExpressionError(
                f"the exponent {number_text(exponent.value)} is too large"
                f" (the limit is {MAX_EXPONENT} in absolute value)",
                where,
            )
        if _whole(base) or (base.is_const and _whole(exponent)):
            base = self.ops.make(
                "float", base, shape=()
            )  # a power of whole numbers: a float
        return self.ops.pow(base, exponent)

    def _Attribute(self, node: ast.Attribute, depth: int) -> Node:
        where = self._token_after(node.value, ".")
        if node.attr != "T":
            raise ExpressionError(
                f"attribute access `.{node.attr}` is not allowed (only `.T`)", where
            )
        value = self._node(node.value, depth + 1)
        try:
            return self.ops.transpose(value)
        except ShapeError as e:
            raise ExpressionError(str(e), where) from None

    def _ids(self, node: ast.expr, depth: int, what: str) -> Node:
        """An operand that is integer ids: an input (declared `dtype: int` or made
        one by this use), or `arange(n)`."""
        if isinstance(node, ast.Name) and node.id in self.scope:
            found = self.scope[node.id]
            if found.op in ("input", "iinput"):
                self.integers.as_ids.setdefault(node.id, self.locate(self._at(node)))
                return self.ops.leaf("iinput", node.id, found.shape)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "arange"
            and len(node.args) == 1
            and not node.keywords
        ):
            length = self._node(node.args[0], depth + 1)
            dim = _dim_of(length)
            if dim is None:
                raise ExpressionError(
                    "`arange(n)` takes a dim or a positive integer", self._at(node)
                )
            return self.ops.make("arange", self.ops.dimension(dim), shape=(dim,))
        raise ExpressionError(
            f"{what} must be integer ids: an input (`dtype: int`) or `arange(n)`",
            self._at(node),
        )

    def _Subscript(self, node: ast.Subscript, depth: int) -> Node:
        """numpy indexing: integers and dim-valued indices (`X[0]`, `X[T - 1]`),
        slices (`x[1:]`, `X[:, :k]`), `None`, `...`; rows by integer ids (`W[ids]`),
        and one entry per row (`Z[arange(N), y]`)."""
        value = number(self.ops, self._node(node.value, depth + 1))
        where = self._token_after(node.value, "[")
        items = (
            list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        )
        arrays = [
            i
            for i, item in enumerate(items)
            if (isinstance(item, ast.Name) and self._is_input(item.id))
            or (
                isinstance(item, ast.Call)
                and isinstance(item.func, ast.Name)
                and item.func.id == "arange"
            )
        ]
        if arrays:
            return self._pick(value, items, arrays, where, depth)
        return self._basic_index(value, items, where, depth)

    def _is_input(self, name: str) -> bool:
        return name in self.scope and self.scope[name].op in ("input", "iinput")

    def _pick(
        self,
        value: Node,
        items: list[ast.expr],
        arrays: list[int],
        where: int,
        depth: int,
    ) -> Node:
        """Integer-array indexing: `W[ids]` (rows), or `Z[arange(N), y]` (a pick)."""
        if arrays == [0] and all(_full_slice(i) for i in items[1:]):
            ids = self._ids(items[0], depth + 1, "an array index")
            if ids.op == "iinput" and value.rank >= 1:
                return self.ops.make(
                    "gather", value, ids, shape=ids.shape + value.shape[1:]
                )
        if len(items) == 2 and arrays == [0, 1] and value.rank == 2:
            rows = self._ids(items[0], depth + 1, "the first index")
            labels = self._ids(items[1], depth + 1, "the second index")
            if (
                rows.op == "arange"
                and rows.shape == value.shape[:1]
                and labels.op == "iinput"
                and labels.shape == value.shape[:1]
            ):
                return self.ops.make(
                    "take_along", value, labels, attrs=Index((), 1), shape=labels.shape
                )
        raise ExpressionError(
            "integer-array indexing takes the forms `W[ids]` (rows by integer ids)"
            f" and `Z[arange(N), y]` (one entry per row); here on shape {show(value.shape)}",
            where,
        )

    def _basic_index(
        self, value: Node, items: list[ast.expr], where: int, depth: int
    ) -> Node:
        ellipses = [i for i, item in enumerate(items) if _is_constant(item, Ellipsis)]
        if len(ellipses) > 1:
            raise ExpressionError("an index can have only one `...`", where)
        consumed = sum(
            1
            for i in items
            if not _is_constant(i, None) and not _is_constant(i, Ellipsis)
        )
        if consumed > value.rank:
            raise ExpressionError(
                f"too many indices ({consumed}) for shape {show(value.shape)}", where
            )
        if ellipses:
            at = ellipses[0]
            fill: list[ast.expr] = [ast.Slice() for _ in range(value.rank - consumed)]
            items = items[:at] + fill + items[at + 1 :]
        operands: list[Node] = []
        texts: list[str] = []
        shape: list[Dim] = []
        axis = 0
        for item in items:
            if _is_constant(item, None):
                texts.append("None")
                shape.append(1)
                continue
            dim = value.shape[axis]
            axis += 1
            if isinstance(item, ast.Slice):
                text, length = self._slice(item, dim, operands, depth)
                texts.append(text)
                shape.append(length)
                continue
            index = self._whole_index(item, dim, depth)
            operands.append(index)
            texts.append("{" + str(len(operands)) + "}")
        shape += value.shape[axis:]
        if all(text == ":" for text in texts):  # x[...], X[:, :]: x itself
            return value
        return self.ops.make(
            "getitem", value, *operands, attrs=Index(tuple(texts)), shape=tuple(shape)
        )

    def _whole_index(self, item: ast.expr, dim: Dim, depth: int) -> Node:
        """An integer index: a literal or a dim-valued expression (`T - 1`), in
        range for the axis if that is known (an integer length, or an index out of
        range whatever the sizes of the dims: `X[T]` of an axis of length T)."""
        index = self._node(item, depth + 1)
        whole = (index.is_const and index.value.is_integer()) or _whole(index)
        if not whole or _has_float(item):
            raise ExpressionError(
                "an index is an integer: a literal, or dims and integers under + - *"
                " (a float or an array is not an index)",
                self._at(item),
            )
        outside = (
            isinstance(dim, int) and not -dim <= index.value < dim
            if index.is_const
            else shapes.out_of_range(ast.unparse(item), dim)
        )
        if outside:
            shown = number_text(index.value) if index.is_const else ast.unparse(item)
            raise ExpressionError(
                f"index {shown} is out of range for an axis of length {dim}",
                self._at(item),
            )
        return index

    def _slice(
        self, item: ast.Slice, dim: Dim, operands: list[Node], depth: int
    ) -> tuple[str, Dim]:
        """A slice's text and its length: `:`; `a:` and `:b` with integers or a dim."""
        if item.step is not None:
            raise ExpressionError(
                "slices with a step are not supported", self._at(item.step)
            )
        bounds: list[Node | None] = []
        for bound in (item.lower, item.upper):
            bounds.append(
                None if bound is None else self._whole_index_bound(bound, depth)
            )
        lower, upper = bounds
        length = _slice_length(dim, lower, upper)
        if length is None:
            raise ExpressionError(
                f"the length of this slice of an axis of length {dim} is not known;"
                " a slice is `:`, `a:` or `:b` with integers, or `:k` with a dim",
                self._at(item),
            )
        texts = []
        for given in bounds:
            if given is None:
                texts.append("")
            else:
                operands.append(given)
                texts.append("{" + str(len(operands)) + "}")
        return ":".join(texts), length

    def _whole_index_bound(self, bound: ast.expr, depth: int) -> Node:
        node = self._node(bound, depth + 1)
        whole = (node.is_const and node.value.is_integer()) or node.op == "dim"
        if not whole or _has_float(bound):
            raise ExpressionError(
                "a slice bound is an integer or a dim", self._at(bound)
            )
        return node

    def _refuse_at_keyword(self, node: ast.AST, depth: int) -> Node:
        """Refuse a construct, pointing at the keyword or operator that makes it."""
        before: ast.AST
        if isinstance(node, ast.Compare):
            before, word = node.left, _COMPARISONS.get(type(node.ops[0]), "")
        elif isinstance(node, ast.BoolOp):
            before = node.values[0]
            word = "and" if isinstance(node.op, ast.And) else "or"
        elif isinstance(node, ast.IfExp):
            before, word = node.body, "if"
        elif isinstance(node, ast.DictComp):
            before, word = node.value, "for"
        else:
            assert isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp)
            before, word = node.elt, "for"
        raise ExpressionError(_REFUSED[type(node)], self._token_after(before, word))

    def _List(self, node: ast.List, depth: int) -> Node:
        if not node.elts:
            raise ExpressionError("an empty vector `[]` has no value", self._at(node))
        if len(node.elts) > MAX_VECTOR:
            raise ExpressionError(
                f"the vector has {len(node.elts)} elements; the limit is {MAX_VECTOR}",
                self._at(node),
            )
        items = [self._node(e, depth + 1) for e in node.elts]
        for e, item in zip(node.elts, items, strict=True):
            problem = element_problem(item)
            if problem is not None:
                raise ExpressionError(problem, self._at(e))
        return vector(self.ops, items)

    def _Call(self, node: ast.Call, depth: int) -> Node:
        func = node.func
        if not isinstance(func, ast.Name):
            self._node(func, depth + 1)  # refuses `.system`, lambdas...
            raise ExpressionError(
                "only gradgen's functions can be called, by name:"
                f" {_function_list()}",
                self._token_after(func, "("),
            )
        name = func.id
        callable_ = functions()
        if name not in callable_:
            if name in self.scope or name in self.dims:
                raise ExpressionError(
                    f"`{name}` is not a function; the functions are {_function_list()}",
                    self._at(node),
                )
            hint = did_you_mean(name, callable_)
            listing = "" if hint else f"; the functions are {_function_list()}"
            raise ExpressionError(
                f"unknown function `{name}`{hint}{listing}", self._at(node)
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ExpressionError(_REFUSED[ast.Starred], self._at(arg))
        if name in _STRUCTURAL:
            return self._structural(name, node, depth)
        if name in COMPOSITIONS:
            return self._composition(name, node, depth)
        op = one_argument_form(name) if len(node.args) == 1 else None
        op = op or callable_[name]
        rule = RULES[op]
        keywords = self._keywords(name, rule, node)
        want = rule.arity
        if len(node.args) != want:
            counts = f"1 or {want}" if one_argument_form(name) else str(want)
            raise ExpressionError(
                f"`{name}` takes {counts} argument{'s' if want > 1 else ''},"
                f" got {len(node.args)}",
                self._at(node),
            )
        args = [self._node(a, depth + 1) for a in node.args]
        if op == "where":
            cond = self._condition(args[0], "where", node.args[0])
            args = [
                cond,
                guard(self.ops, args[1], cond),
                guard(self.ops, args[2], self.ops.make("not_", cond, shape=cond.shape)),
            ]
        args = [
            a if op == "where" and i == 0 else as_float(self.ops, number(self.ops, a))
            for i, a in enumerate(args)
        ]
        try:
            if rule.axis is not None:
                return self.ops.reduce(op, args[0], self._axis(rule, keywords, args[0]))
            made = self.ops.make(op, *args)
        except ShapeError as e:
            raise ExpressionError(str(e), self._at(node)) from None
        pairs = [(a, b) for i, a in enumerate(args) for b in args[i + 1 :]]
        for a, b in pairs if rule.broadcasts else []:
            if self._check_broadcast(name, a, b, self._at(node)):
                break  # one warning per call
        return made

    def _structural(self, name: str, node: ast.Call, depth: int) -> Node:
        """Calls whose arguments are not all arrays: `transpose(x, (1, 0, 2))`,
        `reshape(x, [B, T * h])`, `concat([a, b], axis=1)`, `stack([a, b])`."""
        rule = RULES[name]
        keywords = self._keywords(name, rule, node)
        counts = {"transpose": (1, 2), "reshape": (2,), "concat": (1,), "stack": (1,)}
        if len(node.args) not in counts[name]:
            shown = " or ".join(str(c) for c in counts[name])
            plural = "s" if counts[name][-1] > 1 else ""
            raise ExpressionError(
                f"`{name}` takes {shown} argument{plural}, got {len(node.args)}",
                self._at(node),
            )
        try:
            if name in ("concat", "stack"):
                return self._join(name, node, keywords, depth)
            x = as_float(
                self.ops, number(self.ops, self._node(node.args[0], depth + 1))
            )
            if name == "transpose" and len(node.args) == 1:
                return self.ops.transpose(x)
            if name == "transpose":
                perm = self._permutation(node.args[1], x)
                return self.ops.make(
                    "permute",
                    x,
                    attrs=Permutation(perm),
                    shape=tuple(x.shape[i] for i in perm),
                )
            shape = self._reshape_target(node.args[1], x)
            literal = self.ops.shape_literal(shape)
            return self.ops.make("reshape", x, literal, shape=shape)
        except ShapeError as e:
            raise ExpressionError(str(e), self._at(node)) from None

    def _join(
        self, name: str, node: ast.Call, keywords: dict[str, ast.keyword], depth: int
    ) -> Node:
        """`concat([a, b, ...], axis=k)` (an existing axis, 0 by default) and
        `stack([a, b, ...], axis=k)` (a new one)."""
        given = node.args[0]
        if not isinstance(given, ast.List | ast.Tuple) or not given.elts:
            raise ExpressionError(
                f"`{name}` takes a list of arrays: `{name}([a, b], axis=0)`",
                self._at(given),
            )
        if len(given.elts) > MAX_VECTOR:
            raise ExpressionError(
                f"`{name}` of {len(given.elts)} arrays; the limit is {MAX_VECTOR}",
                self._at(given),
            )
        items = [
            as_float(self.ops, number(self.ops, self._node(e, depth + 1)))
            for e in given.elts
        ]
        first = items[0]
        rank = first.rank + (name == "stack")
        axis = 0
        if "axis" in keywords:
            value = keywords["axis"].value
            found = _integer(value)
            if found is None:
                raise ExpressionError(
                    f"`{name}`'s axis must be an integer", self._at(value)
                )
            if not -rank <= found < rank:
                raise ExpressionError(
                    f"axis {found} is out of range for `{name}` of shape"
                    f" {show(first.shape)}",
                    self._at(value),
                )
            axis = found % rank if rank else 0
        for e, item in zip(given.elts, items, strict=True):
            if name == "concat" and item.rank == 0:
                raise ExpressionError(
                    "`concat` joins arrays along an axis; this one is a scalar"
                    " (`stack` makes a new axis)",
                    self._at(e),
                )
            differs = [
                k
                for k in range(max(item.rank, first.rank))
                if item.rank != first.rank
                or (item.shape[k] != first.shape[k] and (name == "stack" or k != axis))
            ]
            if differs:
                raise ExpressionError(
                    f"`{name}` needs arrays of one shape"
                    + (" except along the axis" if name == "concat" else "")
                    + f"; got {show(first.shape)} and {show(item.shape)}",
                    self._at(e),
                )
        if name == "stack":
            shape = (*first.shape[:axis], len(items), *first.shape[axis:])
        else:
            joined = shapes.dim_sum(tuple(item.shape[axis] for item in items))
            shape = (*first.shape[:axis], joined, *first.shape[axis + 1 :])
        return self.ops.make(name, *items, attrs=Position(axis), shape=shape)

    def _permutation(self, given: ast.expr, x: Node) -> tuple[int, ...]:
        items = given.elts if isinstance(given, ast.Tuple | ast.List) else [given]
        perm: list[int] = []
        for item in items:
            found = _integer(item)
            if found is None or not -x.rank <= found < x.rank:
                raise ExpressionError(
                    f"`transpose` takes a permutation of the axes of shape"
                    f" {show(x.shape)} as a tuple of integers, as `(1, 0, 2)`",
                    self._at(item),
                )
            perm.append(found % x.rank)
        if sorted(perm) != list(range(x.rank)):
            raise ExpressionError(
                f"`{ast.unparse(given)}` is not a permutation of the {x.rank} axes of"
                f" shape {show(x.shape)}",
                self._at(given),
            )
        return tuple(perm)

    def _reshape_target(self, given: ast.expr, x: Node) -> tuple[Dim, ...]:
        """The new shape: dims and integers under + - *, at most one -1; its element
        count must equal x's for every size of the dims (sympy decides)."""
        dims = self._shape_arg(given, "reshape", minus_one=True)
        known = tuple(d for d in dims if d is not None)
        total = shapes.count(x.shape)
        if len(known) < len(dims):
            inferred = shapes.quotient(total, known)
            if inferred is None:
                raise ExpressionError(
                    f"the -1 in this shape cannot be inferred: {show(x.shape)} has"
                    f" {total} elements, not a whole multiple of {shapes.count(known)}"
                    " for every size of the dims",
                    self._at(given),
                )
            return tuple(inferred if d is None else d for d in dims)
        if not shapes.same_count(x.shape, known):
            raise ExpressionError(
                f"cannot reshape {show(x.shape)} to {show(known)}: {total} elements"
                f" vs {shapes.count(known)} (they must agree for every size of the"
                " dims)",
                self._at(given),
            )
        return known

    def _shape_arg(
        self, given: ast.expr, what: str, minus_one: bool = False
    ) -> tuple[Dim | None, ...]:
        """A shape written in an expression, `[B, T * h]`: a list (or tuple) of
        dims, positive integers, and + - * of them; None for a -1 if allowed."""
        if not isinstance(given, ast.List | ast.Tuple):
            raise ExpressionError(
                f"`{what}` takes a shape as a list of dims, as `[B, T * h]`",
                self._at(given),
            )
        if len(given.elts) > MAX_RANK:
            raise ExpressionError(
                f"shapes have rank 0 to {MAX_RANK}; this one has rank"
                f" {len(given.elts)}",
                self._at(given),
            )
        dims: list[Dim | None] = []
        for item in given.elts:
            if minus_one and _integer(item) == -1:
                if None in dims:
                    raise ExpressionError("only one -1 in a shape", self._at(item))
                dims.append(None)
                continue
            dims.append(self._dim_item(item))
        return tuple(dims)

    def _dim_item(self, item: ast.expr) -> Dim:
        for sub in ast.walk(item):
            ok = (
                (isinstance(sub, ast.Name) and sub.id in self.dims)
                or (isinstance(sub, ast.Constant) and type(sub.value) is int)
                or (
                    isinstance(sub, ast.BinOp)
                    and isinstance(sub.op, ast.Add | ast.Sub | ast.Mult)
                )
                or isinstance(sub, ast.Load | ast.Add | ast.Sub | ast.Mult)
            )
            if not ok:
                raise ExpressionError(
                    "a dim in a shape is a dim's name, a positive integer, or + - *"
                    " of them",
                    self._at(sub) if isinstance(sub, ast.expr) else self._at(item),
                )
        dim = shapes.dim_of_text(ast.unparse(item))
        if isinstance(dim, int) and dim <= 0:
            raise ExpressionError(
                f"a dim must be a positive integer, not {dim}", self._at(item)
            )
        return dim

    def _composition(self, name: str, node: ast.Call, depth: int) -> Node:
        """A function built from other ops (`cross_entropy`, `mse`, `one_hot`...)."""
        made = COMPOSITIONS[name]
        keywords = self._keywords(name, made, node)
        if len(node.args) != made.arity:
            raise ExpressionError(
                f"`{name}` takes {made.arity} arguments, got {len(node.args)}",
                self._at(node),
            )
        first: Node | None = None
        args: list[Node] = []
        shape: tuple[Dim, ...] | None = None
        for i, given in enumerate(node.args):
            if i == made.ids:
                args.append(self._ids(given, depth + 1, f"`{name}`'s ids"))
            elif i == made.shape:
                written = self._shape_arg(given, name)
                shape = tuple(d for d in written if d is not None)
            elif i == made.size:
                size = self._node(given, depth + 1)
                if _dim_of(size) is None:
                    raise ExpressionError(
                        f"`{name}` takes a dim or a positive integer here",
                        self._at(given),
                    )
                args.append(size)
            elif (
                name == "cross_entropy"
                and first is not None
                and self._labels_are_ids(given, first)
            ):
                args.append(self._ids(given, depth + 1, "the labels"))
            else:
                parsed = self._node(given, depth + 1)
                args.append(as_float(self.ops, number(self.ops, parsed)))
            first = first or (args[0] if args else None)
        extra: dict[str, Any] = {}
        if made.axis is not None:
            assert first is not None
            extra["axis"] = self._axis(made, keywords, first)
        if shape is not None:
            extra["shape"] = shape
        try:
            return made.build(self.ops, *args, **extra)
        except ShapeError as e:
            raise ExpressionError(str(e), self._at(node)) from None

    def _labels_are_ids(self, given: ast.expr, logits: Node) -> bool:
        """`cross_entropy`'s labels are class ids when they are an input one rank
        below the logits (or declared `dtype: int`), else probabilities."""
        if not (isinstance(given, ast.Name) and self._is_input(given.id)):
            return False
        leaf = self.scope[given.id]
        return leaf.op == "iinput" or leaf.rank == logits.rank - 1

    def _keywords(
        self, name: str, rule: Rule | Composition, node: ast.Call
    ) -> dict[str, ast.keyword]:
        """The call's keyword arguments, each one the op takes, at most once."""
        allowed = (
            set() if rule.axis is None else {"axis", *(["keepdims"] * rule.keepdims)}
        )
        found: dict[str, ast.keyword] = {}
        for kw in node.keywords:
            if kw.arg not in allowed:
                shown = "**" if kw.arg is None else kw.arg
                only = (
                    f" (only `axis`, for {_axis_list()}, and `keepdims`, for"
                    f" {_axis_list(keepdims=True)})"
                    if kw.arg not in ("axis", "keepdims") or rule.axis is None
                    else ""
                )
                raise ExpressionError(
                    f"`{name}` takes no keyword argument `{shown}`{only}", self._at(kw)
                )
            assert kw.arg is not None
            found[kw.arg] = kw
        return found

    def _axis(
        self, rule: Rule | Composition, keywords: dict[str, ast.keyword], x: Node
    ) -> Axis:
        """`axis=` (an int, negative counting from the end, a tuple of them, or
        None) and `keepdims=` as an `Axis` checked against the operand's rank."""
        keepdims = False
        if "keepdims" in keywords:
            value = keywords["keepdims"].value
            if not (isinstance(value, ast.Constant) and type(value.value) is bool):
                raise ExpressionError(
                    "`keepdims` must be True or False", self._at(value)
                )
            keepdims = value.value
        if "axis" not in keywords:
            last = (x.rank - 1,) if x.rank else ()
            every = tuple(range(x.rank)) if keepdims else None
            return Axis(last if rule.axis == "last" else every, keepdims)
        value = keywords["axis"].value
        if isinstance(value, ast.Constant) and value.value is None:
            return Axis(tuple(range(x.rank)) if keepdims else None, keepdims)
        items = value.elts if isinstance(value, ast.Tuple) else [value]
        axes: list[int] = []
        for item in items:
            number_ = _integer(item)
            if number_ is None:
                raise ExpressionError(
                    "`axis` must be an integer, a tuple of integers or None",
                    self._at(item),
                )
            if not -x.rank <= number_ < x.rank:
                raise ExpressionError(
                    f"axis {number_} is out of range for shape {show(x.shape)}"
                    f" (rank {x.rank})",
                    self._at(item),
                )
            if number_ % x.rank in axes:
                raise ExpressionError(f"axis {number_} is repeated", self._at(item))
            axes.append(number_ % x.rank)
        return Axis(tuple(sorted(axes)), keepdims)


def _integer(node: ast.expr) -> int | None:
    """An integer literal, possibly negated, or None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sign * node.value
    return None


_HANDLERS: dict[type[ast.AST], Callable[[Parser, Any, int], Node]] = {
    ast.Constant: Parser._Constant,
    ast.Name: Parser._Name,
    ast.UnaryOp: Parser._UnaryOp,
    ast.BinOp: Parser._BinOp,
    ast.Compare: Parser._Compare,
    ast.Attribute: Parser._Attribute,
    ast.Subscript: Parser._Subscript,
    ast.List: Parser._List,
    ast.Call: Parser._Call,
    **{
        kind: Parser._refuse_at_keyword
        for kind in (
            ast.BoolOp,
            ast.IfExp,
            ast.ListComp,
            ast.SetComp,
            ast.DictComp,
            ast.GeneratorExp,
        )
    },
}


def syntax_tree(body: str) -> ast.Expression:
    """The syntax tree of an expression (without leading blanks).

    Like `ast.parse`, but an expression may run over several lines (a YAML block
    scalar) as if it were in parentheses; a syntax error is reported for `body`.
    """
    with warnings.catch_warnings():  # e.g. "'int' object is not callable"
        warnings.simplefilter("ignore")
        try:
            return ast.parse(body, mode="eval")
        except SyntaxError:
            if "\n" not in body.rstrip() or not _balanced(body):
                raise
            try:
                tree = ast.parse("(\n" + body + "\n)", mode="eval")
            except SyntaxError:
                pass
            else:
                for node in ast.walk(tree):  # positions as in `body`
                    if isinstance(node, ast.expr):
                        node.lineno -= 1
                        if node.end_lineno is not None:
                            node.end_lineno -= 1
                return tree
            raise


def _balanced(text: str) -> bool:
    """Whether no bracket in `text` closes one that was not opened in `text`."""
    depth = 0
    lines = text.split("\n")
    for line in lines:
        for ch in line.partition("#")[0]:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth < 0:
                    return False
    return True


def _literal_problem(value: object) -> str:
    if isinstance(value, bool):
        return "booleans are not allowed in expressions"
    if isinstance(value, str | bytes):
        return "strings are not allowed in expressions"
    if isinstance(value, complex):
        return "complex numbers are not allowed in expressions"
    shown = "..." if value is Ellipsis else repr(value)
    return f"`{shown}` is not allowed in expressions"


#: Ops whose operands line up with their result from the last axis, besides the
#: element-wise functions and the broadcasting ops of the rule table.
_ALIGNED = frozenset({"neg", "powc", "float", "as_float", "select", *MASKS})


def _aligned(op: str) -> bool:
    """Whether `op` works element by element, its operands broadcast to its result."""
    rule = RULES.get(op)
    if rule is not None and (rule.broadcasts or rule.elementwise is not None):
        return True
    return op in _ALIGNED


#: Functions whose arguments are not all arrays (a permutation, a shape, a list).
_STRUCTURAL = frozenset({"transpose", "reshape", "concat", "stack"})
_INTEGER_OPS = frozenset({"dim", "const", "add", "sub", "mul", "neg"})


def _whole(node: Node) -> bool:
    """True if the generated code computes `node` with Python integers: a dim, or
    dims and whole-number constants under `+ - *`, with a dim among them."""
    if node.is_const:
        return False
    # Depth first, stopping at the first node that is not integral: a long chain of
    # float operations (every function's argument comes here) is not walked whole.
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.op not in _INTEGER_OPS or (n.is_const and not n.value.is_integer()):
            return False
        stack.extend(n.args)
    return True


def number(ops: Ops, node: Node) -> Node:
    """`node` as a number for arithmetic: a condition becomes 0.0/1.0 (numpy would
    add two booleans as a logical or, and refuse to negate one)."""
    if node.op in MASKS:
        return ops.make("as_float", node, shape=node.shape)
    return node


def as_float(ops: Ops, node: Node) -> Node:
    """A dim used as a number is a Python int in the generated code, exact under
    `+ - *`. Where a computation can leave the integers (a function, a vector
    literal), it becomes a float first: `square(D)` and `[D, 2]` are floats, never
    int64 values that overflow or refuse a negative exponent."""
    return ops.make("float", node, shape=()) if _whole(node) else node


def element_problem(item: Node) -> str | None:
    """Why `item` cannot be an element of a vector literal, or None."""
    if item.rank != 0:
        return (
            f"a vector literal takes scalars; this element has shape {show(item.shape)}"
        )
    return None


def vector(ops: Ops, items: list[Node]) -> Node:
    """The vector literal `[e1, e2, ...]` of scalar elements (`element_problem`),
    whether the spec wrote it in an expression or as a YAML list."""
    return ops.stack([as_float(ops, number(ops, item)) for item in items])


def _has_float(node: ast.expr) -> bool:
    """Whether `node` computes a float somewhere: a float literal or a true
    division (`X[1.0]`, `X[4 / 2]`: numpy refuses a float index, even a whole one)."""
    return any(
        (isinstance(n, ast.Constant) and isinstance(n.value, float))
        or isinstance(n, ast.Div)
        for n in ast.walk(node)
    )


def _is_constant(node: ast.expr, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _full_slice(node: ast.expr) -> bool:
    return isinstance(node, ast.Slice) and node.lower is node.upper is node.step is None


def _dim_of(node: Node) -> Dim | None:
    """The dim a node stands for: a dim name, or a positive integer literal."""
    if node.op == "dim":
        return node.name
    if node.is_const and node.value.is_integer() and node.value > 0:
        return int(node.value)
    return None


def _slice_length(dim: Dim, lower: Node | None, upper: Node | None) -> Dim | None:
    """The length of dim[lower:upper], when it is a known dim: integer bounds on an
    integer dim; `:k` with a dim k (taken to fit); `c:` or `:-c` on a named dim,
    whose length is the derived dim `N - c`."""

    def const(n: Node | None) -> int | None:
        return int(n.value) if n is not None and n.is_const else None

    lo, hi = const(lower), const(upper)
    if lower is None and upper is None:
        return dim
    if (
        isinstance(dim, int)
        and (lower is None or lo is not None)
        and (upper is None or hi is not None)
    ):
        return len(range(dim)[lo:hi]) or None
    if (lower is None or lo == 0) and upper is not None and upper.op == "dim":
        return upper.name
    if (lower is None or lo == 0) and hi is not None and hi > 0:
        return hi  # `:2` of a named axis: taken to fit, as `:k`
    if isinstance(dim, str) and upper is None and lo is not None and lo > 0:
        return f"{dim} - {lo}"
    if isinstance(dim, str) and lower is None and hi is not None and hi < 0:
        return f"{dim} - {-hi}"
    return None
