"""The speed benchmark as users read it: gradgen against numpy by hand, JAX and torch.

For each model and size, one call of ``loss_and_gradients`` (the loss and its gradient
with respect to every param) is timed for every *implementation* in ``IMPLEMENTATIONS``:

* ``numpy``   -- the numpy an expert writes by hand (``benchmarks/bench_generated.py``);
* ``gradgen`` -- the generated module, ``generated/<model>.py``;
* ``threads`` -- the threaded module (``gradgen generate --threads``) on --threads
  threads: ``generated/elementwise_threads.py``, the others generated on the fly;
* ``jax``     -- the model written with ``jax.numpy``, ``jax.jit(jax.value_and_grad)``,
  float64, timed after a warm-up call (the compilation) with the data already on the
  device and ``block_until_ready`` on the results;
* ``torch``   -- the model written with torch ops on float64 tensors,
  ``torch.autograd.grad``, ``torch.set_num_threads(threads)``.

Each (implementation, model) pair runs in its own subprocess: torch's and JAX's worker
threads keep spinning after a call and would slow whatever runs next in the same
process. An implementation whose packages are not installed is reported as skipped.
Before timing, every worker checks its result against numpy (the hand-written code; the
hand-written code itself against the generated module) to ~1e-10, so every timed
implementation computes the same loss and gradients.

The models are the element-wise ``sum(log(1 + exp(sin(x)**2)) * cos(x)**3)``
(``examples/elementwise.yaml``) at N = 10^3 .. 10^7, linear regression, the ReLU
neuron and logistic regression at N = 10^5 (n = 32), and the two-layer tanh MLP at
N = 10^2 .. 10^5 (n = 64, h = 128, k = 8).

Timing: per call, calibrated so one repeat lasts >= --min-time; the median over
--repeats repeats; with --rounds > 1 the whole matrix runs again and each cell keeps the
lowest of its rounds' medians (another process on a shared machine only ever adds
time). Ratios are gradgen / other (> 1: gradgen is slower).

A later variant of the generated code (a faster element-wise kernel, a threaded one, an
array-API backend run on torch or CuPy) is one more ``Implementation`` in the registry,
with ``subject=True`` to get ratio columns of its own and ``requires`` naming what it
needs to be available.

Usage, from the repository root (pip install -e '.[bench]' for the plot; torch and jax
are measured where installed). Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE together in
this command only, where they are set, so numpy runs its native BLAS kernel (each
worker reports the kernel it got):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed.py \\
        --plot benchmarks/speed.png --json /tmp/speed.json
    python benchmarks/speed.py --quick               # a smoke run, small sizes
    python benchmarks/speed.py --replot /tmp/speed.json --plot benchmarks/speed.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MARKER = "SPEED-RESULT "  # prefixes the one JSON line a worker prints on stdout
# Agreement before timing: relative to each gradient's largest entry; a loss relative
# to max(|loss|, N) where it is a sum of N terms of both signs (its rounding error
# scales with the sum of |terms|, not with the sum), to max(|loss|, 1) otherwise.
TOLERANCE = 1e-10
Result = tuple[float, tuple[Any, ...]]  # (loss, gradients), in the framework's arrays
Call = Callable[[], Any]


def _load_sibling(name: str) -> ModuleType:
    """Import benchmarks/<name>.py by path (benchmarks/ is not a package)."""
    module_name = f"_speed_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- the models


@dataclass(frozen=True)
class Model:
    """A benchmark model: its generated module, data and sizes."""

    name: str  # generated/<name>.py
    label: str  # short, for the table
    description: str  # for the plot
    table_sizes: tuple[int, ...]  # N in the table
    plot_sizes: tuple[int, ...]  # N in the plot (includes the table's)
    quick_sizes: tuple[int, ...]
    dims: Mapping[str, int] = field(default_factory=dict)
    loss_is_sum: bool = False  # a sum over N terms, not a mean

    def data(self, N: int) -> tuple[np.ndarray | float, ...]:
        """The arguments of loss_and_gradients: inputs, then params (seeded)."""
        rng = np.random.default_rng(20240607 + N)
        if self.name == "elementwise":
            return (rng.uniform(-3.0, 3.0, N),)
        if self.name == "mlp":
            n, h, k = self.dims["n"], self.dims["h"], self.dims["k"]
            return (
                rng.standard_normal((N, n)),
                rng.standard_normal((N, k)),
                rng.standard_normal((n, h)) / math.sqrt(n),
                0.1 * rng.standard_normal(h),
                rng.standard_normal((h, k)) / math.sqrt(h),
                0.1 * rng.standard_normal(k),
            )
        n = self.dims["n"]
        X = rng.standard_normal((N, n))
        y = rng.uniform(0.0, 1.0, N)
        return (X, y, rng.standard_normal(n) / math.sqrt(n), 0.1)


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model(
            "elementwise",
            "element-wise",
            "sum(log(1 + exp(sin(x)**2)) * cos(x)**3)",
            table_sizes=(10**5, 10**6, 10**7),
            plot_sizes=(10**3, 10**4, 10**5, 10**6, 10**7),
            quick_sizes=(10**3, 10**4),
            loss_is_sum=True,
        ),
        Model(
            "linear_regression",
            "linear regression",
            "mean((X @ w + b - y)**2), n=32",
            (10**5,),
            (10**5,),
            (1000,),
            {"n": 32},
        ),
        Model(
            "relu_neuron",
            "ReLU neuron",
            "mean((relu(X @ w + b) - y)**2), n=32",
            (10**5,),
            (10**5,),
            (1000,),
            {"n": 32},
        ),
        Model(
            "logistic_regression",
            "logistic regression",
            "mean((sigmoid(X @ w + b) - y)**2), n=32",
            (10**5,),
            (10**5,),
            (1000,),
            {"n": 32},
        ),
        Model(
            "mlp",
            "MLP",
            "two-layer tanh MLP, n=64, h=128, k=8",
            table_sizes=(10**5,),
            plot_sizes=(10**2, 10**3, 10**4, 10**5),
            quick_sizes=(100, 1000),
            dims={"n": 64, "h": 128, "k": 8},
        ),
    )
}


# ----------------------------------------------------------- the implementations


def hand_elementwise(x: np.ndarray) -> tuple[float, tuple[np.ndarray]]:
    """sum(log(1 + exp(sin(x)^2)) cos(x)^3) and its gradient, as an expert writes it:
    shared sin/cos, in-place updates, the sum of products as a dot product.

    d/dx = sigmoid(s^2) 2 s c * c^3 - softplus(s^2) 3 c^2 s = s c^2 (2 c^2 sigmoid - 3 f).
    exp(s^2) <= e, so the plain log1p(exp(.)) cannot overflow here.
    """
    s = np.sin(x)
    c = np.cos(x)
    e = s * s
    np.exp(e, out=e)  # exp(s^2)
    f = np.log1p(e)  # softplus(s^2)
    c2 = c * c
    np.multiply(c2, c, out=c)  # c^3
    loss = float(f @ c)
    t = 1.0 + e
    np.divide(e, t, out=e)  # sigmoid(s^2)
    e *= c2
    e *= 2.0
    f *= 3.0
    e -= f
    e *= c2
    e *= s
    return loss, (e,)


def _numpy_builders() -> dict[str, Callable[..., Any]]:
    bench = _load_sibling("bench_generated")
    return {
        "elementwise": hand_elementwise,
        "linear_regression": bench.hand_linear_regression,
        "relu_neuron": bench.hand_relu_neuron,
        # the overflow-free sigmoid, as gradgen's, JAX's and torch's are
        "logistic_regression": bench.hand_logistic_regression_stable,
        "mlp": bench.hand_mlp,
    }


def build_numpy(model: Model, args: Sequence[Any], threads: int) -> Call:
    fn = _numpy_builders()[model.name]
    return lambda: fn(*args)


def build_gradgen(model: Model, args: Sequence[Any], threads: int) -> Call:
    module = _load_sibling("bench_generated").load_generated(model.name)
    fn = module.loss_and_gradients
    return lambda: fn(*args)


def build_array_api(model: Model, args: Sequence[Any], threads: int) -> Call:
    """The array-API module (`gradgen generate --backend array-api`) on the numpy
    arrays: what the backend costs on numpy (generated into a temporary folder)."""
    import tempfile

    from gradgen import pipeline

    out = Path(tempfile.mkdtemp(prefix="gradgen-bench-array-api-"))
    g = pipeline.generate(
        HERE.parent / "examples" / f"{model.name}.yaml", out, backend="array-api"
    )
    g.target.write_text(g.text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"xp_{model.name}", g.target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    fn = module.loss_and_gradients
    return lambda: fn(*args)


def build_threads(model: Model, args: Sequence[Any], threads: int) -> Call:
    """The threaded module (`gradgen generate --threads`) on `threads` threads:
    generated/<model>_threads.py where committed, else generated by a gradgen
    subprocess into a temporary folder (this process imports numpy only)."""
    path = HERE.parent / "generated" / f"{model.name}_threads.py"
    if not path.exists():
        out = Path(tempfile.mkdtemp(prefix="gradgen-threads-"))
        spec = HERE.parent / "examples" / f"{model.name}.yaml"
        command = [sys.executable, "-m", "gradgen", "generate", str(spec)]
        command += ["--threads", "--out", str(out), "--no-explain", "-q"]
        subprocess.run(command, check=True)
        path = out / f"{model.name}.py"
    loaded = importlib.util.spec_from_file_location(
        f"_speed_threads_{model.name}", path
    )
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    module.THREADS = threads
    fn = module.loss_and_gradients
    return lambda: fn(*args)


def _framework_loss(xp: Any, nn: Any, model: str) -> Callable[..., Any]:
    """The model's loss written with a numpy-like module (jax.numpy or torch), the
    way a user of that framework writes it: the spec's formula, op for op."""
    if model == "elementwise":
        return lambda x: xp.sum(xp.log(1 + xp.exp(xp.sin(x) ** 2)) * xp.cos(x) ** 3)
    if model == "linear_regression":
        return lambda X, y, w, b: xp.mean((X @ w + b - y) ** 2)
    if model == "relu_neuron":
        return lambda X, y, w, b: xp.mean((nn.relu(X @ w + b) - y) ** 2)
    if model == "logistic_regression":
        return lambda X, y, w, b: xp.mean((nn.sigmoid(X @ w + b) - y) ** 2)
    if model == "mlp":

        def mlp(X: Any, Y: Any, W1: Any, b1: Any, W2: Any, b2: Any) -> Any:
            return xp.mean((xp.tanh(X @ W1 + b1) @ W2 + b2 - Y) ** 2)

        return mlp
    raise KeyError(model)


