"""`--threads` (`threads: true`): `loss_and_gradients` over row chunks on a thread pool
(`gradgen/threads.py`) computes what the plain module computes, to rounding.

Every example with a loss is generated both ways. The threaded module is checked
against the plain one (the golden module in generated/, itself checked against finite
differences and the spec by tests/test_numerical.py) at the test sizes, where a
chunk holds the whole batch and the kernel runs inline, and at a batch of 301 rows
with the module's chunk shrunk so that it runs dozens of chunks on two threads; its
gradients against finite differences; its arrays fresh, its dtype kept, its sums
added in one order. The stability checks of tests/test_generated_code.py run on
threaded modules too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    FD_RTOL,
    ROOT,
    SCRATCH,
    Example,
    call,
    central_difference,
    example_id,
    fd_atol,
    import_file,
    random_point,
    smooth_point,
)

from gradgen import pipeline, threads
from gradgen.derive import derive
from gradgen.errors import SpecError
from gradgen.load import load_yaml_text, read_spec_bytes
from gradgen.lower import lower
from gradgen.model import build
from gradgen.spec import validate

LOSS_EXAMPLES = [ex for ex in EXAMPLES if ex.loss is not None]
loss_examples = pytest.mark.parametrize("ex", LOSS_EXAMPLES, ids=example_id)
ROWS = 301  # the batch in the chunked tests: odd, so the last chunk is short
_modules: dict[tuple[Path, str], ModuleType] = {}


def threaded(ex: Example | Path, dtype: str = "float64") -> ModuleType:
    """The threaded module of a spec, generated once per session."""
    path = ex.path if isinstance(ex, Example) else ex
    key = (path, dtype)
    if key not in _modules:
        out = SCRATCH / "threads" / dtype
        out.mkdir(parents=True, exist_ok=True)
        generated = pipeline.generate(
            path, out, threads=True, dtype=None if dtype == "float64" else dtype
        )
        generated.target.write_text(generated.text, encoding="utf-8")
        _modules[key] = import_file(generated.target, f"threads_{dtype}_{path.stem}")
    return _modules[key]


def plain(ex: Example, dtype: str = "float64") -> ModuleType:
    if dtype == "float64":
        return ex.module
    key = (ex.path, "plain-" + dtype)
    if key not in _modules:
        out = SCRATCH / "plain" / dtype
        out.mkdir(parents=True, exist_ok=True)
        generated = pipeline.generate(ex.path, out, dtype=dtype)
        generated.target.write_text(generated.text, encoding="utf-8")
        _modules[key] = import_file(generated.target, f"plain_{dtype}_{ex.stem}")
    return _modules[key]


def batch_of(module: ModuleType) -> str | None:
    """The dim the module's workers split (None: it has no chunked phase)."""
    found = re.search(r"_chunked\(_rows_\d+, (\w+),", Path(module.__file__).read_text())
    return found[1] if found else None


class Sized(Example):
    """An example with some dims resized."""

    def __init__(self, ex: Example, **sizes: int) -> None:
        super().__init__(ex.path)
        self.sizes = sizes

    @property
    def dims(self) -> dict[str, int]:
        return {**super().dims, **self.sizes}


def big_point(ex: Example, module: ModuleType, seed: int = 0) -> dict[str, Any]:
    batch = batch_of(module)
    sized = Sized(ex, **({batch: ROWS} if batch else {}))
    return random_point(sized, np.random.default_rng(seed))


def chunked(module: ModuleType, chunk: int, threads: int = 2) -> None:
    """Shrink the module's chunks (elements) and fix its thread count."""
    module.CHUNK, module.THREADS = chunk, threads


def restore(module: ModuleType) -> None:
    module.CHUNK, module.THREADS = 131072, 2


