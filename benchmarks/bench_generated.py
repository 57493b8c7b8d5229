"""Benchmark gradgen's generated modules against hand-written numpy.

For each model the script times the generated `loss_and_gradients` against the
gradient code an expert numpy user would write by hand, then an optimizer `step`
(sgd and adam) against a hand-written update, then a few Jacobians, and finally a
micro-benchmark of numpy's integer powers (`c**3` against `c*c*c`, `c**2` against
`c*c`) that backs the claim in `gradgen/simplify.py` that small integer powers are
best printed as products.

It measures and prints; it asserts nothing about speed. Before timing a pair it
checks that the generated and the hand-written results agree to ~1e-10 (relative
to each array's magnitude) and raises if they do not, so that the two sides really
compute the same thing. Nothing is written to disk.

The hand-written steps keep the generated API's contract: they return new arrays
and leave their arguments untouched (no in-place updates of the params).

Usage, from the repository root:

    python benchmarks/bench_generated.py           # realistic sizes
    python benchmarks/bench_generated.py --quick   # small sizes, few repeats
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib.util
import math
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

GENERATED = Path(__file__).resolve().parent.parent / "generated"
TOLERANCE = 1e-10

Array = np.ndarray


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Config:
    """Problem sizes and timing effort."""

    n_lin: int  # rows of X for the linear models and the Jacobians
    d_lin: int  # columns of X for the linear models
    n_mlp: int  # rows of X for the MLP
    d_mlp: int  # MLP input width n
    h_mlp: int  # MLP hidden width h
    k_mlp: int  # MLP output width k
    k_tour: int  # output width k of grammar_tour
    n_jac_mlp: int  # rows for the (rank-4) MLP Jacobian
    d_jac_mlp: int
    h_jac_mlp: int
    k_jac_mlp: int
    n_pow: int  # length of the array in the power micro-benchmark
    n_elementwise: int  # length of x for the element-wise model
    repeats: int  # timing repeats; the median and the min are reported
    min_time: float  # seconds per repeat (the call count is calibrated to it)
    only: str = ""  # time only the cases whose "section case" contains this


FULL = Config(
    n_lin=100_000,
    d_lin=32,
    n_mlp=20_000,
    d_mlp=64,
    h_mlp=128,
    k_mlp=8,
    k_tour=8,
    n_jac_mlp=1_000,
    d_jac_mlp=8,
    h_jac_mlp=16,
    k_jac_mlp=3,
    n_pow=1_000_000,
    n_elementwise=1_000_000,
    repeats=25,
    min_time=0.025,
)
QUICK = Config(
    n_lin=2_000,
    d_lin=8,
    n_mlp=500,
    d_mlp=8,
    h_mlp=16,
    k_mlp=3,
    k_tour=3,
    n_jac_mlp=50,
    d_jac_mlp=4,
    h_jac_mlp=5,
    k_jac_mlp=2,
    n_pow=100_000,
    n_elementwise=100_000,
    repeats=3,
    min_time=0.005,
)


def load_generated(name: str) -> ModuleType:
    """Import generated/<name>.py by file path (no package, no bytecode written)."""
    path = GENERATED / f"{name}.py"
    module_name = f"_bench_generated_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ machine info


def _openblas_runtime() -> str | None:
    """OpenBLAS threads and core type from the loaded library, if it is findable."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(
                {
                    line.split()[-1]
                    for line in maps
                    if "openblas" in line.lower() and ".so" in line
                }
            )
    except OSError:
        return None
    prefixes = ("scipy_openblas_", "openblas_")
    suffixes = ("64_", "")
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in prefixes:
            for suffix in suffixes:
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if threads is None:
                    continue
                threads.restype = ctypes.c_int
                text = f"OpenBLAS runtime: {threads()} threads"
                corename = getattr(lib, f"{prefix}get_corename{suffix}", None)
                if corename is not None:
                    corename.restype = ctypes.c_char_p
                    text += f", core {corename().decode(errors='replace')}"
                return text
    return None


