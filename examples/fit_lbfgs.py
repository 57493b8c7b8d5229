"""Fit L2-regularised logistic regression with scipy's L-BFGS and the generated module.

    python examples/fit_lbfgs.py

`generated/logistic_l2.py` has `pack`, `unpack` and `loss_and_gradient_flat`, the
flat-vector convention of `scipy.optimize.minimize(fun, x0, jac=True)`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from generated import logistic_l2 as model


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5))
    y = (X @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + 0.3 > rng.logistic(size=500)) * 1.0
    start = model.pack(model.Params(w=np.zeros(5), b=0.0))
    fit = minimize(
        model.loss_and_gradient_flat, start, args=(X, y), jac=True, method="L-BFGS-B"
    )
    params = model.unpack(fit.x, n=5)
    accuracy = np.mean((model.probability(X, params.w, params.b) > 0.5) == y)
    print(f"loss {fit.fun:.6f} after {fit.nit} iterations ({fit.message})")
    print(f"w = {np.round(params.w, 4)}, b = {params.b:.4f}, accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