def agree(got: Any, want: Any, what: str, count: int = 1) -> None:
    """Equal to rounding: sums of `count` terms added in another order."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(
        got, want, rtol=1e-12, atol=1e-13 * scale * max(1, count) ** 0.5, err_msg=what
    )


def compare(ex: Example, module: ModuleType, point: dict[str, Any]) -> None:
    value, grads = call(module.loss_and_gradients, point)
    want_value, want_grads = call(plain(ex).loss_and_gradients, point)
    assert isinstance(value, float)
    terms = max((np.size(v) for v in point.values()), default=1)
    agree(value, want_value, "loss", terms)
    for name in ex.params:
        agree(getattr(grads, name), getattr(want_grads, name), f"dL/d{name}", terms)


@pytest.mark.slow
@loss_examples
def test_threaded_agrees_with_plain_inline(ex: Example) -> None:
    """At the test sizes a chunk holds the whole batch: the workers run inline."""
    module = threaded(ex)
    restore(module)
    for seed in (0, 1):
        compare(ex, module, random_point(ex, np.random.default_rng(seed)))


@pytest.mark.parametrize(
    "ex",
    [
        pytest.param(ex, marks=() if ex.name == "mlp" else pytest.mark.slow)
        for ex in LOSS_EXAMPLES
    ],
    ids=example_id,
)
def test_threaded_agrees_with_plain_over_many_chunks(ex: Example) -> None:
    """(The MLP alone in the fast subset: products, chunks, partial sums.)"""
    module = threaded(ex)
    chunked(module, 64)
    try:
        compare(ex, module, big_point(ex, module))
    finally:
        restore(module)


@pytest.mark.slow
@loss_examples
def test_threaded_results_are_fresh_and_repeatable(ex: Example) -> None:
    """Every array is new (never an argument nor another result), and the chunks'
    sums are added in one order: two calls give the same bits."""
    module = threaded(ex)
    chunked(module, 64)
    try:
        point = big_point(ex, module)
        value, grads = call(module.loss_and_gradients, point)
        again = call(module.loss_and_gradients, point)
    finally:
        restore(module)
    arrays = [g for g in grads if isinstance(g, np.ndarray)]
    for i, g in enumerate(arrays):
        for arg in point.values():
            assert not np.shares_memory(g, arg)
        for other in arrays[i + 1 :]:
            assert not np.shares_memory(g, other)
    assert value == again[0]
    for g, h in zip(grads, again[1], strict=True):
        np.testing.assert_array_equal(g, h)


@pytest.mark.slow
@loss_examples
def test_threaded_gradients_match_finite_differences(ex: Example) -> None:
    module = threaded(ex)
    chunked(module, 4)  # a few rows per chunk at the test sizes
    try:
        values = smooth_point(ex, 0)
        grads = call(module.gradients, values)
        loss_value = call(module.loss, values)
        for name in ex.params:
            fd = central_difference(lambda v: call(module.loss, v), values, name)
            np.testing.assert_allclose(
                getattr(grads, name), fd, rtol=FD_RTOL, atol=fd_atol(loss_value)
            )
    finally:
        restore(module)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elementwise", "mlp", "softmax_labels"])
def test_float32_stays_float32(name: str) -> None:
    ex = next(e for e in LOSS_EXAMPLES if e.name == name)
    module, reference = threaded(ex, "float32"), plain(ex, "float32")
    chunked(module, 64)
    try:
        point = {
            k: v.astype(np.float32) if np.asarray(v).dtype.kind == "f" else v
            for k, v in big_point(ex, module).items()
        }
        value, grads = call(module.loss_and_gradients, point)
    finally:
        restore(module)
    want_value, want_grads = call(reference.loss_and_gradients, point)
    assert value == pytest.approx(want_value, rel=1e-4, abs=1e-4)
    for g, w in zip(grads, want_grads, strict=True):
        assert np.asarray(g).dtype == np.float32
        scale = max(1.0, float(np.max(np.abs(w))))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.slow
def test_elementwise_at_full_chunk_size() -> None:
    """The default chunk (131072 elements) on two threads: four chunks."""
    ex = next(e for e in LOSS_EXAMPLES if e.name == "elementwise")
    module = threaded(ex)
    restore(module)
    x = np.random.default_rng(0).uniform(-3, 3, 4 * 131072 - 5)
    value, grads = module.loss_and_gradients(x)
    want_value, want_grads = plain(ex).loss_and_gradients(x)
    agree(value, want_value, "loss", x.size)
    agree(grads.x, want_grads.x, "dL/dx")
    assert "_rows_0" in Path(module.__file__).read_text()


# --- stability on the threaded path -----------------------------------------------


@pytest.mark.slow
def test_cross_entropy_is_finite_for_huge_z_when_threaded(tmp_path: Path) -> None:
    spec = tmp_path / "stable.yaml"
    spec.write_text(
        "gradgen: 1\n"
        "threads: true\n"
        "inputs: {X: [N, n], y: [N]}\n"
        "params: {w: [n]}\n"
        "define:\n"
        "  z: X @ w\n"
        "loss: -mean(y * log(sigmoid(z)) + (1 - y) * log(1 - sigmoid(z)))\n"
    )
    module = threaded(spec)
    chunked(module, 1)  # one row a chunk
    X = np.array([[800.0], [-800.0], [30.0], [-30.0], [1e4], [-1e4]])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    w = np.array([1.0])
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            value, grads = module.loss_and_gradients(X, y, w)
    finally:
        restore(module)
    z = X @ w
    expected = np.mean(np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z)))
    assert value == pytest.approx(expected, rel=1e-12)
    sig = np.where(
        z >= 0,
        1 / (1 + np.exp(-np.abs(z))),
        np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))),
    )
    assert np.allclose(grads.w, X.T @ (sig - y) / len(y), rtol=1e-12, atol=0)


def test_the_callers_errstate_holds_in_the_workers(tmp_path: Path) -> None:
    """np.errstate is per thread: `_chunked` hands the caller's to its workers, so
    an overflow raises as it does in the plain module."""
    spec = tmp_path / "overflow.yaml"
    spec.write_text("gradgen: 1\nthreads: true\nparams: {x: [N]}\nloss: sum(exp(x))\n")
    module = threaded(spec)
    chunked(module, 2)
    x = np.array([0.0, 1.0, 2.0, 1000.0, 3.0])
    try:
        with np.errstate(over="raise"), pytest.raises(FloatingPointError):
            module.loss_and_gradients(x)
        with np.errstate(over="ignore"):
            value, grads = module.loss_and_gradients(x)
    finally:
        restore(module)
    assert value == np.inf and grads.x[3] == np.inf


@pytest.mark.slow
@pytest.mark.parametrize("logit", [1e3, 1e4])
def test_softmax_cross_entropy_is_finite_for_huge_logits_when_threaded(
    logit: float,
) -> None:
    ex = next(e for e in LOSS_EXAMPLES if e.name == "softmax_regression")
    module = threaded(ex)
    chunked(module, 3)  # one row a chunk
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    Y = np.eye(3)[[0, 2, 1, 1]]
    W = logit * np.array([[1.0, -1.0, 0.0], [0.0, 0.5, -1.0]])
    b = np.zeros(3)
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            value, grads = module.loss_and_gradients(X, Y, W, b)
    finally:
        restore(module)
    Z = X @ W + b
    m = Z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
    assert value == pytest.approx(np.mean(lse - np.sum(Y * Z, axis=1)), rel=1e-12)
    softmax = np.exp(Z - lse[:, None])
    assert np.allclose(grads.W, X.T @ (softmax - Y) / 4, rtol=1e-12, atol=1e-300)
    assert np.allclose(grads.b, np.sum(softmax - Y, axis=0) / 4, atol=1e-15)


# --- the schedule -------------------------------------------------------------------


def schedule_of(path: Path) -> threads.Schedule | None:
    data = read_spec_bytes(path, str(path))
    model = build(validate(load_yaml_text(data, str(path)), str(path), path.stem))
    return threads.schedule(model, lower(model, derive(model)))


#: What calls BLAS (or a LAPACK routine): never in a worker.
BLAS = {"matmul", "tensordot", "dot", "vdot", "inner", "linalg"}


@pytest.mark.slow
@loss_examples
def test_workers_never_call_blas(ex: Example) -> None:
    """Structurally (no matrix product among a chunk's nodes, a dot product's part
    is an einsum) and in the text: no `@`, no np.dot/matmul/tensordot in a worker."""
    scheduled = schedule_of(ex.path)
    assert scheduled is not None
    for phase in scheduled.phases:
        if isinstance(phase, threads.Chunked):
            assert not {n.op for n in phase.nodes} & {"matmul", "tensordot", "outer"}
    tree = ast.parse(Path(threaded(ex).__file__).read_text())
    workers = [
        f
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and "_rows_" in f.name
    ]
    for worker in workers:
        for node in ast.walk(worker):
            assert not (
                isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)
            )
            if isinstance(node, ast.Attribute):
                assert node.attr not in BLAS, ast.unparse(node)


def test_element_wise_work_runs_in_one_chunked_phase() -> None:
    """The element-wise model: one worker computes everything, writes the gradient
    and returns the loss's part; the driver allocates and adds up."""
    scheduled = schedule_of(ROOT / "examples" / "elementwise.yaml")
    assert scheduled is not None and scheduled.batch == "N"
    kinds = [type(p).__name__ for p in scheduled.phases]
    assert kinds == ["Driver", "Chunked"]  # the driver only allocates and adds up
    chunk = scheduled.phases[1]
    assert isinstance(chunk, threads.Chunked)
    assert len(chunk.stores) == 1 and len(chunk.partials) == 1
    assert scheduled.phases[0].nodes == ()