def machine_info() -> list[str]:
    """A few lines on numpy, BLAS and threads; every probe may fail quietly."""
    lines = [
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, os.cpu_count()={os.cpu_count()}"
    ]
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found]

        for pool in threadpool_info():
            lines.append(
                f"threadpoolctl: {pool.get('internal_api')} {pool.get('version')} "
                f"({pool.get('user_api')}), {pool.get('num_threads')} threads, "
                f"kernel {pool.get('architecture')}"
            )
    except ImportError:
        lines.append("threadpoolctl: not installed")
        try:
            config: Any = np.show_config(mode="dicts")
            blas = config["Build Dependencies"]["blas"]
            lines.append(f"numpy BLAS (build): {blas['name']} {blas['version']}")
        except Exception:  # older numpy: no mode="dicts"; not worth failing for
            pass
        runtime = _openblas_runtime()
        if runtime is not None:
            lines.append(runtime)
    try:
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        lines.append(f"load average (1, 5, 15 min): {load}; timings are noisy if busy")
    except (OSError, AttributeError):  # not on Windows
        pass
    env_vars = (
        "OPENBLAS_CORETYPE",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    )
    shown = [f"{var}={os.environ[var]}" for var in env_vars if var in os.environ]
    lines.append("env: " + (", ".join(shown) if shown else "no BLAS/thread variables"))
    return lines


# ---------------------------------------------------------------------- timing


def warm_allocator() -> None:
    """Put malloc in its steady state before timing anything.

    glibc serves large blocks with mmap until a large block is freed; then it raises
    its mmap threshold (up to 32 MiB) and keeps such blocks on the heap. Before that,
    every temporary array above 128 KiB is a fresh mapping and costs a page fault per
    4 KiB on first touch, which can dominate a gradient at N=100_000. Without this
    warm-up the sections timed before the first large free would run in that cold
    state and the later ones not, so the numbers would depend on the order of the
    sections. A long-running training loop is in the warm state.
    """
    block = np.ones(3 * 2**20)  # 24 MiB: above every array timed here, below 32 MiB
    del block


class Timing(NamedTuple):
    """Per-call times in seconds."""

    median: float
    best: float


def _calibrate(timer: timeit.Timer, min_time: float) -> int:
    """Calls per repeat so that one repeat lasts about min_time seconds."""
    timer.timeit(1)  # warm-up: first-touch allocations, caches
    once = max(timer.timeit(1), 1e-7)
    return max(1, round(min_time / once))


def time_pair(
    first: Callable[[], object], second: Callable[[], object], config: Config
) -> tuple[Timing, Timing]:
    """Time two callables, alternating repeats so that drift hits both alike."""
    timers = (timeit.Timer(first), timeit.Timer(second))
    numbers = [_calibrate(timer, config.min_time) for timer in timers]
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(config.repeats):
        for timer, number, sample in zip(timers, numbers, samples, strict=True):
            sample.append(timer.timeit(number) / number)
    first_t, second_t = (
        Timing(statistics.median(sample), min(sample)) for sample in samples
    )
    return first_t, second_t


def time_one(fn: Callable[[], object], config: Config) -> Timing:
    """Time one callable."""
    timer = timeit.Timer(fn)
    number = _calibrate(timer, config.min_time)
    sample = [timer.timeit(number) / number for _ in range(config.repeats)]
    return Timing(statistics.median(sample), min(sample))


# ------------------------------------------------------------------ agreement


