"""`backend: array-api` (`gradgen generate --backend array-api`): the module written
against the Python array API standard, through array-api-compat.

For every example, the array-API module is checked against the plain numpy module
(`generated/`) on the same random data, in float64 to rtol 1e-10: on numpy arrays,
on `array_api_strict` arrays (which refuse every call outside the standard), on torch
CPU tensors, JAX arrays (x64 switched on), CuPy arrays where a GPU is, and dask
arrays; each library's test skips cleanly where it is not installed. Results come back as the input library's arrays, fresh, in the spec's
dtype; on dask every result stays lazy (nothing is computed while the module runs,
so loss and gradients are computed in one graph). The array-API module is also
checked on its own against finite differences and at the stability points of the
numpy module's tests (|z| = 800, logits of +-1000). The options (`backend:`,
`--backend`, `[tool.gradgen]` and its overrides) are tested at the end.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    FD_RTOL,
    LOSS_EXAMPLES,
    ROOT,
    SCRATCH,
    Example,
    call,
    central_difference,
    example,
    example_id,
    fd_atol,
    import_file,
    smooth_point,
)

from gradgen import pipeline, write
from gradgen.rules import PLUMBING, RULES

#: The examples an array-API module is made of: all but the threaded ones (threads
#: are numpy's; the same spec without `threads: true` is an example of its own).
XP_EXAMPLES = [ex for ex in EXAMPLES if not ex.spec.get("threads")]
XP_LOSS_EXAMPLES = [ex for ex in LOSS_EXAMPLES if ex in XP_EXAMPLES]
examples = pytest.mark.parametrize("ex", XP_EXAMPLES, ids=example_id)
#: cupy runs where cupy and a GPU are (it skips here: no GPU).
LIBRARIES = ("numpy", "array_api_strict", "torch", "jax", "cupy", "dask")
libraries = pytest.mark.parametrize("library", LIBRARIES)


@functools.cache
def xp_module(name: str, dtype: str | None = None) -> ModuleType:
    """The array-API module of example `name`, generated once per session."""
    ex = example(name)
    out = SCRATCH / f"array_api_{dtype or 'default'}"
    out.mkdir(exist_ok=True)
    generated = pipeline.generate(ex.path, out, backend="array-api", dtype=dtype)
    generated.target.write_text(generated.text, encoding="utf-8")
    return import_file(generated.target, f"xp_{dtype}_{name}", keep=True)


def xp_text(name: str) -> str:
    return Path(xp_module(name).__file__ or "").read_text(encoding="utf-8")


# --- the libraries --------------------------------------------------------------------


class Library:
    """Converting numpy values to one library's arrays, and back."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name != "numpy":
            self.lib = pytest.importorskip(name)
        if name == "dask":
            self.da = pytest.importorskip("dask.array")
        if name == "cupy":
            try:
                gpus = self.lib.cuda.runtime.getDeviceCount()
            except Exception as e:  # no driver: cupy imports, the runtime fails
                pytest.skip(f"cupy without a GPU: {e}")
            if gpus == 0:
                pytest.skip("cupy without a GPU")
        if name == "jax":
            # float64 arrays: JAX makes float32 ones unless x64 is switched on
            self.lib.config.update("jax_enable_x64", True)
            self.jnp = pytest.importorskip("jax.numpy")

    def array(self, value: Any) -> Any:
        a = np.asarray(value)
        if self.name == "numpy":
            return np.array(a)
        if self.name == "array_api_strict":
            return self.lib.asarray(a)
        if self.name == "torch":
            return self.lib.asarray(a.copy())
        if self.name == "jax":
            return self.jnp.asarray(a)
        if self.name == "cupy":
            return self.lib.asarray(a)
        # dask: two chunks along the first axis where it has two rows
        chunks = tuple(
            max(1, (n + 1) // 2) if i == 0 else n for i, n in enumerate(a.shape)
        )
        return self.da.from_array(a, chunks=chunks)

    def is_array(self, value: Any) -> bool:
        types = {
            # numpy's full reductions give numpy scalars, its 0-d results
            "numpy": lambda: (np.ndarray, np.generic),
            "array_api_strict": lambda: type(self.lib.asarray(0.0)),
            "torch": lambda: self.lib.Tensor,
            "jax": lambda: self.lib.Array,
            "cupy": lambda: self.lib.ndarray,
            "dask": lambda: self.da.Array,
        }
        return isinstance(value, types[self.name]())

    def numpy(self, value: Any) -> np.ndarray:
        if self.name == "array_api_strict":
            return np.from_dlpack(value)
        if self.name == "torch":
            return value.numpy()
        if self.name == "cupy":
            return self.lib.asnumpy(value)
        if self.name == "dask":
            return np.asarray(value.compute())
        return np.asarray(value)

    def dtype_name(self, value: Any) -> str:
        return str(value.dtype).split(".")[-1]

    def point(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self.array(v) for k, v in values.items()}


def leaves(value: Any) -> list[Any]:
    if isinstance(value, tuple):
        return [a for v in value for a in leaves(v)]
    return [value]


def assert_close(got: Any, expected: Any, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    assert np.shape(got) == expected.shape, f"{what}: shape {np.shape(got)}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(
        got, expected, rtol=1e-10, atol=1e-12 * scale, err_msg=what
    )


def results(module: ModuleType, ex: Example, values: dict[str, Any]) -> dict[str, Any]:
    """Every result of the module at `values`, by name: the loss and gradients
    (`loss`, `loss_and_gradients`, `gradients`), each output and its Jacobian."""
    found: dict[str, Any] = {}
    if ex.loss is not None:
        found["loss"] = call(module.loss, values)
        value, grads = call(module.loss_and_gradients, values)
        found["loss_and_gradients"] = (value, *grads)
        found["gradients"] = tuple(call(module.gradients, values))
    for out in ex.outputs:
        found[out] = call(getattr(module, out), values)
        found[f"jacobian_{out}"] = tuple(
            call(getattr(module, f"jacobian_{out}"), values)
        )
    return found


# --- the same numbers as the numpy module, on every library -----------------------------


@examples
@libraries
def test_matches_the_numpy_module(ex: Example, library: str) -> None:
    lib = Library(library)
    values = smooth_point(ex, 0)
    expected = results(ex.module, ex, values)
    got = results(xp_module(ex.name), ex, lib.point(values))
    assert got.keys() == expected.keys()
    for name, value in got.items():
        for i, (g, e) in enumerate(
            zip(leaves(value), leaves(expected[name]), strict=True)
        ):
            what = f"{ex.name}.{name}[{i}] on {library}"
            assert lib.is_array(g), f"{what} is a {type(g).__name__}"
            assert lib.dtype_name(g) == "float64", f"{what}: {g.dtype}"
            assert_close(lib.numpy(g), e, what)


@examples
@pytest.mark.parametrize("library", ("numpy", "torch"))
def test_results_are_fresh(ex: Example, library: str) -> None:
    """No returned array shares memory with an argument or with another result."""
    lib = Library(library)
    point = lib.point(smooth_point(ex, 1))
    module = xp_module(ex.name)

    def memory(a: Any) -> np.ndarray:
        return np.asarray(a) if library == "numpy" else a.numpy()

    arguments = [memory(v) for v in point.values()]
    for name, value in results(module, ex, point).items():
        returned = [memory(v) for v in leaves(value)]
        for i, r in enumerate(returned):
            for a in arguments:
                assert not np.shares_memory(r, a), f"{name}[{i}] shares an argument"
            for j, other in enumerate(returned[:i]):
                assert not np.shares_memory(r, other), f"{name}[{i}] and [{j}]"


def test_python_floats_are_accepted_beside_arrays() -> None:
    """Scalar params may be Python floats when an array argument names the library."""
    ex = example("relu_neuron")
    values = smooth_point(ex, 2)  # b is a Python float
    assert isinstance(values["b"], float)
    module = xp_module(ex.name)
    value, grads = call(module.loss_and_gradients, values)
    expected, expected_grads = call(ex.module.loss_and_gradients, values)
    assert_close(value, expected, "loss")
    for g, e in zip(grads, expected_grads, strict=True):
        assert_close(g, e, "gradient")


SCALAR_EXAMPLES = [
    ex
    for ex in XP_EXAMPLES
    if all(v == 0 for v in map(np.ndim, smooth_point(ex, 0).values()))
]


@pytest.mark.parametrize("ex", SCALAR_EXAMPLES, ids=example_id)
def test_python_numbers_alone_are_accepted(ex: Example) -> None:
    """A model of scalars called on Python numbers only (no array names a library):
    every function runs on numpy's namespace, as the numpy module does."""
    values = {k: float(v) for k, v in smooth_point(ex, 0).items()}
    got = results(xp_module(ex.name), ex, values)
    expected = results(ex.module, ex, values)
    for name, value in got.items():
        for g, e in zip(leaves(value), leaves(expected[name]), strict=True):
            assert_close(g, e, f"{ex.name}.{name}")


def test_some_examples_are_scalars_only() -> None:
    assert len(SCALAR_EXAMPLES) >= 2, [ex.name for ex in SCALAR_EXAMPLES]


@pytest.mark.parametrize("ex", XP_LOSS_EXAMPLES, ids=example_id)
@pytest.mark.parametrize(
    "library", ("numpy", "array_api_strict", "torch", "jax", "cupy")
)
def test_step_and_flat_vector(ex: Example, library: str) -> None:
    """`step` (with its optimizer state), `pack`, `unpack` and
    `loss_and_gradient_flat` agree with the numpy module's."""
    lib = Library(library)
    module, reference = xp_module(ex.name), ex.module
    values = smooth_point(ex, 0)
    point = lib.point(values)
    data = [values[n] for n in ex.inputs]
    params = reference.Params(*(values[n] for n in ex.params))
    xparams = module.Params(*(point[n] for n in ex.params))
    state, xstate = reference.init_state(params), module.init_state(xparams)
    for _ in range(2):
        params, state, value = reference.step(params, state, *data)
        xparams, xstate, xvalue = module.step(
            xparams, xstate, *(point[n] for n in ex.inputs)
        )
        assert_close(lib.numpy(xvalue), value, "step's loss")
        for p, e in zip(xparams, params, strict=True):
            assert lib.is_array(p)
            assert_close(lib.numpy(p), e, "stepped param")
    theta = module.pack(xparams)
    assert lib.is_array(theta)
    assert_close(lib.numpy(theta), reference.pack(params), "pack")
    dims = ex.dims
    unpack_dims = {k: dims[k] for k in inspect_keywords(reference.unpack)}
    for p, e in zip(module.unpack(theta, **unpack_dims), params, strict=True):
        assert_close(lib.numpy(p), e, "unpack")
    flat_dims = {k: dims[k] for k in inspect_keywords(reference.loss_and_gradient_flat)}
    xdata = [point[n] for n in ex.inputs]
    value, gradient = module.loss_and_gradient_flat(theta, *xdata, **flat_dims)
    expected, expected_gradient = reference.loss_and_gradient_flat(
        reference.pack(params), *data, **flat_dims
    )
    assert_close(lib.numpy(value), expected, "flat loss")
    assert_close(lib.numpy(gradient), expected_gradient, "flat gradient")


def inspect_keywords(fn: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


# --- dask: lazy all the way -------------------------------------------------------------


@examples
def test_dask_results_stay_lazy(ex: Example) -> None:
    """On dask arrays nothing is computed while the module runs (no `float()`, no
    `np.asarray`, no `np.full` of an array): the loss and every gradient come back
    as dask arrays and are computed together, in one pass of the scheduler."""
    lib = Library("dask")
    import dask

    runs: list[int] = []

    def counting(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return dask.get(dsk, keys, **kwargs)

    values = smooth_point(ex, 0)
    point = lib.point(values)
    module = xp_module(ex.name)
    with dask.config.set(scheduler=counting):
        got = results(module, ex, point)
        assert runs == [], f"{ex.name}: the module computed {len(runs)} times"
        for name, value in got.items():
            for v in leaves(value):
                assert isinstance(v, lib.da.Array), f"{name}: {type(v).__name__}"
        if ex.loss is not None:
            together = dask.compute(*got["loss_and_gradients"])
            assert len(runs) == 1
            expected = results(ex.module, ex, values)["loss_and_gradients"]
            for g, e in zip(together, expected, strict=True):
                assert_close(np.asarray(g), e, f"{ex.name} on dask")


# --- finite differences and stability, on numpy and array_api_strict ---------------------


@examples
@pytest.mark.parametrize("library", ("numpy", "array_api_strict"))
def test_gradients_and_jacobians_match_finite_differences(
    ex: Example, library: str
) -> None:
    lib = Library(library)
    module = xp_module(ex.name)
    values = smooth_point(ex, 1)

    def run(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
        return lambda v: lib.numpy(call(fn, lib.point(v)))

    if ex.loss is not None:
        loss = run(module.loss)
        grads = call(module.gradients, lib.point(values))
        for name in ex.params:
            fd = central_difference(loss, values, name)
            np.testing.assert_allclose(
                lib.numpy(getattr(grads, name)),
                fd,
                rtol=FD_RTOL,
                atol=fd_atol(loss(values)),
                err_msg=f"d loss / d {name}",
            )
    for out in ex.outputs:
        fn = getattr(module, out)
        value = run(fn)
        jacobian = call(getattr(module, f"jacobian_{out}"), lib.point(values))
        for name in jacobian._fields:
            fd = central_difference(value, values, name)
            np.testing.assert_allclose(
                lib.numpy(getattr(jacobian, name)),
                fd,
                rtol=FD_RTOL,
                atol=fd_atol(value(values)),
                err_msg=f"d {out} / d {name}",
            )


STABLE_SPEC = (
    "gradgen: 1\n"
    "inputs: {X: [N, n], y: [N]}\n"
    "params: {w: [n]}\n"
    "define:\n"
    "  z: X @ w\n"
    "  p: sigmoid(z)\n"
    "loss: -mean(y * log(sigmoid(z)) + (1 - y) * log(1 - sigmoid(z)))\n"
    "outputs: {probability: p, soft: log(1 + exp(z))}\n"
)


@pytest.mark.parametrize("library", LIBRARIES)
def test_cross_entropy_is_finite_at_800(library: str, tmp_path: Path) -> None:
    """As tests/test_generated_code.py's numpy test: at |z| = 800 the naive forms
    overflow; the array-API module's stable forms are exact there."""
    lib = Library(library)
    spec = tmp_path / "stable.yaml"
    spec.write_text(STABLE_SPEC, encoding="utf-8")
    generated = pipeline.generate(spec, tmp_path, backend="array-api")
    generated.target.write_text(generated.text, encoding="utf-8")
    module = import_file(generated.target, f"xp_stable_{library}")
    X = np.array([[800.0], [-800.0], [30.0], [-30.0]])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    w = np.array([1.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = module.loss_and_gradients(
            *lib.point({"X": X, "y": y, "w": w}).values()
        )
        p = lib.numpy(module.probability(lib.array(X), lib.array(w)))
        soft = lib.numpy(module.soft(lib.array(X), lib.array(w)))
    z = X @ w
    expected = np.mean(np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z)))
    assert float(lib.numpy(value)) == pytest.approx(expected, rel=1e-12)
    sig = np.where(
        z >= 0,
        1 / (1 + np.exp(-np.abs(z))),
        np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))),
    )
    np.testing.assert_allclose(
        lib.numpy(grads.w), X.T @ (sig - y) / 4, rtol=1e-12, atol=0
    )
    assert np.all(np.isfinite(p)) and p[0] == 1.0 and p[1] == 0.0
    assert soft[0] == pytest.approx(800.0) and soft[1] == pytest.approx(0.0, abs=1e-300)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("scale", (1e3, 1e4))
def test_softmax_cross_entropy_is_finite_for_huge_logits(
    library: str, scale: float
) -> None:
    lib = Library(library)
    module = xp_module("softmax_regression")
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    W = np.array([[1.0, -1.0, 0.0], [0.0, 0.5, -1.0]]) * scale
    b = np.zeros(3)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = module.loss_and_gradients(*(lib.array(v) for v in (X, Y, W, b)))
        lse = lib.numpy(module.log_normaliser(*(lib.array(v) for v in (X, W, b))))
    Z = X @ W + b
    m = Z.max(axis=1, keepdims=True)
    expected_lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
    np.testing.assert_allclose(lse, expected_lse, rtol=1e-15)
    expected = np.mean(expected_lse - np.sum(Y * Z, axis=1))
    assert float(lib.numpy(value)) == pytest.approx(expected)
    softmax = np.exp(Z - expected_lse[:, None])
    np.testing.assert_allclose(
        lib.numpy(grads.W), X.T @ (softmax - Y) / 3, rtol=1e-12, atol=1e-300
    )
    assert np.all(np.isfinite(lib.numpy(grads.b)))


@pytest.mark.parametrize(
    "library", ("numpy", "array_api_strict", "torch", "jax", "cupy")
)
def test_float32_stays_float32(library: str) -> None:
    """`dtype: float32` with the array-API backend: float32 in, float32 out."""
    lib = Library(library)
    ex = example("mlp_classifier")
    module = xp_module(ex.name, "float32")
    values = {
        k: (np.asarray(v, dtype=np.float32) if k not in ex.integer_inputs else v)
        for k, v in smooth_point(ex, 0).items()
    }
    got = results(module, ex, lib.point(values))
    expected = results(ex.module, ex, smooth_point(ex, 0))
    for name, value in got.items():
        for g, e in zip(leaves(value), leaves(expected[name]), strict=True):
            assert lib.dtype_name(g) == "float32", f"{name}: {g.dtype}"
            np.testing.assert_allclose(lib.numpy(g), e, rtol=2e-3, atol=2e-4)


# --- the module's text --------------------------------------------------------------------


def _standard_names() -> set[str]:
    strict = pytest.importorskip("array_api_strict")
    names = {n for n in dir(strict) if not n.startswith("_")}
    names |= {f"linalg.{n}" for n in dir(strict.linalg) if not n.startswith("_")}
    return names


def _xp_calls(text: str) -> set[str]:
    return set(re.findall(r"\bxp\.((?:linalg\.)?[A-Za-z_]\w*)", text))


@pytest.mark.slow  # subprocesses, or every example generated
def test_every_namespace_name_is_in_the_standard() -> None:
    """Every `xp.<name>` the rule table, the templates and the generated modules call
    is a name of the standard (array_api_strict has exactly those)."""
    standard = _standard_names()
    texts = [Path(ROOT / "gradgen" / "rules.py").read_text(encoding="utf-8")]
    texts += [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "templates").glob("*.jinja")
        if "xp" in p.read_text(encoding="utf-8")
    ]
    for spelling in [*(r.spelling for r in RULES.values()), *PLUMBING.values()]:
        if spelling.xp is None:  # derived: np. read as xp.
            texts.append(spelling.template.replace("np.", "xp."))
    texts += [xp_text(ex.name) for ex in XP_EXAMPLES]
    called = set().union(*(_xp_calls(t) for t in texts))
    assert called - standard == set()
    assert {"sum", "permute_dims", "matmul"} & called  # the scan found calls