def test_matmuls_stay_on_the_driver() -> None:
    """The MLP: its products run on the calling thread, between chunked phases."""
    scheduled = schedule_of(ROOT / "examples" / "mlp.yaml")
    assert scheduled is not None and scheduled.batch == "N"
    driver = [
        n.op for p in scheduled.phases if isinstance(p, threads.Driver) for n in p.nodes
    ]
    assert driver.count("matmul") == 5
    assert sum(isinstance(p, threads.Chunked) for p in scheduled.phases) == 3


@pytest.mark.slow
def test_scalar_model_has_no_chunked_phase() -> None:
    scheduled = schedule_of(ROOT / "examples" / "nested_chain.yaml")
    assert scheduled is not None and not scheduled.chunked
    text = Path(threaded(ROOT / "examples" / "nested_chain.yaml").__file__).read_text()
    assert "_chunked" not in text and "import threading" not in text


# --- the option -----------------------------------------------------------------------


def _spec(tmp_path: Path, extra: str, inputs: str = "{X: [N, n], y: [N]}") -> Path:
    spec = tmp_path / "m.yaml"
    spec.write_text(
        f"gradgen: 1\n{extra}inputs: {inputs}\nparams: {{w: [n]}}\n"
        "loss: mean(tanh(X @ w) - y)\n"
    )
    return spec