def _leaves(value: object) -> Iterator[Array]:
    """The arrays and scalars in a (nested) tuple, in order."""
    if isinstance(value, tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield np.asarray(value, dtype=float)


def check_agree(label: str, generated: object, hand: object) -> None:
    """Raise unless generated and hand results agree to TOLERANCE (relative)."""
    got, want = list(_leaves(generated)), list(_leaves(hand))
    if len(got) != len(want):
        raise RuntimeError(f"{label}: {len(got)} results vs {len(want)} by hand")
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            raise RuntimeError(f"{label}[{index}]: shape {g.shape} vs {w.shape}")
        scale = float(np.max(np.abs(w), initial=0.0))
        error = float(np.max(np.abs(g - w), initial=0.0))
        if not error <= TOLERANCE * max(scale, 1e-300):
            raise RuntimeError(
                f"{label}[{index}]: generated and hand-written differ by {error:.3g}"
                f" (magnitude {scale:.3g}); the comparison would not be honest"
            )


class Row(NamedTuple):
    """One line of the results table."""

    section: str
    case: str
    generated: Timing
    hand: Timing


def compare(
    rows: list[Row],
    section: str,
    case: str,
    generated: Callable[[], object],
    hand: Callable[[], object],
    config: Config,
) -> None:
    """Check that the two agree, time both, and append a table row."""
    if config.only not in f"{section} {case}":
        return
    check_agree(f"{section} {case}", generated(), hand())
    gen_t, hand_t = time_pair(generated, hand, config)
    rows.append(Row(section, case, gen_t, hand_t))
    print(
        f"  {section:<20} {case:<34} gen {gen_t.median * 1e3:9.3f} ms"
        f"  hand {hand_t.median * 1e3:9.3f} ms",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------- hand-written gradients


def hand_relu_neuron(
    X: Array, y: Array, w: Array, b: float
) -> tuple[float, tuple[Array, float]]:
    """mean((relu(X w + b) - y)**2) and its gradient."""
    N = X.shape[0]
    z = X @ w + b
    a = np.maximum(z, 0.0)
    e = a - y
    g = (2.0 / N) * e * (z > 0)
    return float(e @ e) / N, (X.T @ g, float(g.sum()))


def hand_linear_regression(
    X: Array, y: Array, w: Array, b: float
) -> tuple[float, tuple[Array, float]]:
    """mean((X w + b - y)**2) and its gradient."""
    N = X.shape[0]
    r = X @ w + b - y
    g = (2.0 / N) * r
    return float(r @ r) / N, (X.T @ g, float(g.sum()))


def hand_logistic_regression(
    X: Array, y: Array, w: Array, b: float
) -> tuple[float, tuple[Array, float]]:
    """mean((sigmoid(X w + b) - y)**2) and its gradient, with the textbook sigmoid."""
    N = X.shape[0]
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    e = p - y
    g = (2.0 / N) * e * p * (1.0 - p)
    return float(e @ e) / N, (X.T @ g, float(g.sum()))


def _stable_sigmoid(z: Array) -> Array:
    """1 / (1 + e^-z) without overflow: one exp, one division."""
    e = np.exp(-np.abs(z))
    p: Array = np.where(z >= 0, 1.0, e) / (1.0 + e)
    return p


def hand_logistic_regression_stable(
    X: Array, y: Array, w: Array, b: float
) -> tuple[float, tuple[Array, float]]:
    """As hand_logistic_regression, with an overflow-free sigmoid like gradgen's."""
    N = X.shape[0]
    p = _stable_sigmoid(X @ w + b)
    e = p - y
    g = (2.0 / N) * e * p * (1.0 - p)
    return float(e @ e) / N, (X.T @ g, float(g.sum()))


def hand_mlp(
    X: Array, Y: Array, W1: Array, b1: Array, W2: Array, b2: Array
) -> tuple[float, tuple[Array, Array, Array, Array]]:
    """mean((tanh(X W1 + b1) W2 + b2 - Y)**2) and its gradient."""
    N, k = Y.shape
    H = X @ W1
    H += b1
    np.tanh(H, out=H)
    out = H @ W2
    out += b2
    E = out - Y
    ravelled = E.ravel()
    loss = float(ravelled @ ravelled) / (N * k)
    G = E * (2.0 / (N * k))
    dH = G @ W2.T
    dH *= 1.0 - H * H
    return loss, (X.T @ dH, dH.sum(axis=0), H.T @ G, G.sum(axis=0))


def hand_attention(
    X: Array, Y: Array, Wq: Array, Wk: Array, Wv: Array
) -> tuple[float, tuple[Array, Array, Array]]:
    """One head of batched self-attention fitted by mean squared error, by hand."""
    e = Wq.shape[1]
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    S = Q @ np.swapaxes(K, -1, -2) / math.sqrt(e)
    S -= S.max(axis=-1, keepdims=True)
    A = np.exp(S)
    A /= A.sum(axis=-1, keepdims=True)
    E = A @ V - Y
    loss = float(np.vdot(E, E)) / E.size
    G = E * (2.0 / E.size)
    dA = G @ np.swapaxes(V, -1, -2)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True)) / math.sqrt(e)
    dV = np.swapaxes(A, -1, -2) @ G
    dQ, dK = dS @ K, np.swapaxes(dS, -1, -2) @ Q
    axes = ([0, 1], [0, 1])
    return loss, (
        np.tensordot(X, dQ, axes=axes),
        np.tensordot(X, dK, axes=axes),
        np.tensordot(X, dV, axes=axes),
    )


