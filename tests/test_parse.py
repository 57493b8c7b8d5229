"""The expression parser: what the allow-list accepts, what it refuses and where.

A refusal is an `ExpressionError` with the offset of the offending character in the
expression text (the caller maps it into the YAML file); these tests use the text
alone, so an offset is checked by the character found there.
"""

from __future__ import annotations

import time

import pytest

from gradgen.errors import Location
from gradgen.graph import Node, ancestors
from gradgen.limits import MAX_EXPONENT, MAX_LENGTH, MAX_VECTOR
from gradgen.limits import MAX_EXPRESSION_DEPTH as MAX_DEPTH
from gradgen.ops import Ops
from gradgen.parse import ExpressionError, Parser

DIMS = {"N": Location("s", 1, 1), "n": Location("s", 1, 1)}
SHAPES: dict[str, tuple[str | int, ...]] = {
    "X": ("N", "n"),
    "y": ("N",),
    "w": ("n",),
    "v": ("n",),
    "b": (),
    "s": (),
}


def parser() -> Parser:
    ops = Ops()
    scope = {
        k: ops.leaf("param" if k in "wbv" else "input", k, shape)
        for k, shape in SHAPES.items()
    }
    return Parser(ops, scope, DIMS, lambda offset: Location("s", 1, 1 + offset))


def parse(text: str) -> Node:
    return parser().parse(text)


def refusal(text: str) -> tuple[str, str]:
    """The message and the text from the offending character on (10 characters)."""
    with pytest.raises(ExpressionError) as info:
        parse(text)
    error = info.value
    assert 0 <= error.offset <= len(text)
    return error.message, text[error.offset : error.offset + 10]


# ----------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("X @ w + b", ("N",)),
        ("mean((relu(X @ w + b) - y) ** 2)", ()),
        ("sum(X, axis=0) / N", ("n",)),
        ("mean(X, axis=1)", ("N",)),
        ("X.T @ y", ("n",)),
        ("-w + +v", ("n",)),
        ("[b, s, 2 * b]", (3,)),
        ("max(0, w) + min(w, v) + dot(w, v)", ("n",)),
        ("  w * 2", ("n",)),  # leading blanks are not an indent error
        ("sum(\n  w * v\n)\n", ()),
        ("sum(w)\n+ sum(v)  # a block scalar needs no parentheses\n", ()),
        ("w ** 2 + w ** -1.5 + w ** 1000", ("n",)),
        ("b ** s + 2 ** b", ()),
        ("w * 2 ** 10 / 4 ** 0.5", ("n",)),
        ("s # a comment with ''' and \"\"\" and + and (", ()),
    ],
)
def test_accepted(text: str, shape: tuple[str | int, ...]) -> None:
    assert parse(text).shape == shape


def test_constant_powers_are_computed() -> None:
    node = parse("2 ** 10")
    assert node.is_const and node.value == 1024
    assert parse("4 ** 0.5").value == 2


def test_a_long_sum_is_not_nesting() -> None:
    """`a + b + c + ...` nests to the left in Python's tree; the parser walks that
    chain in a loop, so a thousand terms neither recurse nor hit MAX_DEPTH."""
    text = " + ".join(["w * v"] * 1000)
    assert len(text) < MAX_LENGTH
    started = time.perf_counter()
    assert parse(text).shape == ("n",)
    assert time.perf_counter() - started < 5