N_INPUTS = {"elementwise": 0, "mlp": 2}  # default 2: X, y


def build_jax(model: Model, args: Sequence[Any], threads: int) -> Call:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    loss = _framework_loss(jnp, jax.nn, model.name)
    n_inputs = N_INPUTS.get(model.name, 2)
    argnums = tuple(range(n_inputs, len(args)))
    fn = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    device_args = [jnp.asarray(a, dtype=jnp.float64) for a in args]
    jax.block_until_ready(fn(*device_args))  # compile

    def call() -> Any:
        return jax.block_until_ready(fn(*device_args))

    return call


def build_torch(model: Model, args: Sequence[Any], threads: int) -> Call:
    import torch

    torch.set_num_threads(threads)
    loss = _framework_loss(torch, torch, model.name)
    n_inputs = N_INPUTS.get(model.name, 2)
    tensors = [torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in args]
    params = tensors[n_inputs:]
    for p in params:
        p.requires_grad_(True)

    def call() -> Any:
        value = loss(*tensors)
        return value.detach(), torch.autograd.grad(value, params)

    return call


@dataclass(frozen=True)
class Implementation:
    """One way to compute loss_and_gradients; a column of the table."""

    key: str
    label: str
    build: Callable[[Model, Sequence[Any], int], Call]  # (model, args, threads)
    models: tuple[str, ...] = tuple(MODELS)  # the models it implements
    requires: tuple[str, ...] = ()  # importable modules it needs
    subject: bool = False  # gradgen's own: ratio columns against every other one
    env: Mapping[str, str] = field(default_factory=dict)  # for its subprocess

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.key: impl
    for impl in (
        Implementation("numpy", "numpy by hand", build_numpy),
        Implementation("gradgen", "gradgen", build_gradgen, subject=True),
        Implementation("threads", "gradgen --threads", build_threads, subject=True),
        Implementation(
            "jax",
            "JAX jit",
            build_jax,
            requires=("jax",),
            env={"JAX_PLATFORMS": "cpu"},
        ),
        Implementation("torch", "torch", build_torch, requires=("torch",)),
        # the same module for the array API standard, run on numpy
        # (benchmarks/array_api.py times it against gradgen's plain module)
        Implementation(
            "array-api",
            "gradgen array-API",
            build_array_api,
            requires=("array_api_compat",),
            subject=True,
        ),
    )
}


