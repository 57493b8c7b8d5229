"""Generated code against numpy by hand, call for call in one process.

`benchmarks/speed.py` gives each implementation a process of its own, so two cells of
its table are minutes apart and a machine whose speed drifts (a shared VM: +-30%
between runs here) moves one and not the other. This script alternates, round-robin,
numpy by hand and the generated modules -- plain, threaded (`--threads`) and
array-API on numpy arrays -- in one numpy-only process (no torch, no JAX), `--pairs`
times, and reports each one's median and its ratio to numpy by hand: drift hits them
all alike. The models, their data and the hand-written code are `benchmarks/speed.py`'s;
`--threads` BLAS threads (threadpoolctl) and threads for the threaded module. Every
result is checked to agree with the hand-written one to 1e-10 before timing. It
asserts nothing about speed.

    python benchmarks/interleaved.py                   # every model at its table size
    python benchmarks/interleaved.py --models elementwise --rows 1000000 --threads 2
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
MODELS = (
    "elementwise",
    "linear_regression",
    "relu_neuron",
    "logistic_regression",
    "mlp",
)
SIZES = {"elementwise": 10**6}  # else 10**5, as in the README's table
VARIANTS = ("plain", "threads", "array-api")


def _leaves(value: Any) -> list[np.ndarray]:
    if isinstance(value, tuple):
        return [a for v in value for a in _leaves(v)]
    return [np.asarray(value, dtype=float)]


def timed(calls: dict[str, Callable[[], Any]], pairs: int) -> dict[str, float]:
    """Median seconds per call of each, the calls alternating round-robin, after
    checking every result against the first's."""
    first, *others = calls
    want = _leaves(calls[first]())
    for name in others:
        for g, h in zip(_leaves(calls[name]()), want, strict=True):
            scale = max(1.0, float(np.max(np.abs(h), initial=0.0)))
            np.testing.assert_allclose(
                g, h, rtol=1e-10, atol=1e-12 * scale, err_msg=name
            )
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(pairs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rows", type=int, default=None, help="N (default: table's)")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    options = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE))  # benchmarks/ is not a package
    speed = importlib.import_module("speed")
    builders = {
        "plain": speed.build_gradgen,
        "threads": speed.build_threads,
        "array-api": speed.build_array_api,
    }
    with threadpool_limits(options.threads):
        for name in options.models.split(","):
            model = speed.MODELS[name]
            N = options.rows or SIZES.get(name, 10**5)
            args = model.data(N)
            calls = {"by hand": speed.build_numpy(model, args, options.threads)}
            for variant in options.variants.split(","):
                calls[variant] = builders[variant](model, args, options.threads)
            medians = timed(calls, options.pairs)
            hand = medians["by hand"]
            cells = [f"by hand {hand * 1e3:8.3f} ms"]
            cells += [
                f"{v} {medians[v] * 1e3:8.3f} ms ratio {medians[v] / hand:.3f}"
                for v in calls
                if v != "by hand"
            ]
            print(f"{name:20s} N={N:<10,d} " + "  ".join(cells))


if __name__ == "__main__":
    main()