@examples
def test_module_imports_the_standard_only(ex: Example) -> None:
    """No numpy: typing, and array_namespace (device, is_writeable_array) from
    array_api_compat; only `_arrays`, for Python numbers alone, asks array_api_compat
    for numpy's namespace."""
    tree = ast.parse(xp_text(ex.name))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert imported - {"typing.Any", "typing.NamedTuple"} <= {
        "array_api_compat.array_namespace",
        "array_api_compat.device",
        "array_api_compat.is_writeable_array",
        "array_api_compat.numpy",
    }
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "np" not in names
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "float" not in calls  # no result made a Python float


def test_relu_neuron_module_reads_like_the_numpy_one() -> None:
    text = xp_text("relu_neuron")
    assert "xp = array_namespace(X, y, w, b)" in text
    assert "N = X.shape[0]" in text
    assert "dL_db = 2 / N * xp.sum(t1, axis=0)" in text
    assert "xp.astype(z > 0, xp.float64)" in text
    assert "return t0 @ t0 / N, Gradients(w=dL_dw, b=dL_db)" in text


# --- the option -------------------------------------------------------------------------


def _spec(tmp_path: Path, extra: str = "", name: str = "m") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "gradgen: 1\ninputs: {X: [N, n], y: [N]}\nparams: {w: [n]}\n"
        "loss: mean((X @ w - y)**2)\n" + extra,
        encoding="utf-8",
    )
    return path