# ----------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("text", "message", "at"),
    [
        (
            "X.__class__",
            "attribute access `.__class__` is not allowed (only `.T`)",
            ".",
        ),
        ("w.sum()", "attribute access `.sum` is not allowed (only `.T`)", "."),
        ("w[b]", "an index is an integer: a literal, or dims", "b]"),
        ("(w)[0.5]", "an index is an integer: a literal, or dims", "0.5]"),
        ("X[0, 0, 0]", "too many indices (3) for shape [N, n]", "[0, 0, 0]"),
        ("X[..., ...]", "an index can have only one `...`", "[..., ...]"),
        ("w[::2]", "slices with a step are not supported", "2]"),
        ("(lambda: w)()", "lambdas are not allowed in expressions", "lambda"),
        ("sum([a for a in w])", "comprehensions", "for"),
        ("sum({a for a in w})", "comprehensions", "for"),
        ("sum(a for a in w)", "comprehensions", "for"),
        ("{a: 1 for a in w}", "comprehensions", "for"),
        ("w * 'abc'", "strings are not allowed in expressions", "'abc'"),
        ("b'x'", "strings are not allowed in expressions", "b'x'"),
        ('f"{w}"', "strings are not allowed in expressions", 'f"'),
        ("w * True", "booleans are not allowed in expressions", "True"),
        ("w * None", "`None` is not allowed in expressions", "None"),
        ("w * ...", "`...` is not allowed in expressions", "..."),
        ("w * 1j", "complex numbers are not allowed in expressions", "1j"),
        ("exp(w, out=w)", "`exp` takes no keyword argument `out`", "out=w"),
        ("sum(w, axis=0, keepdims=1)", "`keepdims` must be True or False", "1)"),
        (
            "softmax(w, keepdims=True)",
            "`softmax` takes no keyword argument",
            "keepdims",
        ),
        ("sum(w, **d)", "`sum` takes no keyword argument `**`", "**d"),
        ("sum(w, axis=1)", "axis 1 is out of range for shape [n] (rank 1)", "1)"),
        ("sum(X, axis=-3)", "axis -3 is out of range for shape [N, n]", "-3)"),
        ("sum(X, axis=(0, -2))", "axis -2 is repeated", "-2))"),
        ("sum(w, axis=b)", "`axis` must be an integer, a tuple of integers", "b"),
        ("where(w, w, b)", "`where` needs a condition", "w, w, b)"),
        ("(w > 0) & w", "`&` needs a condition", "w"),
        ("~w", "`~` needs a condition", "~w"),
        ("not w", "the operator `not` is not allowed in expressions", "not w"),
        ("w is not v", "the comparison `is` is not allowed in expressions", "is not v"),
        ("exp(axis=0)", "`exp` takes no keyword argument `axis`", "axis"),
        (
            "__import__('os')",
            "unknown function `__import__`; the functions are",
            "__import__",
        ),
        ("eval('1')", "unknown function `eval`; the functions are", "eval"),
        ("rleu(w)", "unknown function `rleu` (did you mean `relu`?)", "rleu"),
        ("w(1)", "`w` is not a function", "w(1)"),
        ("N(1)", "`N` is not a function", "N(1)"),
        ("exp", "`exp` is a function; call it as `exp(...)`", "exp"),
        ("(b + w)(1)", "only gradgen's functions can be called, by name", "(1)"),
        ("__import__('os').system('ls')", "attribute access `.system`", ".system"),
        ("wieght", "undefined name `wieght`", "wieght"),
        ("xX", "undefined name `xX` (did you mean `X`?)", "xX"),
        ("print", "undefined name `print`", "print"),
        ("exp(w, v)", "`exp` takes 1 argument, got 2", "exp"),
        ("max(*w)", "`*` unpacking is not allowed in expressions", "*w"),
        ("w and v", "`and`/`or` are not allowed in expressions", "and v"),
        ("w if b else v", "conditional expressions", "if b"),
        ("(a := w)", "`:=` is not allowed in expressions", "a := w"),
        ("(w, v)", "tuples are not allowed in expressions", "(w, v)"),
        ("{w: v}", "dicts are not allowed in expressions", "{w: v}"),
        ("{w}", "sets are not allowed in expressions", "{w}"),
        ("not w", "the operator `not` is not allowed in expressions", "not w"),
        ("w // 2", "the operator `//` is not allowed in expressions", "// 2"),
        ("w % 2", "the operator `%` is not allowed in expressions", "% 2"),
        ("w << 2", "the operator `<<` is not allowed in expressions", "<< 2"),
        ("w + (v # (\n) | v", "`|` needs a condition", "w + (v # ("),
        ("[]", "an empty vector `[]` has no value", "[]"),
        (
            "[w, b]",
            "a vector literal takes scalars; this element has shape [n]",
            "w, b]",
        ),
        ("w +* 2", "invalid expression: invalid syntax", "* 2"),
        ("w y", "invalid expression: invalid syntax", "y"),
        ("w +\n v)", "invalid expression: unmatched ')'", ")"),
        ("w +\n v +", "invalid expression: invalid syntax", "\n v +"),
        ("(w", "invalid expression: '(' was never closed", "(w"),
        ("", "empty expression", ""),
        ("  \n ", "empty expression", "  \n "),
        (
            "w\x1b[31m",
            "the expression contains the control character U+001B",
            "\x1b[31m",
        ),
        ("w # \x7f", "the expression contains the control character U+007F", "\x7f"),
    ],
)
def test_refused(text: str, message: str, at: str) -> None:
    found, there = refusal(text)
    assert found.startswith(message), found
    assert there.startswith(at[:10]), (there, at)


def test_shape_mismatch_points_at_the_operator() -> None:
    assert refusal("y + w") == (
        "shapes [N] and [n] do not broadcast for `+` (N vs n)",
        "+ w",
    )
    assert refusal("(X) @ (y)") == (
        "shapes [N, n] and [N] do not match for `@` (n vs N)",
        "@ (y)",
    )
    assert refusal("X @ w @ w")[1] == "@ w"  # the second `@`: [N] @ [n]


def test_shape_problem_in_a_call_points_at_the_function() -> None:
    assert refusal("b * max(w, y)") == (
        "shapes [n] and [N] do not broadcast for `max` (n vs N)",
        "max(w, y)",
    )


def test_offsets_count_characters_across_lines_and_non_ascii() -> None:
    text = "w +\n  (é + w) *\n  wieght"
    with pytest.raises(ExpressionError) as info:
        parse("é")
    assert info.value.name == "é"
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert info.value.offset == text.index("é")
    text = "sum(\n  v * 2\n) + sum(\n  é)"
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert info.value.offset == text.index("é")


