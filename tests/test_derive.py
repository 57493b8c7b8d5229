"""Unit tests of `derive` on small graphs built with `Ops`: the steps of reverse mode
(paths summed, broadcast operands unbroadcast, unused params, comparisons), and the
values of gradients and forward-mode Jacobians against closed forms and central
differences (the graphs are printed and run, `test_printer.evaluate`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from test_printer import evaluate

from gradgen import derive
from gradgen.graph import Node, ancestors
from gradgen.ops import Ops

STEP = 1e-6


@pytest.fixture
def ops() -> Ops:
    return Ops()


def central_difference(
    f: Callable[[np.ndarray], np.ndarray], at: np.ndarray
) -> np.ndarray:
    """d f / d at, of shape f(at).shape + at.shape."""
    columns = []
    for index in np.ndindex(*at.shape):
        plus, minus = at.copy(), at.copy()
        plus[index] += STEP
        minus[index] -= STEP
        columns.append((np.asarray(f(plus)) - np.asarray(f(minus))) / (2 * STEP))
    stacked = np.stack(columns, axis=-1)
    return stacked.reshape(np.shape(columns[0]) + at.shape)


def step_of(derivation: derive.Derivation, node: Node) -> derive.Step:
    (found,) = [s for s in derivation.steps if s.node is node]
    return found


def test_two_paths_are_summed(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    loss = ops.reduce("sum", ops.add(x, ops.powc(x, 2)), None)
    d = derive.gradients(ops, loss, [x])
    step = step_of(d, x)
    assert len(step.contributions) == 2  # through `+` and through `**2`
    assert step.adjoint.op == "add"
    xv = np.array([0.5, -1.5, 2.0])
    (g,) = evaluate([d.gradients["x"]], {x: xv})
    assert np.allclose(g, 1 + 2 * xv)  # d(x + x^2)/dx, not the one-path 2x


def test_steps_run_in_reverse_topological_order(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    loss = ops.reduce("sum", ops.call("exp", ops.call("sin", x)), None)
    d = derive.gradients(ops, loss, [x])
    ids = [s.node.id for s in d.steps]
    assert ids == sorted(ids, reverse=True) and d.steps[0].node is loss
    assert set(d.adjoints) == {s.node for s in d.steps}


def test_the_bias_adjoint_is_summed_over_the_batch(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    b = ops.leaf("param", "b", ("h",))
    z = ops.add(ops.matmul(X, W), b)
    loss = ops.reduce("sum", ops.call("tanh", z), None)
    d = derive.gradients(ops, loss, [W, b])
    partials = dict(step_of(d, z).partials)
    assert partials[1].op == "sum_axes" and partials[1].shape == ("h",)
    assert d.gradients["b"].shape == b.shape and d.gradients["W"].shape == W.shape
    rng = np.random.default_rng(1)
    Xv, Wv, bv = rng.normal(size=(5, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    gW, gb = evaluate([d.gradients["W"], d.gradients["b"]], {X: Xv, W: Wv, b: bv})
    adjoint = 1 - np.tanh(Xv @ Wv + bv) ** 2
    assert np.allclose(gb, adjoint.sum(axis=0))
    assert np.allclose(gW, Xv.T @ adjoint)


def test_a_size_one_axis_is_summed_keeping_it(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "h"))
    b = ops.leaf("param", "b", (1, "h"))
    loss = ops.reduce("sum", ops.powc(ops.add(X, b), 2), None)
    d = derive.gradients(ops, loss, [b])
    assert "sum_keep" in [n.op for n in ancestors([d.gradients["b"]])]
    rng = np.random.default_rng(2)
    Xv, bv = rng.normal(size=(5, 4)), rng.normal(size=(1, 4))
    (g,) = evaluate([d.gradients["b"]], {X: Xv, b: bv})
    assert g.shape == (1, 4) and np.allclose(g, 2 * (Xv + bv).sum(axis=0))


def test_a_lazy_scalar_adjoint_is_counted_not_summed(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    s = ops.leaf("param", "s", ())
    d = derive.gradients(ops, ops.reduce("sum", ops.add(x, s), None), [x, s])
    assert "sum_axes" not in [n.op for n in ancestors([d.gradients["s"]])]
    gx, gs = evaluate(list(d.gradients.values()), {x: np.zeros(7), s: 0.0})
    assert gs == 7.0 and gx.tolist() == [1.0] * 7


def test_a_param_the_loss_does_not_use_gets_zeros(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    u = ops.leaf("param", "u", ("m",))
    d = derive.gradients(ops, ops.reduce("sum", ops.call("sin", x), None), [x, u])
    assert u not in d.adjoints and d.gradients["u"].op == "zeros_like"
    _, gu = evaluate(
        [d.gradients["x"], d.gradients["u"]], {x: np.ones(2), u: np.ones(3)}
    )
    assert gu.tolist() == [0.0, 0.0, 0.0]


def test_a_comparison_passes_nothing(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    mask = ops.gt(x, ops.const(0.0))
    loss = ops.reduce("sum", ops.mul(x, mask), None)
    d = derive.gradients(ops, loss, [x])
    assert step_of(d, mask).partials == ()  # the condition gets no derivative
    assert len(step_of(d, x).contributions) == 1  # only through `x *`
    (g,) = evaluate([d.gradients["x"]], {x: np.array([-2.0, 3.0, -0.5, 1.0])})
    assert g.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_gradients_of_a_nested_chain_match_the_closed_form(ops: Ops) -> None:
    x = ops.leaf("param", "x", ())  # the article's ln(sin(x^3)^2): 6 x^2 cot(x^3)
    loss = ops.call("log", ops.powc(ops.call("sin", ops.powc(x, 3)), 2))
    d = derive.gradients(ops, loss, [x])
    (g,) = evaluate([d.gradients["x"]], {x: 1.0})
    assert np.isclose(g, 6 / np.tan(1.0))


@pytest.mark.parametrize(
    ("output_shape", "param_shape"),
    [((), ()), (("n",), ()), ((), ("n",)), (("N", "h"), ("n", "h")), (("N",), ("h",))],
)
def test_jacobian_shape_is_output_then_param(
    ops: Ops, output_shape: tuple[str, ...], param_shape: tuple[str, ...]
) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    b = ops.leaf("param", "b", ("h",))
    s = ops.leaf("param", "s", ())
    z = ops.call("tanh", ops.add(ops.mul(ops.matmul(X, W), s), b))  # [N, h]
    outputs = {
        (): ops.reduce("sum", z, None),
        ("n",): ops.mul(s, ops.reduce("sum", X, 0)),
        ("N", "h"): z,
        ("N",): ops.reduce("sum", z, 1),
    }
    params = {(): s, ("n",): ops.leaf("param", "w", ("n",)), ("n", "h"): W, ("h",): b}
    output, param = outputs[output_shape], params[param_shape]
    assert derive.jacobian(ops, output, param).shape == output.shape + param.shape


def test_jacobians_match_central_differences(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    b = ops.leaf("param", "b", ("h",))
    out = ops.call("tanh", ops.add(ops.matmul(X, W), b))
    rng = np.random.default_rng(3)
    values = {X: rng.normal(size=(5, 3)), W: rng.normal(size=(3, 4))}
    values[b] = rng.normal(size=4)
    jW, jb = evaluate(
        [derive.jacobian(ops, out, W), derive.jacobian(ops, out, b)], values
    )
    Xv, Wv, bv = values[X], values[W], values[b]
    assert jW.shape == (5, 4, 3, 4) and jb.shape == (5, 4, 4)
    expected_W = central_difference(lambda w: np.tanh(Xv @ w + bv), Wv)
    expected_b = central_difference(lambda c: np.tanh(Xv @ Wv + c), bv)
    assert np.allclose(jW, expected_W, atol=1e-7)
    assert np.allclose(jb, expected_b, atol=1e-7)


def test_jacobian_of_a_scalar_agrees_with_its_gradient(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    w = ops.leaf("param", "w", ("n",))
    loss = ops.reduce("logsumexp", ops.call("sigmoid", ops.matmul(A, w)), None)
    rng = np.random.default_rng(4)
    values = {A: rng.normal(size=(4, 3)), w: rng.normal(size=3)}
    gradient = derive.gradients(ops, loss, [w]).gradients["w"]
    g, j = evaluate([gradient, derive.jacobian(ops, loss, w)], values)
    assert j.shape == (3,) and np.allclose(g, j)


def test_the_jacobian_of_an_unrelated_param_is_zeros(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    u = ops.leaf("param", "u", ("m",))
    jacobian = derive.jacobian(ops, ops.call("exp", x), u)
    assert jacobian.op == "zeros" and jacobian.shape == ("n", "m")
    (value,) = evaluate([jacobian], {x: np.ones(2), u: np.ones(3)})
    assert value.shape == (2, 3) and not value.any()


def test_unbroadcast_sums_only_the_repeated_axes(ops: Ops) -> None:
    g = ops.leaf("input", "g", ("N", "h"))
    out = ops.leaf("input", "out", ("N", "h"))
    row = ops.leaf("param", "row", ("h",))
    full = ops.leaf("param", "full", ("N", "h"))
    assert derive.unbroadcast(ops, g, full, out) is g
    summed = derive.unbroadcast(ops, g, row, out)
    assert summed.op == "sum_axes" and summed.args == (g,) and summed.shape == ("h",)
