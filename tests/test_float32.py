"""`dtype: float32` (or `--dtype float32`): every array a generated module returns is
float32, computed without a silent trip through float64, and agrees with the float64
module to float32's precision. Each example is checked both ways."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    Example,
    call,
    example_id,
    import_file,
    smooth_point,
)

from gradgen import pipeline

examples = pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)


def _module32(ex: Example, tmp_path: Path) -> Any:
    generated = pipeline.generate(ex.path, tmp_path, dtype="float32")
    generated.target.write_text(generated.text, encoding="utf-8")
    return import_file(generated.target, f"f32_{ex.name}")


def _as32(point: dict[str, Any], ex: Example) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in point.items():
        if np.asarray(value).dtype.kind == "f":
            out[name] = np.asarray(value, dtype=np.float32)[()]
        else:
            out[name] = value  # integer ids stay integers
    return out


def _leaves(value: Any) -> list[Any]:
    """Every value in a result, tuples and NamedTuples opened."""
    if isinstance(value, tuple):
        return [a for v in value for a in _leaves(v)]
    return [value]


def _arrays(value: Any) -> list[Any]:
    """Every array (or numpy scalar) in a result."""
    return [v for v in _leaves(value) if isinstance(v, np.ndarray | np.generic)]


def _close(a: Any, b: Any) -> bool:
    scale = max(1.0, float(np.max(np.abs(b))) if np.size(b) else 1.0)
    return bool(np.allclose(a, b, rtol=2e-3, atol=2e-4 * scale))


@examples
def test_every_result_is_float32_and_agrees_with_float64(
    ex: Example, tmp_path: Path
) -> None:
    m32, m64 = _module32(ex, tmp_path), ex.module
    point = smooth_point(ex, 0)
    point32 = _as32(point, ex)
    names = [
        n
        for n, fn in inspect.getmembers(m64, inspect.isfunction)
        if fn.__module__ == m64.__name__
    ]
    checked = 0
    for name in names:
        if name.startswith("_") or name in ("init_state", "step", "unpack", "pack"):
            continue
        if name == "loss_and_gradient_flat":
            continue
        fn32, fn64 = getattr(m32, name), getattr(m64, name)
        got, want = call(fn32, point32), call(fn64, point)
        arrays = _arrays(got)
        for array in arrays:
            assert array.dtype == np.float32, f"{name} returned {array.dtype}"
        for a, b in zip(_leaves(got), _leaves(want), strict=True):
            assert _close(a, b), name
        checked += 1
    assert checked
    if ex.loss is not None:
        params = m32.Params(**{k: point32[k] for k in ex.params})
        data = [point32[k] for k in ex.inputs]
        new, state, _ = m32.step(params, m32.init_state(params), *data)
        for array in _arrays(new) + _arrays(state):
            if array.dtype.kind == "f":
                assert array.dtype == np.float32
        assert m32.pack(params).dtype == np.float32


def test_logits_of_magnitude_80_stay_finite_in_float32(tmp_path: Path) -> None:
    spec = tmp_path / "ce32.yaml"
    spec.write_text(
        "gradgen: 1\nname: ce32\ndtype: float32\n"
        "inputs: {X: [N, n], y: {shape: [N], dtype: int}, t: [N]}\n"
        "params: {W: [n, k], w: [n]}\n"
        "loss: cross_entropy(X @ W, y) + mean(log(sigmoid(X @ w)) * t)"
        " + binary_cross_entropy_with_logits(X @ w, t) + mean(logsumexp(X @ W, axis=1))\n",
        encoding="utf-8",
    )
    generated = pipeline.generate(spec, tmp_path)
    generated.target.write_text(generated.text, encoding="utf-8")
    m = import_file(generated.target, "ce32_module")
    X = np.array([[80.0, -80.0], [-80.0, 80.0], [40.0, 0.0]], dtype=np.float32)
    y = np.array([0, 1, 1])
    t = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    W = np.eye(2, 3, dtype=np.float32)
    w = np.array([1.0, 0.5], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grads = m.loss_and_gradients(X, y, t, W, w)
    assert np.isfinite(value)
    for g in grads:
        assert g.dtype == np.float32 and np.all(np.isfinite(g))