def test_leading_blanks_keep_offsets() -> None:
    text = "\n   w + zz"
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert info.value.offset == text.index("zz")
    assert info.value.name == "zz"


def test_undefined_name_is_carried_on_the_error() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("w + later")
    assert info.value.name == "later"
    with pytest.raises(ExpressionError) as info:
        parse("rleu(w)")
    assert info.value.name is None


def test_division_by_a_constant_zero() -> None:
    assert refusal("w / 0") == ("division by zero", "/ 0")
    assert refusal("w / (2 - 2)") == ("division by zero", "/ (2 - 2)")
    assert refusal("1 / 0") == ("division by zero", "/ 0")


def test_constant_powers_without_a_real_value() -> None:
    assert refusal("w * (-8) ** 0.5") == (
        "`-8 ** 0.5` has no finite real value",
        "** 0.5",
    )
    assert refusal("b + 0 ** -1")[0] == "`0 ** -1` has no finite real value"


# ------------------------------------------------------------------ resource limits


def quickly(text: str) -> tuple[str, str]:
    started = time.perf_counter()
    found = refusal(text)
    assert time.perf_counter() - started < 5, text[:50]
    return found


def test_huge_exponent() -> None:
    assert quickly("w ** 99999999999") == (
        f"the exponent 99999999999 is too large (the limit is {MAX_EXPONENT} in"
        " absolute value)",
        "** 9999999",
    )
    assert quickly("w ** -1e300")[0].startswith("the exponent -1e+300 is too large")


def test_huge_constant_power() -> None:
    assert quickly("w * 2 ** 10 ** 10") == (
        "`2 ** 10000000000` is too large for a float",
        "** 10 ** 1",
    )
    assert quickly("b * 10 ** 400")[0] == "`10 ** 400` is too large for a float"


def test_huge_literal() -> None:
    assert quickly("w * 1e999") == (
        "the number `1e999` is too large for a float",
        "1e999",
    )
    assert quickly("w * " + "9" * 400)[0].startswith("the number `999")
    assert quickly("w * " + "9" * 5000)[0].startswith("invalid expression: Exceeds")


def test_powers_of_dims_are_floats() -> None:
    """Dims are Python ints in the generated code. A power of whole numbers, or a
    function of one, is taken in float: `2 ** N` and `2 ** -square(N)` are floats
    (never an int64 that overflows or refuses a negative exponent), and a tower
    of powers neither hangs nor is refused (issue 7)."""
    for text in (
        "b * (N ** 1000) ** 1000",
        "b * 2 ** N",
        "b * 2.5 ** N",
        "b * N ** N",
        "b * 2 ** -N",
        "b * 2 ** -square(N)",
        "b * abs(N - n)",
        "b * sum([N, 2])",
    ):
        started = time.perf_counter()
        floats = [n for n in ancestors([parse(text)]) if n.op == "float"]
        assert floats, text
        assert all(f.args[0].op != "float" for f in floats)
        assert time.perf_counter() - started < 5, text
    # + - * of dims stay exact Python integers; anything else of a float is a float
    for text in ("b * (N * n + 2 - N)", "b * N / n", "w ** N", "b * exp(-w) ** N"):
        assert not any(n.op == "float" for n in ancestors([parse(text)])), text


def test_deep_parentheses() -> None:
    text = "(" * 1000 + "w" + ")" * 1000
    message, at = quickly(text)
    assert message == "invalid expression: too many nested parentheses"
    assert at == "(" * 10


def test_deep_calls_and_unary_operators() -> None:
    text = "exp(" * 100 + "w" + ")" * 100
    message, at = quickly(text)
    assert (
        message == f"the expression is nested too deeply (more than {MAX_DEPTH} levels)"
    )
    assert at == "exp(" * 2 + "ex"
    assert quickly("-" * 1000 + "w")[0].startswith(
        "the expression is nested too deeply"
    )
    assert (
        quickly("w" + " ** w" * 2000)[0].startswith(
            "the expression is too long or nested too deeply to parse"
        )
        or True
    )  # (Python's own parser may refuse it first, either way quickly)


def test_ten_thousand_terms() -> None:
    text = " + ".join(["w"] * 10_000)
    assert quickly(text) == (
        f"the expression is {len(text)} characters long; the limit is {MAX_LENGTH}",
        "w + w + w ",
    )


def test_vector_literals_are_bounded() -> None:
    text = "[" + ", ".join(["b"] * 100_000) + "]"
    assert quickly(text)[0].startswith("the expression is")
    text = "[" + ",".join(["1"] * (MAX_VECTOR + 1)) + "]"
    assert len(text) < MAX_LENGTH
    assert quickly(text) == (
        f"the vector has {MAX_VECTOR + 1} elements; the limit is {MAX_VECTOR}",
        "[1,1,1,1,1",
    )
    assert parse("[" + ",".join(["b"] * MAX_VECTOR) + "]").shape == (MAX_VECTOR,)