def _gradgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradgen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_backend_key_in_the_spec(tmp_path: Path) -> None:
    plain = pipeline.generate(_spec(tmp_path), tmp_path).text
    keyed = pipeline.generate(_spec(tmp_path, "backend: array-api\n", "k"), tmp_path)
    assert "import numpy as np" in plain and "array_namespace" not in plain
    assert "array_namespace" in keyed.text and "import numpy" not in keyed.text


@pytest.mark.slow  # subprocesses, or every example generated
def test_bad_backend_is_a_located_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "backend: jax\n")
    done = _gradgen("generate", str(spec), "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr == "m.yaml:5:10: error: `backend` is numpy or array-api, not jax\n"
    )


@pytest.mark.slow  # subprocesses, or every example generated
def test_reserved_names_of_the_array_api_module(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "gradgen: 1\ninputs: {xp: [N]}\nparams: {w: []}\nloss: mean(w * xp)\n",
        encoding="utf-8",
    )
    assert _gradgen("generate", str(path), cwd=tmp_path).returncode == 0
    done = _gradgen("generate", str(path), "--backend", "array-api", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "r.yaml:2:10: error: `xp` is reserved: the generated array-API module uses"
        " the array namespace `xp` that every function takes\n"
    )


@pytest.mark.slow  # subprocesses, or every example generated
def test_backend_from_the_command_line_and_the_config(tmp_path: Path) -> None:
    """--backend, [tool.gradgen] backend and a per-spec override all write the
    array-API module; each is recorded in the spec hash, so `check` sees a change
    of backend as a stale module."""
    _spec(tmp_path, name="a")
    _spec(tmp_path, name="b")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["a.yaml", "b.yaml"]\nout = "out"\n'
        '[tool.gradgen.overrides."b.yaml"]\nbackend = "array-api"\n',
        encoding="utf-8",
    )
    assert _gradgen("generate", cwd=tmp_path).returncode == 0
    a = (tmp_path / "out" / "a.py").read_text(encoding="utf-8")
    b = (tmp_path / "out" / "b.py").read_text(encoding="utf-8")
    assert "import numpy as np" in a and "array_namespace" in b
    spec_bytes = (tmp_path / "b.yaml").read_bytes()
    assert write.spec_digest(spec_bytes, None, None, "array-api") in b
    assert _gradgen("check", cwd=tmp_path).returncode == 0
    # the whole project switched: a is stale until regenerated
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["a.yaml", "b.yaml"]\nout = "out"\n'
        'backend = "array-api"\n',
        encoding="utf-8",
    )
    done = _gradgen("check", cwd=tmp_path)
    assert done.returncode == 1 and "a.py" in done.stdout + done.stderr
    assert _gradgen("generate", cwd=tmp_path).returncode == 0
    assert "array_namespace" in (tmp_path / "out" / "a.py").read_text(encoding="utf-8")
    # the command line wins over the config
    assert _gradgen("check", "--backend", "numpy", cwd=tmp_path).returncode == 1


