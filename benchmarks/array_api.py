"""The array-API backend's cost: its module against the plain numpy module.

Two measurements, each in a process of its own that imports numpy (and, for the
second, dask) and nothing heavier; no torch or JAX anywhere near a numpy timing:

* ``numpy``: ``loss_and_gradients`` of the array-API module (``--backend
  array-api``) on numpy arrays against the plain module (``generated/<model>.py``) on
  the same arrays, for the models of ``benchmarks/speed.py``: element-wise (N = 10^6),
  linear regression, the ReLU neuron, logistic regression (N = 10^5, n = 32) and the
  two-layer MLP (N = 2*10^4, n = 64, h = 128, k = 8). Ratio = array-API / plain.
* ``dask``: logistic regression at N = 4*10^6 (n = 32): the array-API module on a
  dask array of 4 row chunks, the loss and the gradients computed together
  (``dask.compute(loss, *gradients)``, dask's threaded scheduler, building the graph
  included), against the plain module on the numpy array. Ratio = dask / numpy.

Both results are checked against the plain module to 1e-10 first. Timing: the two
implementations alternate, ``--rounds`` times; each round times each of them
``--repeats`` times (calls of >= 50 ms), and the ratio is that of the medians over
all rounds, so a burst of load from another process hits both alike. One BLAS
thread (threadpoolctl), as in ``benchmarks/speed.py``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/array_api.py
    python benchmarks/array_api.py --quick          # a smoke run, small sizes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARKER = "ARRAY-API-RESULT "
#: model -> N for the numpy comparison (the `--quick` sizes are 100x smaller)
NUMPY_SIZES = {
    "elementwise": 10**6,
    "linear_regression": 10**5,
    "relu_neuron": 10**5,
    "logistic_regression": 10**5,
    "mlp": 2 * 10**4,
}
DASK_MODEL, DASK_N, DASK_CHUNKS = "logistic_regression", 4 * 10**6, 4


def _import(path: Path, name: str) -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def generate(models: Sequence[str], out: Path) -> None:
    """The array-API modules of `models` in `out` (the driver runs this: the
    workers never import gradgen, sympy or black)."""
    from gradgen import pipeline

    for model in models:
        g = pipeline.generate(
            ROOT / "examples" / f"{model}.yaml", out, backend="array-api"
        )
        g.target.write_text(g.text, encoding="utf-8")


def modules(model: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """(plain module, array-API module) of `model`."""
    plain = _import(ROOT / "generated" / f"{model}.py", f"plain_{model}")
    xp = _import(folder / f"{model}.py", f"xp_{model}")
    return plain, xp


def data(model: str, N: int) -> tuple[Any, ...]:
    sys.path.insert(0, str(HERE))
    import speed

    return speed.MODELS[model].data(N)


def agree(got: Any, want: Any) -> float:
    """The largest relative difference between two (loss, gradients) results."""
    worst = 0.0
    for g, w in zip(
        [got[0], *got[1]], [want[0], *want[1]], strict=True
    ):  # loss, then each gradient
        g, w = np.asarray(g, dtype=float), np.asarray(w, dtype=float)
        scale = max(1.0, float(np.max(np.abs(w))))
        worst = max(worst, float(np.max(np.abs(g - w))) / scale)
    return worst


def alternate(
    calls: dict[str, Callable[[], Any]], rounds: int, repeats: int, min_time: float
) -> dict[str, float]:
    """Median seconds per call of each, the calls timed in alternation."""
    number = {}
    for key, call in calls.items():
        call()
        start = time.perf_counter()
        call()
        once = max(time.perf_counter() - start, 1e-7)
        number[key] = max(1, round(min_time / once))
    samples: dict[str, list[float]] = {key: [] for key in calls}
    for index in range(rounds):
        order = list(calls.items())
        for key, call in order[::-1] if index % 2 else order:  # neither always first
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(number[key]):
                    call()
                samples[key].append((time.perf_counter() - start) / number[key])
    return {key: statistics.median(s) for key, s in samples.items()}


def worker(kind: str, folder: Path, quick: bool, rounds: int, repeats: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    rows = []
    if kind == "numpy":
        for model, N in NUMPY_SIZES.items():
            N = N // 100 if quick else N
            plain, xp = modules(model, folder)
            args = data(model, N)
            error = agree(xp.loss_and_gradients(*args), plain.loss_and_gradients(*args))
            assert error <= 1e-10, (model, error)
            times = alternate(
                {
                    "plain": lambda p=plain, a=args: p.loss_and_gradients(*a),
                    "array-api": lambda x=xp, a=args: x.loss_and_gradients(*a),
                },
                rounds,
                repeats,
                0.05,
            )
            rows.append({"model": model, "N": N, "error": error, **times})
    else:
        import dask
        import dask.array as da

        N = DASK_N // 100 if quick else DASK_N
        plain, xp = modules(DASK_MODEL, folder)
        X, y, w, b = data(DASK_MODEL, N)
        chunk = -(-N // DASK_CHUNKS)
        lazy = (
            da.from_array(X, chunks=(chunk, X.shape[1])),
            da.from_array(y, chunks=chunk),
        )
        lazy_w = da.from_array(w, chunks=w.shape)

        def on_dask() -> Any:
            value, grads = xp.loss_and_gradients(*lazy, lazy_w, b)
            computed = dask.compute(value, *grads)
            return computed[0], computed[1:]

        error = agree(on_dask(), plain.loss_and_gradients(X, y, w, b))
        assert error <= 1e-10, error
        times = alternate(
            {
                "numpy": lambda: plain.loss_and_gradients(X, y, w, b),
                "dask": on_dask,
            },
            rounds,
            repeats,
            0.05,
        )
        rows.append(
            {
                "model": DASK_MODEL,
                "N": N,
                "chunks": DASK_CHUNKS,
                "dask_threads": dask.config.get("num_workers", None) or "cores",
                "error": error,
                **times,
            }
        )
    print(MARKER + json.dumps(rows), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 100x smaller")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("numpy", "dask"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        worker(
            options.worker,
            options.folder,
            options.quick,
            options.rounds,
            options.repeats,
        )
        return 0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        generate([*NUMPY_SIZES], Path(folder))
        for kind in [options.only] if options.only else ["numpy", "dask"]:
            command = [sys.executable, __file__, "--worker", kind, "--folder", folder]
            command += [
                "--rounds",
                str(options.rounds),
                "--repeats",
                str(options.repeats),
            ]
            command += ["--quick"] if options.quick else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [
                line for line in done.stdout.splitlines() if line.startswith(MARKER)
            ]
            if done.returncode != 0 or not lines:
                print(done.stderr, file=sys.stderr)
                return 1
            results[kind] = json.loads(lines[0][len(MARKER) :])
    for row in results.get("numpy", []):
        print(
            f"{row['model']:<20} N={row['N']:<9,} plain {row['plain'] * 1e3:8.2f} ms"
            f"  array-API {row['array-api'] * 1e3:8.2f} ms"
            f"  ratio {row['array-api'] / row['plain']:.2f}"
        )
    for row in results.get("dask", []):
        print(
            f"{row['model']:<20} N={row['N']:<9,} numpy {row['numpy'] * 1e3:8.1f} ms"
            f"  dask ({row['chunks']} chunks) {row['dask'] * 1e3:8.1f} ms"
            f"  ratio {row['dask'] / row['numpy']:.2f}"
        )
    if options.json:
        options.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
