"""The flat-vector API of every module with a loss: `pack`, `unpack` and
`loss_and_gradient_flat`, the convention of scipy.optimize and other flat-vector
optimizers; and an L-BFGS fit that reaches a hand-written reference's optimum."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from conftest import LOSS_EXAMPLES, Example, example, example_id, smooth_point
from scipy.optimize import minimize

loss_examples = pytest.mark.parametrize("ex", LOSS_EXAMPLES, ids=example_id)


def _dims_for(ex: Example, fn: Any) -> dict[str, int]:
    """The keyword-only dims `fn` takes, sized as the example's point."""
    keyword_only = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return {d: ex.dims[d] for d in keyword_only}


@loss_examples
def test_pack_and_unpack_round_trip(ex: Example) -> None:
    m = ex.module
    point = smooth_point(ex, 0)
    params = m.Params(**{k: point[k] for k in ex.params})
    theta = m.pack(params)
    size = sum(int(np.prod(s)) for s in ex.params.values())
    assert theta.shape == (size,) and theta.dtype == np.float64
    back = m.unpack(theta, **_dims_for(ex, m.unpack))
    for name in ex.params:
        got, want = getattr(back, name), point[name]
        assert np.shape(got) == np.shape(want)
        assert np.array_equal(got, want)
        if np.ndim(got):
            assert not np.shares_memory(got, theta)  # fresh, never a view of theta
    with pytest.raises(ValueError, match="theta has shape"):
        m.unpack(np.zeros(size + 1), **_dims_for(ex, m.unpack))


@loss_examples
def test_flat_loss_and_gradient_agree(ex: Example) -> None:
    m = ex.module
    point = smooth_point(ex, 1)
    data = [point[k] for k in ex.inputs]
    params = m.Params(**{k: point[k] for k in ex.params})
    value, grads = m.loss_and_gradients(*data, *params)
    theta = m.pack(params)
    flat_value, flat_grad = m.loss_and_gradient_flat(
        theta, *data, **_dims_for(ex, m.loss_and_gradient_flat)
    )
    assert flat_value == value
    assert np.array_equal(flat_grad, m.pack(grads))
    assert flat_grad.shape == theta.shape


def _reference(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, Any]:
    """L2-regularised logistic regression by hand, as in examples/logistic_l2.yaml."""
    w, b = theta[:-1], theta[-1]
    z = X @ w + b
    loss = np.mean(np.logaddexp(0, z) - y * z) + 0.05 * (w @ w) / 2
    r = (1 / (1 + np.exp(-z)) - y) / len(y)
    return loss, np.concatenate([X.T @ r + 0.05 * w, [r.sum()]])


def test_lbfgs_reaches_the_reference_optimum() -> None:
    m = example("logistic_l2").module
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4))
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.2 > rng.logistic(size=400)) * 1.0
    start = np.zeros(5)
    options = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 500}
    ours = minimize(
        m.loss_and_gradient_flat,
        start,
        args=(X, y),
        jac=True,
        method="L-BFGS-B",
        options=options,
    )
    theirs = minimize(
        _reference, start, args=(X, y), jac=True, method="L-BFGS-B", options=options
    )
    assert ours.success and theirs.success
    assert np.allclose(ours.x, theirs.x, rtol=0, atol=1e-6)
    assert abs(ours.fun - theirs.fun) < 1e-12
    params = m.unpack(ours.x, n=4)
    assert params.w.shape == (4,) and isinstance(params.b, float)