# ------------------------------------------------------------------ the worker


def to_numpy(result: Any) -> tuple[float, list[np.ndarray]]:
    """(loss, gradients) in any framework -> (float, numpy arrays)."""
    value, grads = result
    arrays = []
    for g in grads:
        if hasattr(g, "detach"):
            g = g.detach().numpy()
        arrays.append(np.asarray(g, dtype=np.float64))
    return (
        float(np.asarray(value.detach() if hasattr(value, "detach") else value)),
        arrays,
    )


def difference(got: Any, want: Any, loss_scale: float) -> float:
    """The largest relative difference between two (loss, gradients) results."""
    value, grads = to_numpy(got)
    ref_value, ref_grads = to_numpy(want)
    worst = abs(value - ref_value) / max(abs(ref_value), loss_scale)
    for g, r in zip(grads, ref_grads, strict=True):
        if g.shape != r.shape:
            raise RuntimeError(f"gradient shape {g.shape}, expected {r.shape}")
        scale = max(float(np.max(np.abs(r), initial=0.0)), 1e-300)
        worst = max(worst, float(np.max(np.abs(g - r), initial=0.0)) / scale)
    return worst


def worker_info(impl: Implementation) -> dict[str, Any]:
    """Versions and thread counts, as seen inside the worker."""
    info: dict[str, Any] = {"numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            f"{p['internal_api']} {p.get('version')} {p.get('architecture') or ''}"
            f" {p['num_threads']} threads".replace("  ", " ")
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = ["threadpoolctl not installed"]
    if impl.key == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    if impl.key == "jax":
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    info["cpus_allowed"] = len(os.sched_getaffinity(0))
    return info


def run_worker(
    impl_key: str,
    model_name: str,
    sizes: Sequence[int],
    threads: int,
    repeats: int,
    min_time: float,
) -> dict[str, Any]:
    """Time one implementation of one model at every size, in this process."""
    sys.dont_write_bytecode = True  # importing generated/*.py writes no .pyc
    impl = IMPLEMENTATIONS[impl_key]
    model = MODELS[model_name]
    if len(os.sched_getaffinity(0)) > threads:  # JAX has no thread-count setting
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limits = None
    bench = _load_sibling("bench_generated")
    bench.warm_allocator()
    reference = IMPLEMENTATIONS["gradgen" if impl_key == "numpy" else "numpy"]
    rows = []
    for N in sizes:
        args = model.data(N)
        want = reference.build(model, args, threads)()  # untimed, in numpy
        call = impl.build(model, args, threads)
        scale = float(N) if model.loss_is_sum else 1.0
        error = difference(call(), want, loss_scale=scale)
        if not error <= TOLERANCE:
            raise RuntimeError(
                f"{impl_key} {model_name} N={N}: differs from {reference.key}"
                f" by {error:.3g} (relative); timing it would not be honest"
            )
        del want
        timer = timeit.Timer(call)
        timer.timeit(1)
        once = max(timer.timeit(1), 1e-7)
        number = max(1, round(min_time / once))
        sample = [timer.timeit(number) / number for _ in range(repeats)]
        rows.append(
            {
                "N": N,
                "median": statistics.median(sample),
                "best": min(sample),
                "calls": number * repeats,
                "error": error,
            }
        )
        print(
            f"  {impl_key:<8} {model_name:<20} N={N:<9,} "
            f"{statistics.median(sample) * 1e3:10.3f} ms  (diff {error:.1e})",
            file=sys.stderr,
            flush=True,
        )
        del call, args
    info = worker_info(impl)
    if limits is not None:
        limits.restore_original_limits()
    return {"status": "ok", "rows": rows, "info": info}


# ------------------------------------------------------------------ the driver


def busy_cores() -> tuple[float, float]:
    """(CPU seconds used by every process since boot, wall seconds) from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / ticks, time.monotonic()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_calm(limit: float, threshold: float = 0.25) -> float:
    """Wait (at most `limit` s) until other processes use < `threshold` cores over a
    second; returns the cores they used in the last second."""
    deadline = time.monotonic() + limit
    while True:
        busy0, t0 = busy_cores()
        time.sleep(1.0)
        busy1, t1 = busy_cores()
        others = (busy1 - busy0) / (t1 - t0)
        if others < threshold or time.monotonic() >= deadline:
            return others


def spawn(
    impl: Implementation,
    model: Model,
    sizes: Sequence[int],
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Run one worker subprocess; its JSON result, or why there is none."""
    if model.name not in impl.models:
        return {"status": "skipped", "reason": "not implemented for this model"}
    missing = impl.missing()
    if missing:
        return {"status": "skipped", "reason": f"not installed: {', '.join(missing)}"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        impl.key,
        "--model",
        model.name,
        "--sizes",
        ",".join(map(str, sizes)),
        "--threads",
        str(options.threads),
        "--repeats",
        str(options.repeats),
        "--min-time",
        str(options.min_time),
    ]
    env = {**os.environ, **impl.env, "PYTHONDONTWRITEBYTECODE": "1"}
    if options.calm:
        wait_for_calm(options.calm)
    busy0, t0 = busy_cores()
    own0 = children_cpu()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    busy1, t1 = busy_cores()
    # cores used by other processes meanwhile (the machine's busy time less the
    # worker's own): how much the measurement was disturbed
    others = max(0.0, (busy1 - busy0) - (children_cpu() - own0)) / (t1 - t0)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line[len(MARKER) :])
            result["others_cores"] = round(others, 2)
            return result
    return {"status": "failed", "reason": f"exit code {done.returncode}"}


