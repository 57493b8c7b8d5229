"""Regressions: problems found by review and fuzzing, each pinned by a small spec.

Every module here is generated from a spec written inline, imported, and checked
against finite differences or against the contract it broke."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import generate_and_import

_count = itertools.count()


def module_from(tmp_path: Path, text: str) -> tuple[ModuleType, str]:
    spec = tmp_path / f"regression_{next(_count)}.yaml"
    spec.write_text("gradgen: 1\n" + text, encoding="utf-8")
    return generate_and_import(spec, tmp_path)


def central(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    out = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        out[i] = (f(up) - f(down)) / (2 * h)
    return out


def test_vector_literal_times_a_size_one_vector(tmp_path: Path) -> None:
    """The adjoint of [a, b] arrives with shape [1]: each element takes g[0]."""
    m, _ = module_from(
        tmp_path, "params: {a: [], b: [], k: [1]}\nloss: sum(k * [a, b])\n"
    )
    a, b, k = 0.7, -1.3, np.array([2.5])
    g = m.gradients(a, b, k)
    assert g.a == pytest.approx(2.5) and g.b == pytest.approx(2.5)
    assert np.allclose(g.k, [a + b])


def test_masks_work_with_python_float_scalars(tmp_path: Path) -> None:
    m, _ = module_from(
        tmp_path,
        "params: {s: [], w: [n]}\nloss: relu(s) + sum(w * w)\noutputs: {o: relu(s) * w}\n",
    )
    w = np.ones(3)
    assert m.gradients(0.5, w).s == pytest.approx(1.0)
    assert m.gradients(-0.5, w).s == pytest.approx(0.0)
    jac = m.jacobian_o(0.5, w)
    assert np.allclose(jac.s, w) and np.allclose(jac.w, 0.5 * np.eye(3))


def test_jacobian_fields_are_the_params_the_output_depends_on(tmp_path: Path) -> None:
    """`w` is passed only so that the dim n can be read; o does not depend on it."""
    m, _ = module_from(tmp_path, "params: {s: [], w: [n]}\noutputs: {o: s * n}\n")
    jac = m.jacobian_o(2.0, np.ones(4))
    assert jac._fields == ("s",)
    assert isinstance(jac.s, np.ndarray) and jac.s == 4.0


def test_gradients_made_of_dims_are_floats(tmp_path: Path) -> None:
    m, _ = module_from(tmp_path, "inputs: {X: [N, n]}\nparams: {s: []}\nloss: s * N\n")
    g = m.gradients(np.ones((4, 2)), 1.5)
    assert isinstance(g.s, np.ndarray) and g.s.dtype == float and g.s == 4.0


def test_results_never_alias_the_callers_arrays_or_each_other(tmp_path: Path) -> None:
    m, _ = module_from(
        tmp_path,
        "inputs: {X: [n, m]}\nparams: {W: [m, n], a: [n], b: [n]}\n"
        "loss: sum(W * X.T) + sum(a + b)\noutputs: {u: a, v: (X * 2).T @ a}\n",
    )
    X, W, a, b = np.ones((3, 2)), np.ones((2, 3)), np.ones(3), np.ones(3)
    g = m.gradients(X, W, a, b)
    assert np.array_equal(g.W, X.T) and not np.shares_memory(g.W, X)
    assert g.a is not g.b and np.array_equal(g.a, g.b)
    u = m.u(a)
    assert np.array_equal(u, a) and not np.shares_memory(u, a)


def test_the_spec_names_are_never_renamed_as_gradients(tmp_path: Path) -> None:
    """d(z * wt)/dz is wt: the code must still call it wt, not dL_dz."""
    _, text = module_from(
        tmp_path,
        "inputs: {X: [N, n], y: [N]}\nparams: {w: [n]}\n"
        "define: {z: X @ w, wt: exp(-y)}\nloss: sum(z * wt)\n",
    )
    body = text.split("def loss_and_gradients(")[1]
    assert "wt = -y\n    np.exp(wt, out=wt)" in body  # exp in place of its temporary
    assert "dL_dz =" not in body


def test_a_zeroth_power_has_a_zero_derivative_everywhere(tmp_path: Path) -> None:
    m, _ = module_from(tmp_path, "params: {w: [n]}\nloss: sum(w**0) + sum(w * w)\n")
    w = np.array([0.0, 1.0, -2.0])
    with np.errstate(all="raise"):
        g = m.gradients(w)
    assert np.array_equal(g.w, 2 * w)
    assert m.loss(w) == pytest.approx(3 + 5)


def test_broadcast_operands_against_finite_differences(tmp_path: Path) -> None:
    """Scalars, rows and columns broadcast against a matrix, through + - * / and
    max: every repetition of a broadcast operand contributes to its adjoint."""
    m, _ = module_from(
        tmp_path,
        "inputs: {X: [N, n]}\nparams: {s: [], r: [n], c: [N, 1]}\n"
        "loss: sum(max(X * s - r, c) / (1 + square(c + s))) + mean(r + s)\n",
    )
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 3))
    s, r, c = 0.8, rng.normal(size=3), rng.normal(size=(5, 1))
    g = m.gradients(X, s, r, c)
    assert g.s == pytest.approx(
        central(lambda v: m.loss(X, float(v), r, c), np.array(s)), rel=1e-6
    )
    assert np.allclose(
        g.r, central(lambda v: m.loss(X, s, v, c), r), rtol=1e-6, atol=1e-8
    )
    assert np.allclose(
        g.c, central(lambda v: m.loss(X, s, r, v), c), rtol=1e-6, atol=1e-8
    )
