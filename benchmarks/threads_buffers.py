"""Do per-thread scratch arrays help the threaded kernel? A measurement (issue 11).

`generated/elementwise_threads.py` computes each chunk of rows into arrays it
reuses: every element-wise region goes into an array a dead temporary leaves behind
or into one of the thread's scratch arrays (`_scratch`: one block per thread, made
on its first chunk and reused by the next), and the gradient goes straight into its
rows of the full-size array. This script times, on the element-wise model, with the
same operations in the same order:

* ``generated``  -- the generated threaded module (scratch arrays, reuse, `out=`);
* ``fresh``      -- the worker the generator printed before (fresh temporaries, as
  numpy does by default; it elides the temporaries of a chained expression itself,
  for arrays of 256 KB and more: a chunk is 1 MB), the gradient copied into its rows;
* ``buffers``    -- a hand-written worker with per-thread buffers (`threading.local`),
  every operation written `out=` into them;
* ``store_out``  -- fresh temporaries, only the last product written `out=` into the
  result (no copy);

against the hand-written numpy of benchmarks/speed.py, interleaved in alternating
order (a variant timed right after the hand-written code, which frees arrays of
8-80 MB, came out up to 25% slower than the same code timed first), the lowest of
--rounds medians. It also counts the page faults per call, which is what buffers
save. It asserts nothing about speed; it checks that all variants agree.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads_buffers.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import threading
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
Result = tuple[float, tuple[np.ndarray]]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load(
    "_elementwise_threads", HERE.parent / "generated" / "elementwise_threads.py"
)
hand = _load("_speed", HERE / "speed.py").hand_elementwise
_local = threading.local()


def _buffers(n: int, count: int, dtype: Any) -> list[np.ndarray]:
    """This thread's `count` buffers of n elements (made once, grown when needed)."""
    made = getattr(_local, "made", None)
    if made is None or made.shape[1] < n or made.dtype != dtype:
        made = _local.made = np.empty((count, n), dtype)
    return [made[i, :n] for i in range(count)]


def buffers(x: np.ndarray) -> Result:
    N = np.shape(x)[0]
    dL_dx = np.empty((N,))

    def _rows_0(lo: int, hi: int) -> tuple[Any]:
        b1, b2, b3, b4, b5, b6, b7, b8 = _buffers(hi - lo, 8, x.dtype)
        t0 = x[lo:hi]
        t1 = np.sin(t0, out=b1)
        t2 = np.multiply(t1, t1, out=b2)
        t3 = np.cos(t0, out=b3)
        t4 = np.multiply(t3, t3, out=b4)
        t5 = np.exp(np.negative(t2, out=b5), out=b5)
        t6 = np.add(t2, np.log1p(t5, out=b6), out=b6)
        a = np.multiply(t4, 2, out=b7)
        c = np.add(t5, 1, out=b8)
        np.divide(a, c, out=a)
        np.multiply(t6, 3, out=c)
        np.subtract(a, c, out=a)
        np.multiply(t4, a, out=a)
        np.multiply(a, t1, out=dL_dx[lo:hi])
        return (np.einsum("i,i->", t6, np.multiply(t4, t3, out=b8)),)

    (t7,) = gen._chunked(_rows_0, N, 1)
    return float(t7), (dL_dx,)


def fresh(x: np.ndarray) -> Result:
    N = np.shape(x)[0]
    dL_dx = np.empty((N,))

    def _rows_0(lo: int, hi: int) -> tuple[Any]:
        t0 = x[lo:hi]
        t1 = np.sin(t0)
        t2 = np.exp(t1**2)
        t3 = 1 + t2
        t4 = np.cos(t0)
        t5 = t4 * t4
        t6 = np.log(t3)
        dL_dx[lo:hi] = t5 * (2 * t5 * (t2 / t3) - 3 * t6) * t1
        return (np.einsum("i,i->", t6, t5 * t4),)

    (t7,) = gen._chunked(_rows_0, N, 1)
    return float(t7), (dL_dx,)


def store_out(x: np.ndarray) -> Result:
    N = np.shape(x)[0]
    dL_dx = np.empty((N,))

    def _rows_0(lo: int, hi: int) -> tuple[Any]:
        t0 = x[lo:hi]
        t1 = np.sin(t0)
        t2 = t1**2
        t3 = np.cos(t0)
        t4 = t3 * t3
        t5 = np.exp(-t2)
        t6 = t2 + np.log1p(t5)
        np.multiply(t4 * (2 * t4 / (1 + t5) - 3 * t6), t1, out=dL_dx[lo:hi])
        return (np.einsum("i,i->", t6, t4 * t3),)

    (t7,) = gen._chunked(_rows_0, N, 1)
    return float(t7), (dL_dx,)


VARIANTS: dict[str, Callable[[np.ndarray], Any]] = {
    "numpy by hand": hand,
    "generated": gen.loss_and_gradients,
    "fresh": fresh,
    "buffers": buffers,
    "store_out": store_out,
}


def faults(fn: Callable[[np.ndarray], Any], x: np.ndarray, calls: int = 5) -> float:
    fn(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**6, 10**7])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    gen.THREADS = options.threads
    print(f"threads {options.threads}, load average {os.getloadavg()}")
    for N in options.sizes:
        x = np.random.default_rng(0).uniform(-3.0, 3.0, N)
        want_value, (want,) = gen.loss_and_gradients(x)
        for name, fn in VARIANTS.items():
            value, (got,) = fn(x)
            assert abs(value - want_value) <= 1e-12 * N, name
            assert np.allclose(got, want, rtol=1e-12, atol=1e-12), name
        calls = max(1, 2 * 10**6 // N)
        rounds = []
        for _ in range(options.rounds):
            times: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for repeat in range(options.repeats):
                order = list(VARIANTS.items())  # ABBA: no variant always runs
                if repeat % 2:  # right after the hand-written code's big frees
                    order.reverse()
                for name, fn in order:
                    best = min(
                        timeit.repeat(lambda fn=fn, x=x: fn(x), number=calls, repeat=3)
                    )
                    times[name].append(best / calls)
            rounds.append({k: statistics.median(v) for k, v in times.items()})
        base = "numpy by hand"
        best_of = {k: min(r[k] for r in rounds) for k in VARIANTS}
        print(f"N = {N}: {base} {best_of[base] * 1e3:.1f} ms")
        for name in VARIANTS:
            per_round = " ".join(f"{r[name] / r[base]:.2f}" for r in rounds)
            print(
                f"  {name:14} {best_of[name] / best_of[base]:.3f}"
                f" (rounds: {per_round}), {faults(VARIANTS[name], x):.0f} faults/call"
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