def hand_skipgram(
    center: Array, context: Array, negatives: Array, E: Array, F: Array
) -> tuple[float, tuple[Array, Array]]:
    """Skip-gram with negative sampling, by hand: np.add.at for the lookups' adjoints."""
    B = center.size
    u, Fc, Fn = E[center], F[context], F[negatives]
    positive = np.einsum("bd,bd->b", u, Fc)
    negative = np.einsum("bd,bkd->bk", u, Fn)
    loss = float(np.logaddexp(0, -positive).sum() + np.logaddexp(0, negative).sum()) / B
    dpos = -1 / (1 + np.exp(positive)) / B  # -sigmoid(-positive) / B
    dneg = 1 / (1 + np.exp(-negative)) / B  # sigmoid(negative) / B
    du = dpos[:, None] * Fc + np.einsum("bk,bkd->bd", dneg, Fn)
    dE = np.zeros_like(E)
    np.add.at(dE, center, du)
    dF = np.zeros_like(F)
    np.add.at(dF, context, dpos[:, None] * u)
    np.add.at(dF, negatives, dneg[:, :, None] * u[:, None, :])
    return loss, (dE, dF)


def hand_layernorm_mlp(
    X: Array, Y: Array, W1: Array, gain: Array, beta: Array, W2: Array
) -> tuple[float, tuple[Array, Array, Array, Array]]:
    """An MLP with layer normalisation of its hidden layer, by hand."""
    A = X @ W1
    C = A - A.mean(axis=1, keepdims=True)
    s = np.sqrt((C * C).mean(axis=1, keepdims=True) + 1e-5)
    normed = C / s
    H = np.tanh(normed * gain + beta)
    E = H @ W2 - Y
    loss = float(np.vdot(E, E)) / E.size
    G = E * (2.0 / E.size)
    dZ = (G @ W2.T) * (1 - H * H)
    dN = dZ * gain
    dA = (
        dN
        - dN.mean(axis=1, keepdims=True)
        - normed * (dN * normed).mean(axis=1, keepdims=True)
    ) / s
    return loss, (X.T @ dA, (dZ * normed).sum(axis=0), dZ.sum(axis=0), H.T @ G)


def hand_elementwise(x: Array) -> tuple[float, tuple[Array]]:
    """sum(softplus(sin(x)**2) * cos(x)**3) and its gradient, as an expert writes it:
    softplus and its derivative, the sigmoid, in their stable forms sharing one exp
    (finite for every argument, as gradgen's must be), the gradient factored,
    cos(x)**2 computed once."""
    s = np.sin(x)
    c = np.cos(x)
    t = s * s
    e = np.exp(-np.abs(t))
    softplus = np.maximum(t, 0.0) + np.log1p(e)
    sigmoid = np.where(t >= 0, 1.0, e) / (1.0 + e)
    c2 = c * c
    loss = float(softplus @ (c2 * c))
    return loss, (s * c2 * (2.0 * c2 * sigmoid - 3.0 * softplus),)


def hand_grammar_tour(
    X: Array, Y: Array, tau: float, W: Array, c: Array, s: float, u: Array
) -> tuple[float, tuple[Array, Array, float, Array]]:
    """grammar_tour's loss and gradient, derived on paper."""
    N, n = X.shape
    k = Y.shape[1]
    Z = X @ W + c
    positive = Z > 0
    A = np.where(positive, Z, 0.1 * Z)  # max(0, Z) + 0.1 min(Z, 0)
    D = A - Y
    R = np.sqrt(D * D + 1.0)
    abs_sum = np.abs(Z).sum(axis=1)  # row = s * abs_sum / k
    back = X.T @ ((s / k) * abs_sum)
    q = float(u @ back) / n
    gauss = np.exp(-u * u)
    cos_u = np.cos(u)
    w_sum = W.sum(axis=1)  # sum(W.T @ u) = u . W 1
    T = math.tanh(float(u @ w_sum))
    d = 1.0 + s * s
    sig_s = 0.5 * (1.0 + math.tanh(0.5 * s))
    loss = (
        float(R.sum()) / N
        + float(np.logaddexp(0.0, q))
        + float((gauss * cos_u).mean()) * tau
        + sig_s
        - T / d
        + 2 * k
    )
    dS = -(1.0 - T * T) / d
    dq = 0.5 * (1.0 + math.tanh(0.5 * q))  # softplus' = sigmoid
    drow = X @ ((dq / n) * u)
    dA = D / (N * R)
    dZ = np.where(positive, dA, 0.1 * dA) + ((s / k) * drow)[:, None] * np.sign(Z)
    dW = X.T @ dZ
    dW += dS * u[:, None]
    du = (
        dS * w_sum - (tau / n) * gauss * (2.0 * u * cos_u + np.sin(u)) + (dq / n) * back
    )
    ds = 2.0 * s * T / (d * d) + sig_s * (1.0 - sig_s) + float(drow @ abs_sum) / k
    return loss, (dW, dZ.sum(axis=0), ds, du)


