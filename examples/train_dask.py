"""Train a gradgen-generated model past one machine: data-parallel on a Dask cluster.

The data set is a Dask array split into row blocks ("chunks"); each chunk is computed
on, and stays on, one worker of a `dask.distributed` cluster. Every training step

1. sends the current params (small) to the workers, and calls the generated module's own
   ``loss_and_gradients`` on each chunk, on the worker that holds the chunk
   (``client.submit`` on the chunk's futures: only params, one float and one gradient
   per chunk cross the network, never data);
2. weights each chunk's result by its row count and adds them up on the driver in chunk
   order. The generated loss is a mean over the rows, so with N = sum of the n_i rows,
   ``L = sum_i n_i L_i / N`` and ``dL/dp = sum_i n_i dL_i/dp / N``: the full-batch loss
   and gradient, exactly, up to rounding;
3. applies one optimizer update on the driver, with the generated ``step``.

About step 3: the generated ``step(params, state, X, y)`` is
``value, grads = loss_and_gradients(X, y, *params)`` followed by the optimizer's update
(sgd, momentum or adam, with the spec's hyperparameters as keyword defaults). Here the
very same code runs, rebuilt from ``module.step.__code__`` over a *copy* of the module's
globals in which ``loss_and_gradients`` is the distributed one above; ``X`` and ``y``
are then `ChunkedArray`s, a future per chunk. So the update is the generated one, not a
re-implementation, and the module itself is left untouched (``distributed_step``
refuses a ``step`` that does not call ``loss_and_gradients``). The test
``tests/test_dask.py`` checks the result against the generated ``step`` on the whole
data set in one process, to rtol 1e-10.

BLAS gets one thread per worker (``--blas-threads``, default 1, set with threadpoolctl
by a worker plugin, so it holds for workers that were started any way, not only by
Dask's nanny, which sets OPENBLAS_NUM_THREADS=1 and friends by default). A worker
already gets one core's worth of work per thread from Dask; a BLAS that starts its own
threads inside every worker oversubscribes the cores: on this project's 2-core machine,
2 workers with 2 BLAS threads each took 3-14x longer per step than with 1 (logistic
regression 3.1-4.4x, the MLP 6.5-14x; README, "Past one machine").

Usage, from the repository root, after ``pip install -e '.[dask]'``:

    python examples/train_dask.py                             # LocalCluster, 2 workers
    python examples/train_dask.py --model mlp --rows 1000000 --chunks 8 --compare
    python examples/train_dask.py --scheduler tcp://127.0.0.1:8786   # a running cluster

The workers need numpy and threadpoolctl; the generated module is uploaded to them.
The LocalCluster listens on the loopback interface only and has no dashboard.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import dask.array as da
import numpy as np
from distributed import Client, Future, LocalCluster, WorkerPlugin, wait

GENERATED = Path(__file__).resolve().parent.parent / "generated"
MODELS = ("logistic_regression", "mlp")

if __name__ != "__main__" and __name__ in sys.modules:
    # Imported (by the test, say) rather than run: ship this file's functions and
    # classes to the workers by value, as Dask does for a script's __main__.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------- the generated module


def load_generated(name: str) -> types.ModuleType:
    """Import generated/<name>.py under its own name, as the workers will (results
    that hold the module's NamedTuples unpickle by that name on the driver)."""
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(
        GENERATED / f"{name}.py"
    ):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATED / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {GENERATED / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------- the cluster


class LimitBlasThreads(WorkerPlugin):
    """Caps the BLAS thread pool of each worker process (see the module docstring)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._limits: Any = None

    def setup(self, worker: Any) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=self.threads, user_api="blas")

    def teardown(self, worker: Any) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()


def blas_threads(dask_worker: Any = None) -> list[int]:
    """The BLAS pools' thread counts in this process (run on workers by client.run)."""
    from threadpoolctl import threadpool_info

    return [
        pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"
    ]


def prepare_workers(client: Client, module: types.ModuleType, threads: int) -> None:
    """Upload the generated module to the scheduler (which unpickles the tasks that
    name its function) and to every worker, present and future; cap BLAS."""
    client.upload_file(str(module.__file__))
    client.register_plugin(LimitBlasThreads(threads), name="gradgen-blas-threads")


@contextlib.contextmanager
def connect(
    scheduler: str | None = None, workers: int = 2, processes: bool = True
) -> Iterator[Client]:
    """A client of the scheduler at `scheduler`, or of a new loopback-only
    LocalCluster with `workers` single-threaded workers (closed on exit)."""
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# -------------------------------------------------------------------- the data set


@dataclass
class ChunkedArray:
    """One input of the data set, held on the cluster: a future per row block."""

    blocks: list[Future[Any]]
    rows: list[int]  # rows of each block, known on the driver


def chunk_on_cluster(client: Client, *arrays: da.Array) -> list[ChunkedArray]:
    """Compute the row blocks of dask arrays on the workers and keep them there.

    The arrays must share their row chunks and have one chunk along any other axis.
    Dask's scheduler places each block (the blocks of one row index together, as one
    is computed from the other in `synthetic_data`); nothing comes to the driver.
    """
    rows = list(arrays[0].chunks[0])
    delayed = []
    for array in arrays:
        if list(array.chunks[0]) != rows:
            raise ValueError(f"row chunks differ: {array.chunks[0]} vs {rows}")
        if any(len(c) != 1 for c in array.chunks[1:]):
            raise ValueError("only the rows may be split into chunks")
        delayed.extend(array.to_delayed().reshape(len(rows)))
    futures = client.compute(delayed)
    wait(futures)
    return [
        ChunkedArray(futures[start : start + len(rows)], rows)
        for start in range(0, len(futures), len(rows))
    ]


def gather(client: Client, data: Sequence[ChunkedArray]) -> list[np.ndarray]:
    """The whole data set on the driver (for comparison runs only)."""
    return [np.concatenate(client.gather(array.blocks)) for array in data]


def synthetic_data(
    model: str, rows: int, chunks: int | Sequence[int], seed: int = 0
) -> tuple[list[da.Array], tuple[Any, ...]]:
    """A teacher-student data set as lazy dask arrays, and initial params.

    `chunks` is a number of row blocks of (nearly) equal size, or the blocks' sizes.
    logistic_regression: X [N, 32], y in {0, 1} drawn from sigmoid(X w* + 0.3).
    mlp: X [N, 16], Y [N, 4] = tanh(X A) B + noise; the student has h = 32.
    """
    if isinstance(chunks, int):
        size = math.ceil(rows / chunks)
        sizes = tuple(min(size, rows - start) for start in range(0, rows, size))
    else:
        sizes = tuple(chunks)
    if sum(sizes) != rows:
        raise ValueError(f"chunk sizes {sizes} do not add up to {rows} rows")
    rng = da.random.default_rng(seed)
    init = np.random.default_rng(seed + 1)
    teacher = np.random.default_rng(seed + 2)
    if model == "logistic_regression":
        n = 32
        X = rng.standard_normal((rows, n), chunks=(sizes, n))
        w_true = teacher.standard_normal(n) / math.sqrt(n)
        p = 1.0 / (1.0 + da.exp(-(X @ w_true + 0.3)))
        y = (rng.random(rows, chunks=(sizes,)) < p).astype(float)
        return [X, y], (0.1 * init.standard_normal(n), 0.0)
    if model == "mlp":
        n, h, k = 16, 32, 4
        X = rng.standard_normal((rows, n), chunks=(sizes, n))
        A = teacher.standard_normal((n, 8)) / math.sqrt(n)
        B = teacher.standard_normal((8, k))
        noise = rng.standard_normal((rows, k), chunks=(sizes, k))
        Y = da.tanh(X @ A) @ B + 0.1 * noise
        params = (
            init.standard_normal((n, h)) / math.sqrt(n),
            np.zeros(h),
            init.standard_normal((h, k)) / math.sqrt(h),
            np.zeros(k),
        )
        return [X, Y], params
    raise ValueError(f"unknown model {model!r}; choose from {MODELS}")


# ----------------------------------------------------------------------- training


def distributed_loss_and_gradients(
    client: Client, module: types.ModuleType
) -> Callable[..., tuple[float, Any]]:
    """``loss_and_gradients(*inputs, *params)`` for inputs that are `ChunkedArray`s.

    The generated function runs on each chunk, on the worker that holds it (Dask
    schedules a task where its data is); the results are weighted by the chunks' row
    counts and summed on the driver, in chunk order, so the sum is deterministic.
    """
    generated = module.loss_and_gradients
    Gradients = module.Gradients

    def loss_and_gradients(*args: Any) -> tuple[float, Any]:
        inputs: list[ChunkedArray] = list(args[: len(args) - len(Gradients._fields)])
        params = args[len(inputs) :]
        rows = inputs[0].rows
        chunk_args = zip(*(array.blocks for array in inputs), strict=True)
        futures = [client.submit(generated, *chunk, *params) for chunk in chunk_args]
        value = 0.0
        sums: list[Any] = [0.0] * len(Gradients._fields)
        for count, (chunk_value, chunk_grads) in zip(
            rows, client.gather(futures), strict=True
        ):
            value += count * chunk_value
            sums = [s + count * g for s, g in zip(sums, chunk_grads, strict=True)]
        total = sum(rows)
        return value / total, Gradients(*(s / total for s in sums))

    return loss_and_gradients


def distributed_step(client: Client, module: types.ModuleType) -> Callable[..., Any]:
    """The generated ``step``, its call to ``loss_and_gradients`` sent to the cluster.

    ``step(params, state, X, y, **hyperparameters)`` with `ChunkedArray`s in place of
    arrays. Built from the generated function's own code object, over a copy of its
    module's globals, so the update is the generated one.
    """
    step = module.step
    if "loss_and_gradients" not in step.__code__.co_names:
        raise RuntimeError(
            f"{module.__name__}.step does not call loss_and_gradients; "
            "distributed_step cannot reuse its update"
        )
    namespace = dict(vars(module))
    namespace["loss_and_gradients"] = distributed_loss_and_gradients(client, module)
    rebuilt = types.FunctionType(
        step.__code__, namespace, step.__name__, step.__defaults__, step.__closure__
    )
    rebuilt.__kwdefaults__ = step.__kwdefaults__
    rebuilt.__doc__ = step.__doc__
    return rebuilt


def train_distributed(
    client: Client,
    module: types.ModuleType,
    data: Sequence[ChunkedArray],
    params: tuple[Any, ...],
    epochs: int,
) -> tuple[Any, list[float]]:
    """`epochs` full-batch steps on the cluster; the final params and the losses."""
    step = distributed_step(client, module)
    current = module.Params(*params)
    state = module.init_state(current)
    losses = []
    for _ in range(epochs):
        current, state, value = step(current, state, *data)
        losses.append(value)
    return current, losses


def train_single_machine(
    module: types.ModuleType,
    inputs: Sequence[np.ndarray],
    params: tuple[Any, ...],
    epochs: int,
) -> tuple[Any, list[float]]:
    """The same training with the generated `step` on the whole data in one process."""
    current = module.Params(*params)
    state = module.init_state(current)
    losses = []
    for _ in range(epochs):
        current, state, value = module.step(current, state, *inputs)
        losses.append(value)
    return current, losses


def max_relative_difference(first: Any, second: Any) -> float:
    """max over params of max|a - b| / max|b|."""
    worst = 0.0
    for a, b in zip(first, second, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        scale = max(float(np.max(np.abs(b))), 1e-300)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="logistic_regression")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunks", type=int, default=8, help="row blocks")
    parser.add_argument("--epochs", type=int, default=20, help="full-batch steps")
    parser.add_argument("--scheduler", help="address of a running scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--blas-threads", type=int, default=1, help="per worker")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train in this process on the gathered data and compare",
    )
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True  # no generated/__pycache__

    module = load_generated(args.model)
    arrays, params = synthetic_data(args.model, args.rows, args.chunks)
    with connect(args.scheduler, args.workers) as client:
        prepare_workers(client, module, args.blas_threads)
        print(f"cluster: {client}; BLAS threads per worker: {client.run(blas_threads)}")
        data = chunk_on_cluster(client, *arrays)
        print(f"data: {sum(data[0].rows)} rows in {len(data[0].rows)} chunks")
        start = time.perf_counter()
        trained, losses = train_distributed(client, module, data, params, args.epochs)
        elapsed = time.perf_counter() - start
        print(
            f"{args.model}: {args.epochs} steps in {elapsed:.3f} s "
            f"({elapsed / args.epochs * 1e3:.1f} ms/step); "
            f"loss {losses[0]:.6g} -> {losses[-1]:.6g}"
        )
        if args.compare:
            inputs = gather(client, data)
    if args.compare:
        start = time.perf_counter()
        single, single_losses = train_single_machine(
            module, inputs, params, args.epochs
        )
        elapsed = time.perf_counter() - start
        difference = max_relative_difference(trained, single)
        print(
            f"one process: {elapsed:.3f} s ({elapsed / args.epochs * 1e3:.1f} ms/step);"
            f" loss {single_losses[-1]:.6g}; params differ by {difference:.2g} (relative)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
