"""Unit tests of `lower`: integer powers as products (squares shared), sums of squares
as dot products, and fresh results (a copy exactly where a result would be the
caller's array, a view of it, a Python number, or another result's memory)."""

from __future__ import annotations

import numpy as np
import pytest
from test_printer import evaluate

from gradgen import derive, lower
from gradgen.graph import Axis, Node, ancestors
from gradgen.ops import Ops
from gradgen.printer import print_body


@pytest.fixture
def ops() -> Ops:
    return Ops()


def ops_in(node: Node) -> list[str]:
    return [n.op for n in ancestors([node])]


@pytest.mark.parametrize("k", range(3, lower.MAX_PRODUCT_POWER + 1))
def test_an_integer_power_is_products_by_squaring(ops: Ops, k: int) -> None:
    x = ops.leaf("param", "x", ("n",))
    power = ops.powc(x, k)
    lowered = lower.lower_powers(ops, [power])[power]
    found = ops_in(lowered)
    assert "powc" not in found
    # squarings plus one product per further set bit: x**8 is 3, x**7 is 4
    assert found.count("mul") == k.bit_length() - 1 + k.bit_count() - 1
    xv = np.array([0.5, -1.25, 1.5])
    (value,) = evaluate([lowered], {x: xv})
    assert np.allclose(value, xv**k)


