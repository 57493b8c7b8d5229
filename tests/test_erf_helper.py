"""The `_erf` helper that generated modules paste in (templates/helper_erf.py.jinja).

It may use nothing but `np`, so it is run here exactly as a generated module runs it:
the template's text is exec-ed in a namespace that holds only numpy. Its values are
checked against `math.erf` (the C library's, correctly rounded or within an ulp) on a
dense grid over [-7, 7], tiny and subnormal arguments, the range boundaries and huge,
infinite and nan arguments. Floating-point warnings are errors throughout.
"""

from __future__ import annotations

import ast
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "helper_erf.py.jinja"

Erf = Callable[[Any], Any]

F64_RTOL = 1e-15  # the docstring's claim; what gradgen needs is 1e-14
TINY = np.geomspace(1e-300, 1e-5, 2_000)  # erf(x) ~ 2x/sqrt(pi): relative still holds
EDGES = np.array(
    [
        5e-324,  # the smallest subnormal
        1e-310,
        np.finfo(np.float64).tiny,
        0.46875,  # where the two ranges meet
        np.nextafter(0.46875, 1.0),
        4.0,  # the end of Cody's fit for the second range
        5.921587,  # erf still below 1 ...
        5.921589,  # ... and already rounded to exactly 1
        6.0,  # where |x| is clamped
        27.0,  # e^(-x^2) would underflow: the clamp keeps exp away from here
        1e10,
        1e300,
        np.finfo(np.float64).max,
    ]
)


@pytest.fixture(autouse=True)
def warnings_are_errors() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield


@pytest.fixture(scope="module")
def erf() -> Erf:
    namespace: dict[str, Any] = {"np": np}
    exec(TEMPLATE.read_text(encoding="utf-8"), namespace)
    function: Erf = namespace["_erf"]
    return function


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    """200k points over [-7, 7], and the tiny and edge arguments with both signs."""
    dense = np.linspace(-7.0, 7.0, 200_001)
    return np.concatenate([dense, TINY, -TINY, EDGES, -EDGES])


def reference(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x.tolist()])


def max_relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Against float64 `want`, over the results that are normal numbers in `got`'s
    dtype (a subnormal has fewer digits to keep)."""
    normal = np.abs(want) >= np.finfo(got.dtype).tiny
    error = np.abs(got[normal].astype(np.float64) - want[normal])
    return float(np.max(error / np.abs(want[normal])))


def test_the_template_is_one_function_over_numpy_alone(erf: Erf) -> None:
    tree = ast.parse(TEMPLATE.read_text(encoding="utf-8"))
    (function,) = tree.body
    assert isinstance(function, ast.FunctionDef) and function.name == "_erf"
    assert ast.get_docstring(function)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    names = inspect.getclosurevars(erf)
    assert set(names.globals) == {"np"} and not names.nonlocals


def test_float64_matches_math_erf_to_1e_15(erf: Erf, grid: np.ndarray) -> None:
    got = erf(grid)
    want = reference(grid)
    assert got.dtype == np.float64 and got.shape == grid.shape
    assert max_relative_error(got, want) <= F64_RTOL
    near_zero = np.abs(grid) <= 1e-5
    assert np.max(np.abs(got[near_zero] - want[near_zero])) <= 1e-16
    assert np.array_equal(got == 0, want == 0)  # 0 only at 0, never by underflow


def test_exactly_odd(erf: Erf, grid: np.ndarray) -> None:
    assert np.array_equal(erf(-grid), -erf(grid))
    zeros = erf(np.array([0.0, -0.0]))
    assert zeros.tolist() == [0.0, 0.0]
    assert np.signbit(zeros).tolist() == [False, True]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_infinities_nan_and_huge_arguments(erf: Erf, dtype: type[np.floating]) -> None:
    big = np.finfo(dtype).max
    x = np.array([np.inf, -np.inf, big, -big, 1e30, -1e30, np.nan], dtype=dtype)
    got = erf(x)
    assert got.dtype == dtype
    assert got[:-1].tolist() == [1.0, -1.0] * 3
    assert np.isnan(got[-1])


def test_float32_stays_float32_and_is_rounded_from_float64(
    erf: Erf, grid: np.ndarray
) -> None:
    x = grid[np.abs(grid) <= np.finfo(np.float32).max].astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    want = reference(x.astype(np.float64))
    # Worked in float64, so off by little more than the final rounding to float32.
    assert max_relative_error(got, want) <= 2.0**-24 * 1.001
    assert np.array_equal(erf(-x), -got)


def test_scalars_and_0d_arrays_come_back_as_scalars(erf: Erf) -> None:
    for x in (0.3, np.float64(0.3), np.array(0.3), np.array(-3.0), 3):
        got = erf(x)
        assert isinstance(got, np.float64)
        assert got == pytest.approx(math.erf(float(x)), rel=F64_RTOL, abs=0)
    got32 = erf(np.float32(0.3))
    assert isinstance(got32, np.float32)
    assert got32 == pytest.approx(math.erf(0.3), rel=1e-7, abs=0)
    assert erf(np.array(np.inf)) == 1.0 and np.isnan(erf(float("nan")))


def test_shapes_layouts_and_other_dtypes(erf: Erf) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=2.0, size=(3, 4, 5))
    got = erf(x)
    assert got.shape == (3, 4, 5)
    assert max_relative_error(got, reference(x.ravel()).reshape(x.shape)) <= F64_RTOL
    strided = x[:, ::2, ::-1].transpose(2, 0, 1)
    assert np.array_equal(erf(strided), got[:, ::2, ::-1].transpose(2, 0, 1))
    assert erf(np.zeros((0, 3))).shape == (0, 3)
    ints = erf(np.arange(-3, 4))
    assert ints.dtype == np.float64
    assert max_relative_error(ints, reference(np.arange(-3.0, 4.0))) <= F64_RTOL
    assert erf([0.5, -2.0]).dtype == np.float64
    assert erf(np.array([0.5], dtype=np.float16)).dtype == np.float16