# ------------------------------------------------------- hand-written steps


def hand_sgd_step(
    params: tuple[Any, ...], grads: tuple[Any, ...], lr: float
) -> tuple[Any, ...]:
    """p <- p - lr g, into new arrays."""
    return tuple(p - lr * g for p, g in zip(params, grads, strict=True))


class AdamState(NamedTuple):
    """Adam's step count and moments, one entry per param."""

    t: int
    m: tuple[Any, ...]
    v: tuple[Any, ...]


def hand_adam_step(
    params: tuple[Any, ...],
    state: AdamState,
    grads: tuple[Any, ...],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[tuple[Any, ...], AdamState]:
    """Kingma & Ba with bias correction, into new arrays."""
    t = state.t + 1
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, state.m, state.v, strict=True):
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * (g * g)
        new_p.append(p - lr * (m / c1) / (np.sqrt(v / c2) + eps))
        new_m.append(m)
        new_v.append(v)
    return tuple(new_p), AdamState(t, tuple(new_m), tuple(new_v))


# ------------------------------------------------------------------ the models


@dataclass
class Data:
    """Inputs and params for one model."""

    inputs: tuple[Any, ...]
    params: tuple[Any, ...]


def linear_data(rng: np.random.Generator, N: int, n: int) -> Data:
    """X, y, w, b for the single-unit models; y in [0, 1] so it suits the sigmoid."""
    X = rng.standard_normal((N, n))
    y = rng.uniform(0.0, 1.0, N)
    w = rng.standard_normal(n) / math.sqrt(n)
    b = 0.1
    return Data((X, y), (w, b))


def mlp_data(rng: np.random.Generator, N: int, n: int, h: int, k: int) -> Data:
    """X, Y, W1, b1, W2, b2 for the MLPs, Glorot-scaled weights."""
    X = rng.standard_normal((N, n))
    Y = rng.standard_normal((N, k))
    W1 = rng.standard_normal((n, h)) / math.sqrt(n)
    b1 = 0.1 * rng.standard_normal(h)
    W2 = rng.standard_normal((h, k)) / math.sqrt(h)
    b2 = 0.1 * rng.standard_normal(k)
    return Data((X, Y), (W1, b1, W2, b2))