def test_squares_are_shared(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    power = ops.powc(x, 6)
    lowered = lower.lower_powers(ops, [power])[power]
    body = print_body([lowered], {}, ["x"], {})
    assert body.lines == ("t0 = x * x",) and body.results == ("t0 * t0 * t0",)
    cube = ops.powc(x, 3)
    body = print_body([lower.lower_powers(ops, [cube])[cube]], {}, ["x"], {})
    assert body.lines == () and body.results == ("x * x * x",)


@pytest.mark.parametrize("k", [2, 2.5, -0.5, lower.MAX_PRODUCT_POWER + 1])
def test_other_powers_stay(ops: Ops, k: float) -> None:
    x = ops.leaf("param", "x", ("n",))
    power = ops.powc(x, k)
    assert lower.lower_powers(ops, [power])[power] is power


def test_parents_of_a_lowered_node_are_rebuilt(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    cube = ops.powc(x, 3)
    root = ops.call("exp", cube)
    new = lower.lower_powers(ops, [root])
    assert new[x] is x
    assert new[root].op == "exp" and new[root].args == (new[cube],)
    assert "powc" not in ops_in(new[root])


def test_a_sum_of_squares_of_a_vector_is_a_dot_product(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    total = ops.reduce("sum", ops.powc(x, 2), None)
    mean = ops.reduce("mean", ops.call("square", x), None)
    new = lower.lower_powers(ops, [total, mean])
    assert new[total] is ops.matmul(x, x)
    assert new[mean].op == "div" and new[mean].args[0] is ops.matmul(x, x)
    assert print_body([new[mean]], {}, ["x"], {"n": ("x", 0)}).results == ("x @ x / n",)
    xv = np.array([1.0, -2.0, 3.0])
    got = evaluate([new[total], new[mean]], {x: xv})
    assert np.allclose(got, [14.0, 14.0 / 3])


def test_a_sum_of_a_product_of_two_vectors_is_a_dot_product(ops: Ops) -> None:
    u = ops.leaf("param", "u", ("n",))
    v = ops.leaf("param", "v", ("n",))
    total = ops.reduce("sum", ops.mul(u, v), None)
    mean = ops.reduce("mean", ops.mul(u, ops.gt(v, ops.const(0))), None)
    masks = ops.reduce("sum", ops.mul(ops.gt(u, v), ops.gt(v, u)), None)
    broadcast = ops.reduce("sum", ops.mul(u, ops.leaf("param", "s", ())), None)
    new = lower.lower_powers(ops, [total, mean, masks, broadcast])
    assert new[total] is ops.matmul(u, v)
    assert new[mean].op == "div" and new[mean].args[0].op == "matmul"
    assert new[masks] is masks  # bool @ bool is a logical and, not a count
    assert new[broadcast] is broadcast  # a scalar factor: no dot product
    uv, vv = np.array([1.0, -2.0, 3.0]), np.array([0.5, 1.0, -1.0])
    got = evaluate([new[total], new[mean], new[masks]], {u: uv, v: vv})
    assert np.allclose(got, [uv @ vv, np.mean(uv * (vv > 0)), 0.0])


def test_a_sum_of_squares_of_a_matrix_is_a_flat_dot_product(ops: Ops) -> None:
    A = ops.leaf("param", "A", ("m", "n"))
    B = ops.leaf("param", "B", ("m", "n"))
    total = ops.reduce("sum", ops.powc(A, 2), None)
    mean = ops.reduce("mean", ops.reduce("mean", ops.mul(A, B), 1), None)
    rows = ops.reduce("sum", ops.powc(A, 2), Axis((1,), keepdims=True))
    kept = ops.reduce("sum", rows, None)
    new = lower.lower_powers(ops, [total, mean, kept])
    assert new[total] is ops.make("vdot", A, A, shape=())
    assert new[mean].op == "div" and new[mean].args[0].op == "vdot"
    assert new[kept] is kept  # a keepdims reduction inside: left as it is
    dims = {"m": ("A", 0), "n": ("A", 1)}
    assert print_body([new[mean]], {}, ["A", "B"], dims).results == (
        "np.vdot(A, B) / (m * n)",
    )
    Av, Bv = np.arange(6.0).reshape(2, 3), np.linspace(-1, 1, 6).reshape(2, 3)
    got = evaluate([new[total], new[mean], new[kept]], {A: Av, B: Bv})
    assert np.allclose(got, [np.sum(Av**2), np.mean(Av * Bv), np.sum(Av**2)])


def test_fresh_copies_the_callers_arrays_and_views_of_them(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    A = ops.leaf("param", "A", ("m", "n"))
    made = lower.fresh(ops, [x, ops.transpose(A)])
    assert [n.op for n in made] == ["copy", "copy"]
    xv, Av = np.ones(2), np.ones((3, 2))
    got = evaluate(made, {x: xv, A: Av})
    assert not np.shares_memory(got[0], xv) and not np.shares_memory(got[1], Av)


def test_fresh_leaves_an_owned_array_alone(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    e = ops.call("exp", x)
    assert lower.fresh(ops, [e, ops.call("sin", x)]) == [e, ops.call("sin", x)]


def test_fresh_makes_two_arrays_of_two_identical_results(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    e = ops.call("exp", x)
    first, second = lower.fresh(ops, [e, e])
    assert first is e and second.op == "copy" and second.args == (e,)
    a, b = evaluate([first, second], {x: np.zeros(3)})
    assert not np.shares_memory(a, b) and np.array_equal(a, b)


def test_fresh_copies_a_view_of_another_results_memory(ops: Ops) -> None:
    A = ops.leaf("param", "A", ("m", "n"))
    e = ops.call("exp", A)
    view, owner = lower.fresh(ops, [ops.transpose(e), e])
    assert view.op == "transpose" and owner.op == "copy"
    a, b = evaluate([view, owner], {A: np.zeros((2, 3))})
    assert not np.shares_memory(a, b)


def test_fresh_makes_a_python_number_a_float_array(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    (count,) = lower.fresh(ops, [ops.count(x, None)])
    assert count.op == "copy"
    (value,) = evaluate([count], {x: np.zeros(4)})
    assert isinstance(value, np.ndarray) and value.dtype == np.float64 and value == 4


# -- bugs found while writing these tests ---------------------------------------------


def test_a_jacobian_result_is_writable(ops: Ops) -> None:
    """BUG: d (X + exp(s)).T / ds lowers to np.swapaxes(np.broadcast_to(...), 0, 1):
    a read-only view with zero strides, returned as the caller's own array."""
    X = ops.leaf("input", "X", ("m", "n"))
    s = ops.leaf("param", "s", ())
    out = ops.transpose(ops.add(X, ops.call("exp", s)))
    (jacobian,) = lower.fresh(ops, [derive.jacobian(ops, out, s)])
    (value,) = evaluate([jacobian], {X: np.zeros((2, 3)), s: 0.0})
    assert value.shape == (3, 2) and np.allclose(value, 1.0)
    assert value.flags.writeable


def test_a_filled_scalar_gradient_is_not_copied_again(ops: Ops) -> None:
    """BUG: the gradient of sum(x + s) for a scalar s is np.full((), n, dtype=float),
    already a fresh float array; `fresh` takes it for a Python number and copies it
    (`np.array(dL_ds, dtype=float)` in the generated module)."""
    x = ops.leaf("param", "x", ("n",))
    s = ops.leaf("param", "s", ())
    d = derive.gradients(ops, ops.reduce("sum", ops.add(x, s), None), [x, s])
    assert d.gradients["s"].op == "fill"
    _, gs = lower.fresh(ops, [d.gradients["x"], d.gradients["s"]])
    assert gs is d.gradients["s"]


def test_a_mean_s_constant_multiplies_the_gradients_not_the_batch(ops: Ops) -> None:
    """dL/dw = 2/N X.T (e * mask): the 2/N goes through the mask and the matrix
    product to the [n] result; a number that meets no sum stays where it was."""
    X = ops.leaf("input", "X", ("N", "n"))
    w = ops.leaf("param", "w", ("n",))
    y = ops.leaf("input", "y", ("N",))
    z = ops.matmul(X, w)
    e = ops.sub(z, y)
    scale = ops.div(ops.const(2.0), ops.dimension("N"))
    g = ops.mul(ops.mul(scale, e), ops.gt(z, ops.const(0.0)))
    dw = ops.matmul(ops.transpose(X), g)
    db = ops.reduce("sum", g, None)
    local = ops.mul(ops.const(3.0), ops.call("sin", e))  # no sum: stays
    new = lower.scale_late(ops, [dw, db, local])
    core = ops.mul(e, ops.gt(z, ops.const(0.0)))
    assert new[dw] is ops.mul(scale, ops.matmul(ops.transpose(X), core))
    assert new[db] is ops.mul(scale, ops.reduce("sum", core, None))
    assert new[local] is local
    rng = np.random.default_rng(2)
    values = {X: rng.normal(size=(5, 3)), w: rng.normal(size=3), y: rng.normal(size=5)}
    got = evaluate([new[dw], new[db], new[local]], values)
    want = evaluate([dw, db, local], values)
    for a, b in zip(got, want, strict=True):
        assert np.allclose(a, b)


def test_a_constant_is_multiplied_in_where_a_step_is_not_linear(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    w = ops.leaf("param", "w", ("n",))
    t = ops.mul(ops.const(0.5), ops.matmul(X, w))  # reduced, then non-linear
    r = ops.reduce("sum", ops.call("exp", t), None)
    new = lower.scale_late(ops, [r])
    assert new[r] is ops.reduce(
        "sum", ops.call("exp", ops.mul(ops.const(0.5), ops.matmul(X, w))), None
    )


def test_a_constant_times_a_mask_keeps_its_constant(ops: Ops) -> None:
    """Found by the random specs: -(D * mask) summed, with the D taken out, left
    numpy a boolean negation (a TypeError)."""
    x = ops.leaf("param", "x", ("D",))
    y = ops.leaf("input", "y", ("D",))
    masked = ops.mul(ops.dimension("D"), ops.ne(x, y))
    total = ops.reduce("sum", ops.neg(masked), None)
    new = lower.scale_late(ops, [total])
    xv, yv = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 0.0])
    assert evaluate([new[total]], {x: xv, y: yv}) == [-6.0]
