"""Unit tests of `factor`: Jacobians kept as einsum products. An element-wise factor
lines up with the value axes by position, identities over summed labels vanish,
products of three or more factors are split into pairs, and labels are canonical."""

from __future__ import annotations

import numpy as np
import pytest
from test_derive import central_difference
from test_printer import evaluate

from gradgen import derive, factor
from gradgen.graph import Node, Subscripts, attr
from gradgen.ops import Ops


@pytest.fixture
def ops() -> Ops:
    return Ops()


def spec_of(node: Node) -> str:
    assert node.op == "einsum", node.op
    return attr(node, Subscripts).spec


def test_an_elementwise_factor_aligns_by_position_not_dim_name(ops: Ops) -> None:
    # Every axis is D: a [D] factor scales the value's columns (numpy broadcasting
    # from the right), whatever the names say. Matching names once scaled rows.
    X = ops.leaf("input", "X", ("D", "D"))
    W = ops.leaf("param", "W", ("D", "D"))
    v = ops.leaf("input", "v", ("D",))
    tangent = derive.jacobian(ops, ops.matmul(X, W), W)
    assert spec_of(tangent) == "ip,jq->ijpq"
    made = factor.times_elementwise(ops, tangent, v, tangent.shape, 2)
    assert made is not None and spec_of(made) == "ik,jl,j->ijkl"  # v takes label j
    assert made.args[2] is v
    rng = np.random.default_rng(5)
    Xv, Wv, vv = (rng.normal(size=s) for s in ((3, 3), (3, 3), (3,)))
    jacobian = derive.jacobian(ops, ops.mul(ops.matmul(X, W), v), W)
    (value,) = evaluate([jacobian], {X: Xv, W: Wv, v: vv})
    expected = central_difference(lambda w: (Xv @ w) * vv, Wv)
    assert np.allclose(value, expected, atol=1e-7)


def test_a_full_elementwise_factor_takes_every_value_label(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    tangent = derive.jacobian(ops, ops.matmul(X, W), W)
    f = ops.call("tanh", ops.matmul(X, W))
    made = factor.times_elementwise(ops, tangent, f, tangent.shape, 2)
    assert made is not None and spec_of(made) == "ik,jl,ij->ijkl"


def test_times_elementwise_refuses_what_it_cannot_line_up(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    tangent = derive.jacobian(ops, ops.matmul(X, W), W)
    wrong = ops.leaf("input", "q", ("n",))  # the last value axis is h, not n
    assert factor.times_elementwise(ops, tangent, wrong, tangent.shape, 2) is None
    h = ops.leaf("input", "r", ("h",))
    assert factor.times_elementwise(ops, X, h, X.shape, 0) is None  # not a product


def test_product_eliminates_an_identity_over_a_summed_label(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    B = ops.leaf("input", "B", ("n", "k"))
    eye = ops.eye("n")
    assert factor.product(ops, [(A, "ab"), (eye, "bc")], "ac", A.shape) is A
    made = factor.product(ops, [(A, "xy"), (eye, "yz"), (B, "zw")], "xw", ("m", "k"))
    assert spec_of(made) == "ik,kj->ij" and made.args == (A, B)
    rng = np.random.default_rng(6)
    Av, Bv = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    (value,) = evaluate([made], {A: Av, B: Bv})
    assert np.allclose(value, Av @ Bv)


def test_product_keeps_an_identity_whose_labels_are_both_in_the_output(
    ops: Ops,
) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    eye = ops.eye("h")
    made = factor.product(ops, [(A, "ip"), (eye, "jq")], "ijpq", ("m", "h", "n", "h"))
    assert spec_of(made) == "ik,jl->ijkl" and made.args == (A, eye)


def test_a_matmul_tangent_joins_the_product(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    V = ops.leaf("input", "V", ("h", "k"))
    tangent = derive.jacobian(ops, ops.matmul(X, W), W)  # X[i,p] delta(j,q)
    made = ops.einsum("ik...,kj->ij...", tangent, V, ("N", "k", "n", "h"))
    assert spec_of(made) == "ik,lj->ijkl" and made.args == (X, V)  # no eye left


def test_a_sum_drops_the_label(ops: Ops) -> None:
    X = ops.leaf("input", "X", ("N", "n"))
    W = ops.leaf("param", "W", ("n", "h"))
    tangent = derive.jacobian(ops, ops.matmul(X, W), W)
    summed = ops.sum_axes(tangent, (0,))
    assert spec_of(summed) == "lj,ik->ijk" and summed.shape == ("h", "n", "h")
    rng = np.random.default_rng(7)
    Xv, Wv = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    (value,) = evaluate([summed], {X: Xv, W: Wv})
    expected = central_difference(lambda w: (Xv @ w).sum(axis=0), Wv)
    assert np.allclose(value, expected, atol=1e-7)


def test_pairwise_splits_three_factors_into_pairs(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    B = ops.leaf("input", "B", ("n", "k"))
    C = ops.leaf("input", "C", ("k", "l"))
    three = ops.make(
        "einsum", A, B, C, attrs=Subscripts("ij,jk,kl->il"), shape=("m", "l")
    )
    split = factor.pairwise(ops, three)
    assert split is not None and len(split.args) == 2
    inner = [a for a in split.args if a.op == "einsum"]
    assert len(inner) == 1 and len(inner[0].args) == 2
    rng = np.random.default_rng(8)
    values = {A: rng.normal(size=(2, 3)), B: rng.normal(size=(3, 4))}
    values[C] = rng.normal(size=(4, 5))
    got, reference = evaluate([split, three], values)
    assert np.allclose(got, values[A] @ values[B] @ values[C])
    assert np.allclose(got, reference)
    two = ops.make("einsum", A, B, attrs=Subscripts("ij,jk->ik"), shape=("m", "k"))
    assert factor.pairwise(ops, two) is None


def test_pairwise_prefers_a_pair_the_graph_already_has(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("n", "n"))
    B = ops.leaf("input", "B", ("n", "n"))
    C = ops.leaf("input", "C", ("n", "n"))
    # (B C)^T, as pairwise spells the pair B, C of this product (output labels first)
    known = ops.make("einsum", B, C, attrs=Subscripts("jk,ki->ij"), shape=B.shape)
    three = ops.make(
        "einsum", A, B, C, attrs=Subscripts("ij,jk,kl->il"), shape=("n", "n")
    )
    split = factor.pairwise(ops, three)  # (A B) C would tie on size, and come first
    assert split is not None and known in split.args


def test_canonical_labels_are_stable(ops: Ops) -> None:
    A = ops.leaf("input", "A", ("m", "n"))
    B = ops.leaf("input", "B", ("n", "k"))
    one = factor._canonical([(A, "zq"), (B, "qa")], "za")
    other = factor._canonical([(A, "ba"), (B, "ac")], "bc")
    assert one == other == ([(A, "ik"), (B, "kj")], "ij")  # output labels first
    assert factor._canonical(*one) == one
    first = factor.product(ops, [(A, "xy"), (B, "yw")], "xw", ("m", "k"))
    second = factor.product(ops, [(A, "PQ"), (B, "QR")], "PR", ("m", "k"))
    assert first is second  # same product, same node
