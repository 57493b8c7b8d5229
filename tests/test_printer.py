"""Unit tests of `printer`: numpy text by precedence, names for shared and named values,
dims bound from their sources, helpers collected, and the spelling of every plumbing op.

`evaluate` (used by the other unit tests too) prints a small graph as a function body
and runs it with numpy, so a graph's value can be checked against numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import ROOT

from gradgen import printer
from gradgen.graph import (
    Attrs,
    Axes,
    Count,
    Index,
    Name,
    Node,
    Position,
    Subscripts,
    TensorAxes,
    Value,
    ancestors,
)
from gradgen.ops import Ops
from gradgen.rules import ADD, ATOM, PLUMBING

TEMPLATES = ROOT / "templates"


def dim_sources(leaves: Sequence[Node]) -> dict[str, tuple[str, int]]:
    """Each symbolic dim read from the first leaf (in order) that has it."""
    found: dict[str, tuple[str, int]] = {}
    for leaf in leaves:
        for axis, d in enumerate(leaf.shape):
            if isinstance(d, str):
                found.setdefault(d, (leaf.name, axis))
    return found


def evaluate(results: Sequence[Node], values: Mapping[Node, Any]) -> list[Any]:
    """Print `results` as one function body over the leaves in `values`, and run it."""
    body = printer.print_body(
        list(results), {}, [leaf.name for leaf in values], dim_sources(list(values))
    )
    namespace: dict[str, Any] = {"np": np}
    for helper in body.helpers:  # the generated module's own helpers, verbatim
        exec((TEMPLATES / f"helper_{helper}.py.jinja").read_text(), namespace)
    namespace.update({leaf.name: value for leaf, value in values.items()})
    exec("\n".join(body.lines), namespace)
    return [eval(result, namespace) for result in body.results]


@pytest.fixture
def ops() -> Ops:
    return Ops()


def scalars(ops: Ops) -> tuple[Node, Node, Node]:
    return (
        ops.leaf("input", "a", ()),
        ops.leaf("input", "b", ()),
        ops.leaf("input", "c", ()),
    )


def text(node: Node, names: Mapping[Node, str] | None = None) -> printer.Body:
    leaves = [n for n in ancestors([node]) if n.op in ("input", "param")]
    return printer.print_body(
        [node], names or {}, [n.name for n in leaves], dim_sources(leaves)
    )


def test_parentheses_follow_precedence(ops: Ops) -> None:
    a, b, c = scalars(ops)
    x = ops.leaf("param", "x", ("n",))
    cases = {
        ops.sub(a, ops.sub(b, c)): "a - (b - c)",
        ops.sub(ops.sub(a, b), c): "a - b - c",
        ops.mul(ops.add(a, b), c): "(a + b) * c",
        ops.add(a, ops.mul(b, c)): "a + b * c",
        ops.div(a, ops.mul(b, c)): "a / (b * c)",
        ops.neg(ops.powc(x, 2)): "-x**2",
        ops.powc(ops.neg(x), 2): "(-x)**2",
        ops.pow(ops.pow(a, b), c): "(a**b)**c",
        ops.pow(a, ops.pow(b, c)): "a**b**c",
        ops.pow(a, ops.neg(b)): "a**-b",
        ops.pow(ops.const(-2.0), a): "(-2)**a",
        ops.mul(ops.const(-2.0), x): "-2 * x",
        ops.transpose(ops.add(ops.leaf("input", "A", ("m", "n")), a)): "(A + a).T",
    }
    for node, expected in cases.items():
        assert text(node).results == (expected,)


def test_a_value_used_twice_gets_a_name_and_is_computed_once(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    e = ops.call("exp", x)
    body = text(ops.add(e, ops.mul(e, e)))
    assert body.lines == ("t0 = np.exp(x)",)
    assert body.results == ("t0 + t0 * t0",)


def test_a_result_counts_as_a_use(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    e = ops.call("exp", x)
    body = printer.print_body([e, ops.add(e, ops.const(1.0))], {}, ["x"], {})
    assert body.lines == ("t0 = np.exp(x)",)
    assert body.results == ("t0", "t0 + 1")


def test_spec_names_are_preferred_and_temporaries_avoid_them(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    z = ops.call("tanh", x)
    e = ops.call("exp", z)
    body = text(ops.add(e, e), {z: "z", e: "t0"})  # "t0" taken by a spec name
    assert body.lines == ("z = np.tanh(x)", "t0 = np.exp(z)")
    assert body.results == ("t0 + t0",)
    shared = ops.call("sin", x)
    body = text(ops.mul(ops.add(shared, z), shared), {z: "t0"})
    assert body.lines == ("t0 = np.tanh(x)", "t1 = np.sin(x)")


def test_a_long_subexpression_gets_its_own_line(ops: Ops) -> None:
    x = ops.leaf("param", "a_rather_long_parameter_name", ("n",))
    short = ops.call("sin", ops.call("cos", ops.call("exp", x)))
    assert len(text(short).results[0]) <= printer.INLINE_LIMIT
    body = text(ops.add(ops.call("tanh", short), ops.const(1.0)))
    # a line of its own, computed in place (numpy makes a new array for every
    # function call; `buffers.in_place`)
    assert body.lines[:4] == (
        "t0 = np.exp(a_rather_long_parameter_name)",
        "np.cos(t0, out=t0)",
        "np.sin(t0, out=t0)",
        "np.tanh(t0, out=t0)",
    )
    # and the result `t0 + 1` in t0's array, which nothing reads after it
    assert body.lines[4:] == ("t0 += 1",) and body.results == ("t0",)


def test_only_what_the_results_need_is_printed(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    ops.call("exp", x)  # in the graph, not needed
    body = text(ops.call("sin", x))
    assert body.lines == () and body.results == ("np.sin(x)",)


def test_dims_are_bound_from_their_sources_in_argument_order(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    w = ops.leaf("param", "w", ("n",))
    mean = ops.reduce("mean", ops.matmul(X, w), None)  # divides by N
    count = ops.count(X, None)  # N * n
    body = printer.print_body(
        [mean, count], {}, ["X", "w"], {"n": ("w", 0), "N": ("X", 0)}
    )
    assert body.lines == ("N = np.shape(X)[0]", "n = np.shape(w)[0]")
    assert body.results == ("np.mean(X @ w)", "N * n")


def test_a_layer_activation_writes_over_its_pre_activation(ops: Ops) -> None:
    """act(X @ W + b) as an expert writes it: one array of the batch's size, not two
    (numpy reuses temporaries for operators, never for a function call)."""
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    b = ops.leaf("param", "b", ("h",))
    H = ops.call("tanh", ops.add(ops.matmul(X, W), b))
    V = ops.leaf("param", "V", ("n", "h"))
    R = ops.call("relu", ops.sub(ops.matmul(X, V), b))
    body = text(ops.add(H, R), {H: "H", R: "R"})
    assert body.lines == (
        "H = X @ W",
        "H += b",
        "np.tanh(H, out=H)",
        "R = X @ V",
        "R -= b",
        "np.maximum(R, 0, out=R)",
    )
    # numpy reuses the temporary by itself where the other operand is a number or
    # has the result's shape: one line, as before
    S = ops.call("exp", ops.add(ops.matmul(X, W), ops.const(1.0)))
    T = ops.add(ops.matmul(X, V), ops.leaf("input", "U", ("N", "h")))
    assert printer.print_body([S, T], {S: "S", T: "T"}, [], {}).lines == (
        "S = X @ W + 1",
        "np.exp(S, out=S)",
        "T = X @ V + U",
    )
    rng = np.random.default_rng(1)
    Xv, Wv, Vv = (
        rng.normal(size=(4, 3)),
        rng.normal(size=(3, 2)),
        rng.normal(size=(3, 2)),
    )
    bv = rng.normal(size=2)
    (value,) = evaluate([ops.add(H, R)], {X: Xv, W: Wv, V: Vv, b: bv})
    expected = np.tanh(Xv @ Wv + bv) + np.maximum(Xv @ Vv - bv, 0)
    assert np.allclose(value, expected)


def test_no_in_place_write_over_what_else_is_read(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    w = ops.leaf("param", "w", ("n",))
    z = ops.matmul(X, w)
    shared = ops.add(z, ops.const(1.0))
    cases = {
        "an argument": ops.call("tanh", w),
        "a view": ops.call("tanh", ops.transpose(X)),
        "a value used twice": ops.call("tanh", shared),
        "a spec variable": ops.call("exp", z),
        "a helper, not a ufunc": ops.call("sigmoid", ops.add(z, z)),
        "a mask": ops.call("exp", ops.add(ops.gt(z, z), ops.gt(z, z))),
        "a number": ops.call("tanh", ops.reduce("sum", z, None)),
    }
    for why, node in cases.items():
        body = printer.print_body([node, shared], {node: "out", z: "z"}, [], {})
        assert not any("out=" in line for line in body.lines), why


def test_helpers_are_collected(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    y = ops.leaf("param", "y", ("n",))
    assert text(ops.call("sigmoid", x)).helpers == {"sigmoid"}
    assert text(ops.reduce("logsumexp", x, None)).helpers == {"logsumexp"}
    both = ops.add(ops.call("sigmoid", x), ops.make("xlogy", x, y, shape=x.shape))
    assert text(both).helpers == {"sigmoid", "xlogy"}
    assert text(ops.call("tanh", x)).helpers == frozenset()


def test_printed_code_runs(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    w = ops.leaf("param", "w", ("n",))
    z = ops.call("sigmoid", ops.matmul(X, w))
    rng = np.random.default_rng(0)
    Xv, wv = rng.normal(size=(5, 3)), rng.normal(size=3)
    (value,) = evaluate([ops.reduce("logsumexp", z, None)], {X: Xv, w: wv})
    assert np.isclose(value, np.log(np.sum(np.exp(1 / (1 + np.exp(-Xv @ wv))))))


# -- the spelling of every plumbing op, with operands `a` and `b` ------------------

a_, b_ = Node(-1, "input", (), (), Name("a")), Node(-2, "input", (), (), Name("b"))
PLUMBING_CASES: dict[str, tuple[tuple[Node, ...], Attrs | None, str]] = {
    "input": ((), Name("X"), "X"),
    "param": ((), Name("w"), "w"),
    "dim": ((), Name("N"), "N"),
    "rows": ((a_,), Name("lo:hi"), "a[lo:hi]"),
    "const": ((), Value(0.5), "0.5"),
    "float": ((a_,), None, "np.float64(a)"),
    "sign": ((a_,), None, "np.sign(a)"),
    "gt": ((a_, b_), None, "a > b"),
    "eq": ((a_, b_), None, "a == b"),
    "ne": ((a_, b_), None, "a != b"),
    "ge": ((a_, b_), None, "a >= b"),
    "lt": ((a_, b_), None, "a < b"),
    "le": ((a_, b_), None, "a <= b"),
    "and_": ((a_, b_), None, "a & b"),
    "or_": ((a_, b_), None, "a | b"),
    "not_": ((a_,), None, "np.logical_not(a)"),  # a scalar: see below
    "nonzero": ((a_,), None, "np.where(a == 0, 1, a)"),
    "select": ((a_, b_, a_), None, "np.where(a, b, a)"),
    "vdot": ((a_, b_), None, "np.vdot(a, b)"),
    "iinput": ((), Name("y"), "y"),
    "put": ((a_, b_, a_), Index(("{1}", ":")), "_put(a, np.s_[b, :], a, float)"),
    "scatter_add": ((a_, b_, a_), None, "_scatter_add(a, b, a, float)"),
    "put_along": ((a_, b_, a_), Index((), 1), "_put_along(a, b, a, 1, float)"),
    "one_hot": ((a_, b_), None, "np.eye(b)[a]"),
    "arange": ((a_,), None, "np.arange(a)"),
    "xlogy": ((a_, b_), None, "_xlogy(a, b)"),
    "as_float": ((a_,), None, "np.asarray(a, dtype=float)"),
    "index": ((a_,), Position(1), "a[1]"),
    "expand_dims": ((a_,), Position(1), "a[:, None]"),
    "outer": ((a_, b_), None, "np.outer(a, b)"),
    "fill": ((a_, b_), None, "np.full(b, a, dtype=float)"),
    "copy": ((a_,), Position(0), "np.array(a, dtype=float)"),
    "shape": ((a_,), Count(1), "(a,)"),
    "sum_keep": ((a_,), Axes((0,)), "np.sum(a, axis=0, keepdims=True)"),
    "zeros_like": ((a_,), None, "np.zeros_like(a, dtype=float)"),
    "sum_axes": ((a_,), Axes((0, 2)), "np.sum(a, axis=(0, 2))"),
    "trail": ((a_,), Count(2), "a[..., None, None]"),
    "lift": ((a_,), Count(1), "a[None]"),
    "tfill": ((a_, b_), None, "np.broadcast_to(a, b)"),
    "tfull": ((a_, b_), None, "np.full(b, a, dtype=float)"),
    "zeros": ((a_,), None, "np.zeros(a)"),
    "eye": ((a_,), None, "np.eye(a)"),
    "reshaped": ((a_, b_), None, "a.reshape(b)"),
    "einsum": ((a_, b_), Subscripts("ij,jk->ik"), 'np.einsum("ij,jk->ik", a, b)'),
    "swap01": ((a_,), None, "np.swapaxes(a, 0, 1)"),
    "swapaxes": ((a_,), None, "np.swapaxes(a, -1, -2)"),
    "tensordot": (
        (a_, b_),
        TensorAxes((0, 1), (0, 1)),
        "np.tensordot(a, b, axes=([0, 1], [0, 1]))",
    ),
    "ones": ((a_,), None, "np.ones(a)"),
}


def test_every_plumbing_op_has_a_case() -> None:
    assert set(PLUMBING_CASES) == set(PLUMBING)


@pytest.mark.parametrize("op", sorted(PLUMBING_CASES))
def test_spell_plumbing(op: str) -> None:
    args, attrs, expected = PLUMBING_CASES[op]
    node = Node(0, op, args, (), attrs)
    operands = {a_: ("a", ATOM), b_: ("b", ATOM)}
    assert printer.spell(node, operands)[0] == expected


def test_spellings_of_a_scalar_operand() -> None:
    """Where the operand is a scalar, possibly a Python number, `~` and indexing
    are spelled for it: `~True` is -2, `0.5[None]` a TypeError (found by the
    tensor fuzzer)."""
    x = Node(-3, "input", (), ("n",), Name("x"))
    operands = {a_: ("a", ATOM), x: ("x", ATOM)}
    for arg, expected in ((x, "~x"), (a_, "np.logical_not(a)")):
        assert (
            printer.spell(Node(0, "not_", (arg,), arg.shape), operands)[0] == expected
        )
    index = Index(("None",))
    for arg, expected in ((x, "x[None]"), (a_, "np.asarray(a, dtype=float)[None]")):
        node = Node(0, "getitem", (arg,), (1, *arg.shape), index)
        assert printer.spell(node, operands)[0] == expected
    node = Node(0, "getitem", (a_,), (1,), index)
    assert printer.spell(node, operands, "float32")[0] == (
        "np.asarray(a, dtype=np.float32)[None]"
    )


def test_spell_parenthesises_operands_that_bind_looser() -> None:
    loose = {a_: ("p + q", ADD), b_: ("r", ATOM)}
    assert printer.spell(Node(0, "index", (a_,), (), Position(0)), loose)[0] == (
        "(p + q)[0]"
    )
    assert printer.spell(Node(0, "reshaped", (a_, b_), ()), loose)[0] == (
        "(p + q).reshape(r)"
    )
    assert printer.spell(Node(0, "sign", (a_,), ()), loose)[0] == "np.sign(p + q)"
    negative = printer.spell(Node(0, "const", (), (), Value(-3.0)), {})
    assert negative[0] == "-3" and negative[1] < ATOM


def test_an_op_without_a_spelling_is_refused(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    unknown = ops.graph.node("no_such_op", [x], x.shape)
    with pytest.raises(KeyError):
        printer.print_body([unknown], {}, ["x"], {})