def bench_gradients(rows: list[Row], config: Config, rng: np.random.Generator) -> None:
    """loss_and_gradients, generated vs by hand, for every model."""
    section = "loss_and_gradients"
    lin = linear_data(rng, config.n_lin, config.d_lin)
    lin_size = f"N={config.n_lin} n={config.d_lin}"
    hands: dict[str, Callable[..., object]] = {
        "relu_neuron": hand_relu_neuron,
        "linear_regression": hand_linear_regression,
        "logistic_regression": hand_logistic_regression,
    }
    for name, hand in hands.items():
        module = load_generated(name)
        args = (*lin.inputs, *lin.params)
        compare(
            rows,
            section,
            f"{name} {lin_size}",
            partial(module.loss_and_gradients, *args),
            partial(hand, *args),
            config,
        )
        if name == "logistic_regression":
            compare(
                rows,
                section,
                f"{name} (hand: stable sigmoid)",
                partial(module.loss_and_gradients, *args),
                partial(hand_logistic_regression_stable, *args),
                config,
            )

    mlp = mlp_data(rng, config.n_mlp, config.d_mlp, config.h_mlp, config.k_mlp)
    mlp_args = (*mlp.inputs, *mlp.params)
    mlp_size = f"N={config.n_mlp} n={config.d_mlp} h={config.h_mlp} k={config.k_mlp}"
    for name in ("mlp", "mlp_adam"):
        module = load_generated(name)
        compare(
            rows,
            section,
            f"{name} {mlp_size}",
            partial(module.loss_and_gradients, *mlp_args),
            partial(hand_mlp, *mlp_args),
            config,
        )

    elementwise = load_generated("elementwise")
    x = rng.standard_normal(config.n_elementwise)
    compare(
        rows,
        section,
        f"elementwise N={config.n_elementwise}",
        partial(elementwise.loss_and_gradients, x),
        partial(hand_elementwise, x),
        config,
    )

    # issue 9's models: batched attention, embedding lookups, layer normalisation
    B, T, d, e = 64, 32, 32, 32
    att_args = (
        rng.standard_normal((B, T, d)),
        rng.standard_normal((B, T, e)),
        *(rng.standard_normal((d, e)) / math.sqrt(d) for _ in range(3)),
    )
    compare(
        rows,
        section,
        f"attention B={B} T={T} d={d} e={e}",
        partial(load_generated("attention").loss_and_gradients, *att_args),
        partial(hand_attention, *att_args),
        config,
    )
    V, dim, Bs, K = 5000, 64, 20000, 5
    sg_args = (
        rng.integers(0, V, Bs),
        rng.integers(0, V, Bs),
        rng.integers(0, V, (Bs, K)),
        0.1 * rng.standard_normal((V, dim)),
        0.1 * rng.standard_normal((V, dim)),
    )
    compare(
        rows,
        section,
        f"skipgram V={V} d={dim} B={Bs} K={K}",
        partial(load_generated("skipgram").loss_and_gradients, *sg_args),
        partial(hand_skipgram, *sg_args),
        config,
    )
    N_ln, n_ln, h_ln, k_ln = config.n_mlp, config.d_mlp, config.h_mlp, config.k_mlp
    ln_args = (
        rng.standard_normal((N_ln, n_ln)),
        rng.standard_normal((N_ln, k_ln)),
        rng.standard_normal((n_ln, h_ln)) / math.sqrt(n_ln),
        1 + 0.1 * rng.standard_normal(h_ln),
        0.1 * rng.standard_normal(h_ln),
        rng.standard_normal((h_ln, k_ln)) / math.sqrt(h_ln),
    )
    compare(
        rows,
        section,
        f"layernorm_mlp N={N_ln} n={n_ln} h={h_ln} k={k_ln}",
        partial(load_generated("layernorm_mlp").loss_and_gradients, *ln_args),
        partial(hand_layernorm_mlp, *ln_args),
        config,
    )

    tour = load_generated("grammar_tour")
    N, n, k = config.n_lin, config.d_lin, config.k_tour
    X = rng.standard_normal((N, n))
    Y = rng.standard_normal((N, k))
    tour_args = (
        X,
        Y,
        0.5,
        rng.standard_normal((n, k)) / math.sqrt(n),
        0.1 * rng.standard_normal(k),
        0.7,
        rng.standard_normal(n) / math.sqrt(n),
    )
    compare(
        rows,
        section,
        f"grammar_tour N={N} n={n} k={k}",
        lambda: tour.loss_and_gradients(*tour_args),
        lambda: hand_grammar_tour(*tour_args),
        config,
    )


def _drop_state(result: tuple[Any, Any, float]) -> tuple[Any, float]:
    """(params, state, loss) -> (params, loss): plain sgd's state is empty."""
    return result[0], result[2]


