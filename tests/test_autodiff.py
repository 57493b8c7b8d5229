"""The generated gradients and Jacobians against autograd.

The reference is independent of gradgen: each spec's expressions are evaluated by the
tiny evaluator in ``conftest.evaluate`` with ``autograd.numpy`` in place of numpy (relu
as maximum(0, z), sigmoid as 1/(1+exp(-z)), max/min as maximum/minimum, ...), and
differentiated by autograd. Points are the same kink-free seeded draws as the finite
difference tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    LOSS_EXAMPLES,
    OUTPUT_CASES,
    SEEDS,
    Example,
    call,
    evaluate,
    example_id,
    output_case_id,
    positional_names,
    public_function,
    smooth_point,
)

autograd = pytest.importorskip("autograd")
anp = pytest.importorskip("autograd.numpy")

RTOL = 1e-9
ATOL = 1e-12


def as_function_of(
    ex: Example, values: dict[str, Any], name: str, pick: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """The spec quantity ``pick(evaluation)`` as a function of param ``name`` alone."""

    def fn(x: Any) -> Any:
        return pick(evaluate(ex, {**values, name: x}, anp))

    return fn


@pytest.mark.parametrize("ex", LOSS_EXAMPLES, ids=example_id)
@pytest.mark.parametrize("seed", SEEDS)
def test_gradients_match_autograd(ex: Example, seed: int) -> None:
    values = smooth_point(ex, seed)
    grads = call(ex.module.gradients, values)
    for name in ex.params:
        fn = as_function_of(ex, values, name, lambda result: result.loss)
        expected = autograd.grad(fn)(np.asarray(values[name], dtype=np.float64))
        np.testing.assert_allclose(
            getattr(grads, name),
            expected,
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"d loss / d {name} at seed {seed}",
        )


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=output_case_id)
@pytest.mark.parametrize("seed", SEEDS)
def test_jacobians_match_autograd(case: tuple[Example, str], seed: int) -> None:
    ex, out = case
    values = smooth_point(ex, seed)
    jacobian_fn = public_function(ex.module, f"jacobian_{out}")
    jacobian = call(jacobian_fn, values)
    takes = positional_names(jacobian_fn)
    for name in ex.params:
        if name not in takes:
            continue  # covered by test_numerical: absent, or a zero block
        fn = as_function_of(ex, values, name, lambda result: result.outputs[out])
        expected = autograd.jacobian(fn)(np.asarray(values[name], dtype=np.float64))
        np.testing.assert_allclose(
            getattr(jacobian, name),
            expected,
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"d {out} / d {name} at seed {seed}",
        )