def machine_lines(threads: int) -> list[str]:
    """The machine, as the driver sees it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [
        f"machine: {cpu}, {os.cpu_count()} cores; {platform.system()} "
        f"{platform.release()}; python {platform.python_version()}",
        f"threads: {threads} per implementation (numpy's BLAS via threadpoolctl, "
        "torch.set_num_threads, CPU affinity for JAX); numpy's ufuncs use one",
    ]
    shown = [
        f"{var}={os.environ[var]}"
        for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")
        if var in os.environ
    ]
    if shown:
        lines.append(
            "env: " + ", ".join(shown) + " (forces numpy's BLAS kernel: unset both "
            "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command to time numpy)"
        )
    return lines


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (model, implementation, N): the lowest median over the rounds."""
    merged: dict[str, Any] = json.loads(json.dumps(rounds[0]))
    for other in rounds[1:]:
        for model, impls in other.items():
            for key, result in impls.items():
                kept = merged[model][key]
                if result.get("status") != "ok" or kept.get("status") != "ok":
                    continue
                for kept_row, row in zip(kept["rows"], result["rows"], strict=True):
                    if row["median"] < kept_row["median"]:
                        kept_row.update(row)
    return merged


def _median(results: Mapping[str, Any], key: str, N: int) -> float | None:
    result = results.get(key, {})
    if result.get("status") != "ok":
        return None
    for row in result["rows"]:
        if row["N"] == N:
            return float(row["median"])
    return None


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def markdown_table(results: Mapping[str, Any], table: bool = True) -> list[str]:
    """Times (median ms per call) and ratios subject / other, one row per size."""
    impls = list(IMPLEMENTATIONS.values())
    subjects = [i for i in impls if i.subject]
    others = [i for i in impls if not i.subject]
    header = ["model", "N"] + [f"{i.label} (ms)" for i in impls]
    header += [f"{s.label} / {o.label}" for s in subjects for o in others]
    if not table:
        header.append("others' CPU (cores)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in MODELS.values():
        if model.name not in results:
            continue
        sizes = sorted(
            {
                row["N"]
                for r in results[model.name].values()
                for row in r.get("rows", [])
            }
        )
        if table:
            sizes = [N for N in sizes if N in model.table_sizes] or sizes
        for N in sizes:
            times = {i.key: _median(results[model.name], i.key, N) for i in impls}
            cells = [model.label, f"{N:.0e}".replace("e+0", "e")]
            cells += [_ms(times[i.key]) for i in impls]
            for s in subjects:
                for o in others:
                    a, b = times[s.key], times[o.key]
                    cells.append("--" if a is None or b is None else f"{a / b:.2f}")
            if not table:
                disturbed = [
                    row.get("others_cores", 0.0)
                    for r in results[model.name].values()
                    for row in r.get("rows", [])
                    if row["N"] == N
                ]
                cells.append(f"{max(disturbed, default=0.0):.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def skipped_lines(results: Mapping[str, Any]) -> list[str]:
    lines = []
    for model, impls in results.items():
        for key, result in impls.items():
            if result.get("status") != "ok":
                lines.append(
                    f"{key} on {model}: {result['status']} ({result.get('reason')})"
                )
    return lines


def plot(results: Mapping[str, Any], path: Path, title: str) -> None:
    """For the element-wise model and the MLP: time per call against N (log-log),
    and below it each implementation's time over numpy by hand's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("elementwise", "mlp") if m in results]
    figure, axes = plt.subplots(
        2,
        len(names),
        figsize=(6.2 * len(names), 7.4),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    markers = "osD^v<>"
    for column, name in enumerate(names):
        top, bottom = axes[0][column], axes[1][column]
        base = {
            row["N"]: row["median"]
            for row in results[name].get("numpy", {}).get("rows", [])
        }
        for index, impl in enumerate(IMPLEMENTATIONS.values()):
            result = results[name].get(impl.key, {})
            if result.get("status") != "ok":
                continue
            Ns = [row["N"] for row in result["rows"]]
            style = {
                "marker": markers[index % len(markers)],
                "linewidth": 2.4 if impl.subject else 1.4,
                "label": impl.label,
                "color": f"C{index}",
            }
            top.loglog(Ns, [row["median"] * 1e3 for row in result["rows"]], **style)
            ratios = [
                (row["N"], row["median"] / base[row["N"]])
                for row in result["rows"]
                if row["N"] in base
            ]
            if ratios:
                bottom.semilogx(*zip(*ratios, strict=True), **style)
        top.set_title(MODELS[name].description, fontsize=10)
        top.set_ylabel("ms per call (median)")
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_xlabel("N (elements / rows)")
        bottom.set_ylabel("time / numpy by hand")
        bottom.grid(True, which="both", alpha=0.3)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def drive(options: argparse.Namespace) -> dict[str, Any]:
    """Run every (model, implementation) worker, --rounds times; print and plot."""
    models = [MODELS[m] for m in options.models]
    impls = [IMPLEMENTATIONS[k] for k in options.only]
    rounds = []
    for round_index in range(options.rounds):
        print(f"round {round_index + 1} of {options.rounds}", file=sys.stderr)
        results: dict[str, Any] = {}
        for model in models:
            sizes = model.quick_sizes if options.quick else model.plot_sizes
            results[model.name] = {}
            for impl in impls:
                result = spawn(impl, model, sizes, options)
                for row in result.get("rows", []):
                    row["others_cores"] = result["others_cores"]
                results[model.name][impl.key] = result
        rounds.append(results)
    return merge_rounds(rounds)


def report(results: Mapping[str, Any], header: Sequence[str]) -> None:
    for line in header:
        print(line)
    infos = {
        key: result["info"]
        for impls in results.values()
        for key, result in impls.items()
        if result.get("status") == "ok"
    }
    for key, info in infos.items():
        details = ", ".join(
            f"{k} {v}" for k, v in info.items() if k not in ("threadpools", "numpy")
        )
        print(
            f"{key} worker: numpy {info['numpy']}; {'; '.join(info['threadpools'])}"
            + (f"; {details}" if details else "")
        )
    print()
    print("Median ms per call of loss_and_gradients; ratio = gradgen / other")
    print("(> 1: gradgen slower). The sizes of the README table:")
    print()
    print("\n".join(markdown_table(results, table=True)))
    print()
    print("Every size measured; the last column: the most CPU that other processes")
    print("used while one of the row's workers ran (a quiet machine shows ~0):")
    print()
    print("\n".join(markdown_table(results, table=False)))
    for line in skipped_lines(results):
        print(f"skipped: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="s per repeat")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(IMPLEMENTATIONS),
        help=f"implementations, comma-separated (default: {','.join(IMPLEMENTATIONS)})",
    )
    parser.add_argument(
        "--models",
        type=lambda s: s.split(","),
        default=list(MODELS),
        help=f"comma-separated (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--calm",
        type=float,
        default=0.0,
        help="before each worker, wait up to this many s for other processes to idle",
    )
    parser.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--replot", type=Path, help="re-report a --json file; no timing"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    quick = options.quick
    options.repeats = options.repeats or (3 if quick else 11)
    options.min_time = options.min_time or (0.005 if quick else 0.05)
    options.rounds = options.rounds or (1 if quick else 2)

    if options.worker:
        result = run_worker(
            options.worker,
            options.model,
            [int(s) for s in options.sizes.split(",")],
            options.threads,
            options.repeats,
            options.min_time,
        )
        print(MARKER + json.dumps(result), flush=True)
        return 0

    unknown = [k for k in options.only if k not in IMPLEMENTATIONS]
    unknown += [m for m in options.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if options.replot:
        saved = json.loads(options.replot.read_text())
        header, results = saved["header"], saved["results"]
    else:
        header = machine_lines(options.threads)
        header.append(f"before: {load_line()}")
        start = time.perf_counter()
        results = drive(options)
        header.append(
            f"after: {load_line()}; {time.perf_counter() - start:.0f} s; "
            f"{options.rounds} round(s) of {options.repeats} repeats of"
            f" >= {options.min_time * 1e3:g} ms; each cell the lowest round median"
        )
    report(results, header)
    if options.json and not options.replot:
        options.json.write_text(json.dumps({"header": header, "results": results}))
    if options.plot:
        plot(results, options.plot, "\n".join(header[:2]))
        print(f"plot: {options.plot}")
    failed = any(
        r.get("status") == "failed"
        for impls in results.values()
        for r in impls.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
