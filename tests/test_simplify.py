"""Unit tests of `simplify`: the rewrites applied to every node as `Ops` builds it, and
the hash-consing of `graph.Graph`. Each rewrite is checked by the node it returns and,
where the form matters numerically, by its printed value."""

from __future__ import annotations

import numpy as np
import pytest
from test_printer import evaluate

from gradgen.graph import Axis, Count, Exponent, Value, attr
from gradgen.ops import Ops


@pytest.fixture
def ops() -> Ops:
    return Ops()


def test_constant_folding(ops: Ops) -> None:
    two, three = ops.const(2.0), ops.const(3.0)
    assert ops.add(two, three) is ops.const(5.0)
    assert ops.sub(two, three).value == -1.0
    assert ops.mul(two, three).value == 6.0
    assert ops.div(three, two).value == 1.5
    assert ops.neg(two).value == -2.0
    assert ops.mul(ops.add(two, three), ops.neg(two)).value == -10.0


def test_no_folding_to_a_non_finite_number(ops: Ops) -> None:
    assert ops.div(ops.const(1.0), ops.const(0.0)).op == "div"
    assert ops.mul(ops.const(1e308), ops.const(10.0)).op == "mul"


def test_identities(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    one, zero = ops.const(1.0), ops.const(0.0)
    assert ops.mul(x, one) is x and ops.mul(one, x) is x
    assert ops.add(x, zero) is x and ops.add(zero, x) is x
    assert ops.sub(x, zero) is x
    assert ops.div(x, one) is x
    assert ops.neg(ops.neg(x)) is x
    assert ops.powc(x, 1) is x
    assert ops.mul(x, ops.const(-1.0)) is ops.neg(x)
    assert ops.sub(zero, x) is ops.neg(x)


def test_signs_move_out_and_subtractions_flip(ops: Ops) -> None:
    a, b = ops.leaf("input", "a", ()), ops.leaf("input", "b", ())
    assert ops.neg(ops.sub(a, b)) is ops.sub(b, a)  # -(a - b) = b - a
    assert ops.add(a, ops.neg(b)) is ops.sub(a, b)
    assert ops.add(ops.neg(a), b) is ops.sub(b, a)
    assert ops.sub(a, ops.neg(b)) is ops.add(a, b)
    assert ops.mul(ops.neg(a), b) is ops.neg(ops.mul(a, b))
    assert ops.div(ops.neg(a), b) is ops.neg(ops.div(a, b))


def test_constants_go_first_and_scalars_combine_before_an_array(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    s = ops.leaf("input", "s", ())
    c, d = ops.const(3.0), ops.const(4.0)
    assert ops.mul(x, c).args == (c, x)  # 3 * x
    scaled = ops.div(ops.mul(c, x), d)  # (c*x)/d = (c/d)*x: one pass over x
    assert scaled.op == "mul" and scaled.args == (ops.const(0.75), x)
    nested = ops.mul(s, ops.mul(c, x))  # s*(c*x) = (s*c)*x
    assert nested.op == "mul" and nested.args[1] is x
    assert nested.args[0] is ops.mul(s, c) and nested.args[0].rank == 0
    assert ops.mul(ops.div(ops.const(1.0), s), x) is ops.div(x, s)  # (1/s)*x = x/s


def test_one_times_a_mask_is_a_float_array(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    mask = ops.gt(x, ops.const(0.0))
    made = ops.mul(ops.const(1.0), mask)
    assert made.op == "as_float" and made.args == (mask,)
    (value,) = evaluate([made], {x: np.array([-1.0, 2.0])})
    assert value.dtype == np.float64 and value.tolist() == [0.0, 1.0]


def test_log_rewrites(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    exp = ops.call("exp", x)
    one = ops.const(1.0)
    softplus = ops.call("softplus", x)
    assert ops.call("log", exp) is x  # log(exp(x)) = x
    assert ops.call("log", ops.add(one, exp)) is softplus  # log(1 + e^x)
    assert ops.call("log", ops.add(exp, one)) is softplus  # log(e^x + 1)
    minus = ops.neg(ops.call("softplus", ops.neg(x)))
    assert ops.call("log", ops.call("sigmoid", x)) is minus  # -softplus(-x)
    sig = ops.call("sigmoid", x)
    assert ops.call("log", ops.sub(one, sig)) is ops.neg(softplus)
    A = ops.leaf("input", "A", ("m", "n"))
    lse = ops.call("log", ops.reduce("sum", ops.call("exp", A), 1))
    assert lse.op == "logsumexp" and lse.args == (A,) and attr(lse, Axis).axes == (1,)


def test_stable_forms_are_finite_where_the_textbook_form_overflows(
    ops: Ops,
) -> None:
    z = ops.leaf("param", "z", ("n",))
    exp = ops.call("exp", z)
    forms = [
        ops.call("log", ops.add(ops.const(1.0), exp)),
        ops.call("log", ops.call("sigmoid", z)),
        ops.call("log", ops.reduce("sum", exp, None)),
    ]
    zv = np.array([-800.0, 0.0, 800.0])
    softplus, log_sigmoid, lse = evaluate(forms, {z: zv})
    assert np.allclose(softplus, [0.0, np.log(2.0), 800.0])
    assert np.allclose(log_sigmoid, [-800.0, -np.log(2.0), 0.0])
    assert np.isclose(lse, 800.0)


def test_transposes(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    v = ops.leaf("input", "v", ("n",))
    u = ops.leaf("input", "u", ("m",))
    assert ops.transpose(ops.transpose(A)) is A  # (A^T)^T = A
    assert ops.transpose(v) is v  # .T of a vector is itself
    assert ops.transpose(ops.outer(u, v)) is ops.outer(v, u)


def test_powers(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    assert ops.powc(x, 0.5) is ops.call("sqrt", x)
    assert ops.pow(x, ops.const(0.5)) is ops.call("sqrt", x)
    inverse = ops.powc(x, -3)  # 1 / x**3, a product once lowered
    assert inverse.op == "div" and inverse.args[0].value == 1.0
    assert attr(inverse.args[1], Exponent).k == 3.0
    zeroth = ops.powc(x, 0)  # ones of x's shape, not x**0 (whose derivative is 0/x)
    assert zeroth.op == "fill" and zeroth.shape == x.shape
    assert ops.powc(ops.leaf("input", "s", ()), 0) is ops.const(1.0)
    assert ops.powc(x, 2).op == "powc"  # numpy's x**2 is fast already
    (value,) = evaluate([ops.add(zeroth, inverse)], {x: np.array([1.0, 2.0])})
    assert value.tolist() == [2.0, 1.125]


def test_trailing_no_axes_is_the_value(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    s = ops.leaf("input", "s", ())
    assert ops.trail(x, 0) is x and ops.lift(x, 0) is x
    assert ops.trail(s, 2) is s  # a scalar broadcasts anyway
    assert attr(ops.trail(x, 2), Count).count == 2


def test_fresh_fills_of_an_owned_value_are_the_value(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    e = ops.call("exp", x)
    assert ops.fill(e, x) is e  # already a fresh array of that shape
    assert ops.fill(x, x).op == "fill"  # the caller's array: filled, not returned
    assert ops.fill(ops.const(2.0), x).op == "fill"  # a shape it does not have


def test_hash_consing(ops: Ops) -> None:
    x = ops.leaf("param", "x", ("n",))
    y = ops.leaf("param", "y", ("n",))
    assert ops.leaf("param", "x", ("n",)) is x
    assert ops.const(2) is ops.const(2.0)
    assert ops.add(x, y) is ops.add(x, y)
    assert ops.add(x, y) is not ops.add(y, x)  # operands in order
    assert ops.reduce("sum", x, 0) is not ops.reduce("sum", x, None)  # attrs count
    assert ops.call("exp", ops.mul(x, y)) is ops.call("exp", ops.mul(x, y))
    before = len(ops.graph.nodes)
    ops.call("exp", ops.mul(x, y))
    assert len(ops.graph.nodes) == before
    assert [n.id for n in ops.graph.nodes] == list(range(before))  # creation order


def test_const_minus_zero_is_zero(ops: Ops) -> None:
    assert ops.const(-0.0) is ops.const(0.0)
    assert ops.const(0.0).attrs == Value(0.0)