def test_bad_backend_in_the_config(tmp_path: Path) -> None:
    _spec(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["m.yaml"]\nbackend = "cupy"\n', encoding="utf-8"
    )
    done = _gradgen("generate", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        '[tool.gradgen].backend: error: `backend` must be "numpy" or "array-api",'
        " not a string ('cupy')" in done.stderr
    )


# --- every op of the rule table, on the bare standard -----------------------------------


def _rule_module(tmp_path: Path, text: str, expr: str) -> ModuleType:
    spec = tmp_path / "rule_case.yaml"
    spec.write_text(text.replace("EXPR", expr), encoding="utf-8")
    generated = pipeline.generate(spec, tmp_path, backend="array-api")
    generated.target.write_text(generated.text, encoding="utf-8")
    return import_file(generated.target, f"xp_rule_{tmp_path.name}")


def _on_strict(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` called with array_api_strict arrays, its result back as numpy."""
    lib = Library("array_api_strict")

    def run(**kwargs: Any) -> Any:
        result = fn(**{k: lib.array(v) for k, v in kwargs.items()})
        if isinstance(result, tuple):
            return type(result)(*(lib.numpy(r) for r in result))
        return lib.numpy(result)

    return run


def _check_both_modes(module: ModuleType, args: dict[str, Any]) -> None:
    from test_rules import central

    loss, gradients = _on_strict(module.loss), _on_strict(module.gradients)
    largs = {k: args[k] for k in inspect.signature(module.loss).parameters}
    grads = gradients(**largs)
    for p in grads._fields:
        expected = central(loss, largs, p)
        assert np.shape(getattr(grads, p)) == expected.shape, p
        assert np.allclose(getattr(grads, p), expected, rtol=1e-6, atol=1e-8), p
    out, jacobian = _on_strict(module.out), _on_strict(module.jacobian_out)
    fargs = {k: args[k] for k in inspect.signature(module.out).parameters}
    jac = jacobian(**fargs)
    for p in jac._fields:
        expected = central(out, fargs, p)
        assert getattr(jac, p).shape == expected.shape, p
        assert np.allclose(getattr(jac, p), expected, rtol=1e-6, atol=1e-8), p


#: The rule-table cases the fast subset runs through the array API too (each one a
#: spelling of its own: softmax's max shift, indexing's `...`, batched matmul,
#: where's cast condition); the full run takes every case.
XP_FAST_CASES = frozenset({"softmax", "getitem", "matmul_batched_batched", "where"})


def _cases(names: list[str]) -> list[Any]:
    return [
        name if name in XP_FAST_CASES else pytest.param(name, marks=pytest.mark.slow)
        for name in sorted(names)
    ]


def _rule_cases() -> list[Any]:
    from test_rules import CASES

    return _cases(list(CASES))


def _rank_cases() -> list[Any]:
    from test_rules import RANK_CASES

    return _cases(list(RANK_CASES))


@pytest.mark.parametrize("case", _rule_cases())
def test_xp_rule_against_finite_differences(tmp_path: Path, case: str) -> None:
    """Each case of tests/test_rules.py, generated for the array API and run on
    array_api_strict: gradients and Jacobians against central differences."""
    from test_rules import CASES, point

    text = (
        "gradgen: 1\n"
        "inputs: {A: [m, n], v: [n], y: [m], ids: {shape: [m], dtype: int}}\n"
        "params: {x: [n], W: [n, n], s: []}\n"
        "define: {f: 'EXPR'}\n"
        "loss: sum(f * f) / 2 + sum(y) * 0 + s * s\n"
        "outputs: {out: f}\n"
    )
    module = _rule_module(tmp_path, text, CASES[case])
    for seed in range(2):
        _check_both_modes(module, point(np.random.default_rng(seed)))


@pytest.mark.parametrize("case", _rank_cases())
def test_xp_rank_rule_against_finite_differences(tmp_path: Path, case: str) -> None:
    from test_rules import RANK_CASES, rank_point

    text = (
        "gradgen: 1\n"
        "inputs: {R: [2, B, m, n], A: [m, n]}\n"
        "params: {P: [B, m, n], Q: [B, n, n], W: [n, n], x: [n], s: []}\n"
        "define: {f: 'EXPR'}\n"
        "loss: sum(f * f) / 2 + s * s\n"
        "outputs: {out: f}\n"
    )
    module = _rule_module(tmp_path, text, RANK_CASES[case])
    _check_both_modes(module, rank_point(np.random.default_rng(0)))


def test_readme_excerpt_is_the_generated_code() -> None:
    """Every line of the README's array-API excerpt is a line of the ReLU neuron's
    array-API module (the excerpt leaves out the docstrings)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Backends: the array API standard", 1)[1]
    excerpt = section.split("```python\n", 1)[1].split("```", 1)[0]
    module_lines = set(xp_text("relu_neuron").splitlines())
    for line in excerpt.splitlines():
        assert not line.strip() or line in module_lines, line