def test_threads_names_the_batch_dim(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "threads: M\n", "{X: [N, n], y: [N], s: [M]}")
    spec.write_text(spec.read_text().replace("- y)", "- y) + sum(tanh(s))"))
    generated = pipeline.generate(spec, tmp_path)
    assert "_chunked(_rows_0, M, 1)" in generated.text


def test_ambiguous_batch_dim_is_a_located_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "threads: true\n", "{X: [N, n], y: [N], s: [M]}")
    with pytest.raises(SpecError) as raised:
        pipeline.generate(spec, tmp_path)
    (problem,) = raised.value.diagnostics
    assert (problem.location.line, problem.location.col) == (2, 10)
    assert "N, M" in problem.message and "threads: <dim>" in problem.message


@pytest.mark.slow
def test_bad_threads_value_is_a_located_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "threads: K\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradgen",
            "generate",
            str(spec),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"{spec}:2:10:" in result.stderr
    assert "`threads` is true, false or the batch dim to split (N, n), not K" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_flag_and_config_give_the_same_module_as_the_key(tmp_path: Path) -> None:
    """`--threads`, `threads = true` in [tool.gradgen] and a per-spec override give
    the threaded module (their header records the option); `threads: true` in the
    spec gives the same code."""
    spec = _spec(tmp_path, "")
    (tmp_path / "k").mkdir()
    keyed = _spec(tmp_path / "k", "threads: true\n")
    out = tmp_path / "out"

    def run(*args: str, cwd: Path = tmp_path) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gradgen", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd,
        )
        assert result.returncode == 0, result.stderr
        return (out / "m.py").read_text()

    flagged = run("generate", str(spec), "--out", str(out), "--threads")
    assert "_chunked(_rows_0, N, 1)" in flagged
    body = flagged.split("def loss_and_gradients")[1]
    assert (
        body
        == run("generate", str(keyed), "--out", str(out)).split(
            "def loss_and_gradients"
        )[1]
    )
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["m.yaml"]\nout = "out"\nthreads = true\n'
    )
    assert run("generate") == flagged
    run("check")  # up to date: the option is part of what the header records
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["m.yaml"]\nout = "out"\nthreads = true\n'
        '[tool.gradgen.overrides."m.yaml"]\nthreads = false\n'
    )
    assert "_chunked" not in run("generate")


@pytest.mark.slow
def test_the_plain_module_is_unchanged_by_the_option_machinery() -> None:
    """Without `threads`, the digest and the code are what they were."""
    path = ROOT / "examples" / "elementwise.yaml"
    generated = pipeline.generate(path, ROOT / "generated")
    assert generated.text == (ROOT / "generated" / "elementwise.py").read_text()


def test_the_readme_shows_the_generated_threaded_kernel() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Threads")[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    code = (ROOT / "generated" / "elementwise_threads.py").read_text()
    head, body = snippet[1].split("\n", 1)
    kernel = code.split(head + "\n")[1]
    kernel = re.sub(r'^    """.*?"""\n', "", kernel, count=1, flags=re.S)
    assert kernel.startswith(body)


def test_names_the_workers_use_never_hide_the_specs(tmp_path: Path) -> None:
    """Params called `lo` and `hi` move the chunk bounds aside; an output called
    `os` would hide the module's import: a located error."""
    spec = tmp_path / "bounds.yaml"
    spec.write_text(
        "gradgen: 1\nthreads: true\nparams: {lo: [N], hi: [N]}\n"
        "loss: sum(tanh(lo) * hi)\n"
    )
    module = threaded(spec)
    assert "def _rows_0(lo_, hi_):" in Path(module.__file__).read_text()
    chunked(module, 2)
    lo, hi = np.linspace(-1, 1, 7), np.linspace(2, 3, 7)
    try:
        value, grads = module.loss_and_gradients(lo, hi)
    finally:
        restore(module)
    assert value == pytest.approx(np.sum(np.tanh(lo) * hi), rel=1e-12)
    np.testing.assert_allclose(grads.lo, hi / np.cosh(lo) ** 2, rtol=1e-12)
    spec.write_text(spec.read_text() + "outputs: {os: tanh(lo)}\n")
    with pytest.raises(SpecError) as raised:
        pipeline.generate(spec, tmp_path)
    (problem,) = raised.value.diagnostics
    assert problem.location.line == 5 and "output `os`" in problem.message
