"""Generated code against numpy by hand, call for call in one process.

`benchmarks/speed.py` gives each implementation a process of its own, so two cells of
its table are minutes apart and a machine whose speed drifts (a shared VM: +-30%
between runs here) moves one and not the other. This script alternates the two
callables of each model in one numpy-only process (no torch, no JAX), `--pairs`
times, and reports the ratio of the medians: drift hits both alike. The models and
the hand-written code are `benchmarks/speed.py`'s; one BLAS thread (threadpoolctl).
Both results are checked to agree to 1e-10 before timing. It asserts nothing about
speed.

    python benchmarks/interleaved.py                          # N = 1e5, n = 32
    python benchmarks/interleaved.py --models elementwise --rows 1000000
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = ("linear_regression", "relu_neuron", "logistic_regression", "elementwise")


def arguments(model: str, rows: int, features: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    if model == "elementwise":
        return (rng.uniform(-3.0, 3.0, rows),)
    X = rng.standard_normal((rows, features))
    return X, rng.random(rows), 0.1 * rng.standard_normal(features), 0.1


def _leaves(value: Any) -> list[np.ndarray]:
    if isinstance(value, tuple):
        return [a for v in value for a in _leaves(v)]
    return [np.asarray(value, dtype=float)]


def compare(
    generated: Callable[..., Any],
    hand: Callable[..., Any],
    args: Sequence[Any],
    pairs: int,
) -> tuple[float, float]:
    """Median seconds per call of (generated, hand), alternating."""
    for g, h in zip(_leaves(generated(*args)), _leaves(hand(*args)), strict=True):
        scale = max(1.0, float(np.max(np.abs(h), initial=0.0)))
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-12 * scale)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(pairs):
        for fn, out in ((generated, times[0]), (hand, times[1])):
            start = time.perf_counter()
            fn(*args)
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS[:3]))
    parser.add_argument("--rows", type=int, default=10**5)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=40)
    options = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE))  # benchmarks/ is not a package
    speed = importlib.import_module("speed")
    hands = speed._numpy_builders()
    # the bench_generated that speed.py loaded for the hand-written code
    bench = speed._load_sibling("bench_generated")
    with threadpool_limits(1):
        for model in options.models.split(","):
            generated = bench.load_generated(model).loss_and_gradients
            args = arguments(model, options.rows, options.features)
            g, h = compare(generated, hands[model], args, options.pairs)
            print(
                f"{model:20s} N={options.rows:<10,d} generated {g * 1e3:8.3f} ms"
                f"  by hand {h * 1e3:8.3f} ms  ratio {g / h:.3f}"
            )


if __name__ == "__main__":
    main()