def bench_steps(rows: list[Row], config: Config, rng: np.random.Generator) -> None:
    """One optimizer step (loss, gradients and update), generated vs by hand."""
    section = "step"

    relu = load_generated("relu_neuron")
    lin = linear_data(rng, config.n_lin, config.d_lin)
    relu_params = relu.Params(*lin.params)
    relu_state = relu.init_state(relu_params)

    def hand_relu_step() -> tuple[tuple[Any, ...], float]:
        value, grads = hand_relu_neuron(*lin.inputs, *lin.params)
        return hand_sgd_step(lin.params, grads, 0.01), value

    compare(
        rows,
        section,
        f"relu_neuron sgd N={config.n_lin} n={config.d_lin}",
        lambda: _drop_state(relu.step(relu_params, relu_state, *lin.inputs)),
        hand_relu_step,
        config,
    )

    logistic = load_generated("logistic_regression")
    log_params = logistic.Params(*lin.params)
    # one step first, so that the moments are not zero
    log_params, log_state, _ = logistic.step(
        log_params, logistic.init_state(log_params), *lin.inputs
    )
    log_hand_state = AdamState(log_state.t, tuple(log_state.m), tuple(log_state.v))

    def hand_logistic_step() -> tuple[tuple[Any, ...], AdamState, float]:
        value, grads = hand_logistic_regression(*lin.inputs, *log_params)
        new_params, new_state = hand_adam_step(
            tuple(log_params), log_hand_state, grads, 0.05, 0.8, 0.99, 1e-7
        )
        return new_params, new_state, value

    compare(
        rows,
        section,
        f"logistic_regression adam N={config.n_lin} n={config.d_lin}",
        lambda: logistic.step(log_params, log_state, *lin.inputs),
        hand_logistic_step,
        config,
    )

    mlp_size = f"N={config.n_mlp} n={config.d_mlp} h={config.h_mlp} k={config.k_mlp}"
    data = mlp_data(rng, config.n_mlp, config.d_mlp, config.h_mlp, config.k_mlp)

    mlp = load_generated("mlp")
    mlp_params = mlp.Params(*data.params)
    mlp_state = mlp.init_state(mlp_params)

    def hand_mlp_step() -> tuple[tuple[Any, ...], float]:
        value, grads = hand_mlp(*data.inputs, *data.params)
        return hand_sgd_step(data.params, grads, 0.1), value

    compare(
        rows,
        section,
        f"mlp sgd {mlp_size}",
        lambda: _drop_state(mlp.step(mlp_params, mlp_state, *data.inputs)),
        hand_mlp_step,
        config,
    )

    adam = load_generated("mlp_adam")
    adam_params = adam.Params(*data.params)
    adam_params, adam_state, _ = adam.step(
        adam_params, adam.init_state(adam_params), *data.inputs
    )
    adam_hand_state = AdamState(adam_state.t, tuple(adam_state.m), tuple(adam_state.v))

    def hand_adam_mlp_step() -> tuple[tuple[Any, ...], AdamState, float]:
        value, grads = hand_mlp(*data.inputs, *adam_params)
        new_params, new_state = hand_adam_step(
            tuple(adam_params), adam_hand_state, grads, 0.01, 0.9, 0.999, 1e-8
        )
        return new_params, new_state, value

    compare(
        rows,
        section,
        f"mlp_adam adam {mlp_size}",
        lambda: adam.step(adam_params, adam_state, *data.inputs),
        hand_adam_mlp_step,
        config,
    )


def bench_jacobians(rows: list[Row], config: Config, rng: np.random.Generator) -> None:
    """Jacobians of the outputs with respect to the params, generated vs by hand."""
    section = "jacobian"
    lin = linear_data(rng, config.n_lin, config.d_lin)
    X = lin.inputs[0]
    w, b = lin.params
    size = f"N={config.n_lin} n={config.d_lin}"

    def hand_relu() -> tuple[Array, Array]:
        mask = (X @ w + b) > 0
        return X * mask[:, None], mask.astype(float)

    def hand_linear() -> tuple[Array, Array]:
        return X.copy(), np.ones(X.shape[0])

    def hand_logistic() -> tuple[Array, Array]:
        p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
        dp = p * (1.0 - p)
        return X * dp[:, None], dp

    relu = load_generated("relu_neuron")
    linear = load_generated("linear_regression")
    logistic = load_generated("logistic_regression")
    compare(
        rows,
        section,
        f"relu_neuron prediction {size}",
        lambda: relu.jacobian_prediction(X, w, b),
        hand_relu,
        config,
    )
    compare(
        rows,
        section,
        f"linear_regression prediction {size}",
        lambda: linear.jacobian_prediction(X, w, b),
        hand_linear,
        config,
    )
    compare(
        rows,
        section,
        f"logistic_regression probability {size}",
        lambda: logistic.jacobian_probability(X, w, b),
        hand_logistic,
        config,
    )

    # The MLP's Jacobian is rank 4 ([N, k, n, h] for W1): small sizes only.
    N, n, h, k = config.n_jac_mlp, config.d_jac_mlp, config.h_jac_mlp, config.k_jac_mlp
    data = mlp_data(rng, N, n, h, k)
    Xm = data.inputs[0]
    W1, b1, W2, b2 = data.params
    mlp = load_generated("mlp")

    def hand_mlp_jacobian() -> tuple[Array, Array, Array, Array]:
        H = np.tanh(Xm @ W1 + b1)
        dH = 1.0 - H * H  # [N, h]
        J_b1 = dH[:, None, :] * W2.T[None, :, :]  # [N, k, h]
        J_W1 = Xm[:, None, :, None] * J_b1[:, :, None, :]  # [N, k, n, h]
        eye_k = np.eye(k)
        J_W2 = H[:, None, :, None] * eye_k[None, :, None, :]  # [N, k, h, k]
        J_b2 = np.broadcast_to(eye_k, (N, k, k)).copy()  # [N, k, k]
        return J_W1, J_b1, J_W2, J_b2

    compare(
        rows,
        section,
        f"mlp prediction N={N} n={n} h={h} k={k}",
        lambda: mlp.jacobian_prediction(Xm, W1, b1, W2, b2),
        hand_mlp_jacobian,
        config,
    )


class PowerRow(NamedTuple):
    """One line of the power micro-benchmark."""

    expression: str
    timing: Timing
    baseline: str


def bench_powers(config: Config, rng: np.random.Generator) -> list[PowerRow]:
    """numpy's c**3 vs c*c*c and c**2 vs c*c on one float64 array."""
    c = rng.standard_normal(config.n_pow)
    cases: list[tuple[str, Callable[[], object], str]] = [
        ("c**3", lambda: c**3, "c*c*c"),
        ("c*c*c", lambda: c * c * c, "c*c*c"),
        ("c**2", lambda: c**2, "c*c"),
        ("c*c", lambda: c * c, "c*c"),
    ]
    check_agree("c**3", c**3, c * c * c)
    check_agree("c**2", c**2, c * c)
    return [PowerRow(expr, time_one(fn, config), base) for expr, fn, base in cases]


# ---------------------------------------------------------------------- output


def print_table(rows: list[Row]) -> None:
    """The main table: per-call times in ms and generated/hand ratios."""
    width = max(len("case"), *(len(row.case) for row in rows))
    header = (
        f"{'section':<18} {'case':<{width}} {'gen med':>9} {'gen min':>9}"
        f" {'hand med':>9} {'hand min':>9} {'ratio med':>9} {'ratio min':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.section:<18} {row.case:<{width}}"
            f" {row.generated.median * 1e3:9.3f} {row.generated.best * 1e3:9.3f}"
            f" {row.hand.median * 1e3:9.3f} {row.hand.best * 1e3:9.3f}"
            f" {row.generated.median / row.hand.median:8.2f}x"
            f" {row.generated.best / row.hand.best:8.2f}x"
        )


def print_powers(rows: list[PowerRow], length: int) -> None:
    """The power micro-benchmark table."""
    times = {row.expression: row.timing for row in rows}
    header = (
        f"{'expression':<12} {'med ms':>9} {'min ms':>9} {'vs':>7}"
        f" {'ratio med':>9} {'ratio min':>9}"
    )
    print(f"numpy integer powers on a float64 array of {length:,} elements")
    print(header)
    print("-" * len(header))
    for row in rows:
        base = times[row.baseline]
        print(
            f"{row.expression:<12} {row.timing.median * 1e3:9.3f}"
            f" {row.timing.best * 1e3:9.3f} {row.baseline:>7}"
            f" {row.timing.median / base.median:8.2f}x"
            f" {row.timing.best / base.best:8.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few repeats (smoke run)"
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="TEXT",
        help='time only the cases whose "section case" contains TEXT',
    )
    args = parser.parse_args(argv)
    config = dataclasses.replace(QUICK if args.quick else FULL, only=args.only)
    sys.dont_write_bytecode = True  # importing generated/*.py must not write .pyc
    warm_allocator()

    for line in machine_info():
        print(line)
    print(
        f"mode: {'quick' if args.quick else 'full'}; {config.repeats} repeats of"
        f" >= {config.min_time * 1e3:g} ms each; times are per call in ms;"
        " ratio = generated / hand-written (> 1 means generated is slower);"
        " malloc warmed up first (see warm_allocator)"
    )
    print()

    rng = np.random.default_rng(20240607)
    rows: list[Row] = []
    bench_gradients(rows, config, rng)
    bench_steps(rows, config, rng)
    bench_jacobians(rows, config, rng)
    powers = bench_powers(config, rng) if config.only in "powers" else []

    print_table(rows)
    if powers:
        print()
        print_powers(powers, config.n_pow)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
