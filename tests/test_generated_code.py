"""Properties of the emitted code itself, over every module in generated/: vectorised
(no loops), no N x N arrays, every value computed once, fast powers, stable forms."""

from __future__ import annotations

import ast
import inspect
import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    Example,
    discover_examples,
    example_id,
    generate_and_import,
    load_generated,
    random_point,
)

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted((ROOT / "generated").glob("*.py"))
EXAMPLES = discover_examples()


def functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in tree.body if isinstance(n, ast.FunctionDef)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_python_loops(path: Path) -> None:
    """Vectorised: the only iterations are init_state's and pack's walks over the
    params tuple, _scatter_add's over feature columns (never over samples), and a
    threaded module's _chunked over its chunks of 128K elements and _scratch over
    a worker's few scratch arrays."""
    for fn in functions(path):
        if fn.name == "_chunked":
            assert "CHUNK // max(1, width)" in ast.unparse(fn)  # a step of chunks
            continue
        for node in ast.walk(fn):
            assert not isinstance(node, ast.For | ast.While | ast.AsyncFor), fn.name
            if isinstance(node, ast.comprehension):
                allowed = ("init_state", "pack", "_scatter_add", "_scratch")
                assert fn.name in allowed, fn.name
                if fn.name == "_scratch":  # over the shapes it is given
                    assert "shapes" in ast.unparse(node.iter), ast.unparse(node.iter)
                elif fn.name != "_scatter_add":
                    assert ast.unparse(node.iter) == "params"


def _size_arithmetic(node: ast.expr, dims: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in dims
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int)
    return isinstance(node, ast.BinOp) and all(
        _size_arithmetic(side, dims) for side in (node.left, node.right)
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_subexpression_is_computed_twice(path: Path) -> None:
    """Forward values are reused by the backward pass: within a function, no
    operation (call, arithmetic, attribute such as .T) on the same operands repeats."""
    for fn in functions(path):
        if fn.name in ("step", "init_state", "unpack"):
            continue  # per-param lines (and unpack's slice offsets) repeat by design
        seen: dict[str, int] = {}
        dims = {  # the sizes read from the arguments: `N = np.shape(X)[0]`
            target.id
            for node in ast.walk(fn)
            if isinstance(node, ast.Assign) and "np.shape" in ast.unparse(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(fn):
            if isinstance(node, ast.Call | ast.BinOp | ast.UnaryOp | ast.Compare):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "np.shape":
                    continue  # reading an array's shape computes nothing
                if isinstance(node, ast.BinOp) and _size_arithmetic(node, dims):
                    continue  # `N * k`: integer arithmetic on sizes, no array work
                if isinstance(node, ast.UnaryOp) and isinstance(
                    node.operand, ast.Constant
                ):
                    continue  # a negative literal (an axis -1) is not a computation
                key = ast.dump(node)
                seen[key] = seen.get(key, 0) + 1
        repeated = [k for k, count in seen.items() if count > 1]
        assert not repeated, f"{fn.name} computes twice: {repeated[:2]}"


def _code(fn: ast.FunctionDef) -> list[ast.stmt]:
    """The function's statements, without its docstring (which states closed forms
    in math, `x**3` included)."""
    body = fn.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    ):
        body = body[1:]
    return body


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_small_powers_are_products(path: Path) -> None:
    """numpy's x**3 goes through pow(), 50-140x slower than x*x*x; only **2 is fast."""
    code = "\n".join(
        "\n".join(ast.unparse(s) for s in _code(fn))
        for fn in functions(path)
        if fn.name != "step"
    )
    assert not re.search(r"\*\*\s*\(?-?[3-9]\b", code)


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_no_n_by_n_arrays(example: Example) -> None:
    """With N = 4000 samples an N x N float64 array is 128 MB; the whole gradient
    and Jacobian computation must stay far below that."""
    module = load_generated(example.name, example.path)
    example.__dict__["dims"] = {**example.dims, "N": 4000}  # override the cached sizes
    point = random_point(example, np.random.default_rng(0))
    names = ["loss_and_gradients", *(f"jacobian_{o}" for o in example.outputs)]
    fns = [getattr(module, n) for n in names if hasattr(module, n)]
    assert fns
    for fn in fns:
        args = {a: point[a] for a in inspect.signature(fn).parameters}
        tracemalloc.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(**args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20, f"{fn.__name__} peaked at {peak / 2**20:.0f} MiB"


def stable_module(tmp_path: Path):
    spec = tmp_path / "stable.yaml"
    spec.write_text(
        "gradgen: 1\n"
        "inputs: {X: [N, n], y: [N]}\n"
        "params: {w: [n]}\n"
        "define:\n"
        "  z: X @ w\n"
        "  p: sigmoid(z)\n"
        "loss: -mean(y * log(sigmoid(z)) + (1 - y) * log(1 - sigmoid(z)))\n"
        "outputs: {probability: p, soft: log(1 + exp(z))}\n"
    )
    return generate_and_import(spec, tmp_path)


def test_cross_entropy_is_finite_where_the_true_value_is(tmp_path: Path) -> None:
    """log(sigmoid(z)) is emitted as -softplus(-z), in its stable form with one exp
    (`np.log1p(np.exp(-np.abs(z)))`, inline or in the `_softplus` helper; never
    np.logaddexp, a scalar loop in some numpy builds): at |z| = 800 the naive forms
    give log(0) = -inf, exp overflow and nan gradients."""
    module, text = stable_module(tmp_path)
    assert "np.log1p(" in text and "np.log(" not in text
    assert "np.logaddexp" not in text
    X = np.array([[800.0], [-800.0], [30.0], [-30.0]])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    w = np.array([1.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = module.loss_and_gradients(X, y, w)
        p = module.probability(X, w)
        soft = module.soft(X, w)
    z = X @ w
    # true values: softplus(z) for y=0, softplus(-z) for y=1, computed exactly
    expected = np.mean(np.where(y == 1, np.logaddexp(0, -z), np.logaddexp(0, z)))
    assert value == pytest.approx(expected, rel=1e-12)
    sig = np.where(
        z >= 0,
        1 / (1 + np.exp(-np.abs(z))),
        np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))),
    )
    assert np.allclose(grads.w, X.T @ (sig - y) / len(y), rtol=1e-12, atol=0)
    assert np.all(np.isfinite(p)) and p[0] == 1.0 and p[1] == 0.0
    assert soft[0] == pytest.approx(800.0) and soft[1] == pytest.approx(0.0, abs=1e-300)


def test_softmax_cross_entropy_is_finite_for_huge_logits() -> None:
    """log(sum(exp(Z))) is emitted through a max-shifted logsumexp: with logits of
    +-1000 the naive form overflows to inf (and nan gradients)."""
    module = load_generated("softmax_regression")
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    W = np.array([[1000.0, -1000.0, 0.0], [0.0, 500.0, -1000.0]])
    b = np.zeros(3)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = module.loss_and_gradients(X, Y, W, b)
        lse = module.log_normaliser(X, W, b)
    Z = X @ W + b
    m = Z.max(axis=1, keepdims=True)
    expected_lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
    assert np.allclose(lse, expected_lse, rtol=1e-15)
    assert value == pytest.approx(np.mean(expected_lse - np.sum(Y * Z, axis=1)))
    softmax = np.exp(Z - expected_lse[:, None])
    assert np.allclose(grads.W, X.T @ (softmax - Y) / 3, rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(grads.b))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_identity_of_a_matrix_param_is_built(path: Path) -> None:
    """Jacobians w.r.t. a matrix W [n, h] never build the [n, h, n, h] identity:
    the seed is eliminated inside the einsum products (gradgen/factor.py)."""
    for fn in functions(path):
        if fn.name.startswith("jacobian_"):
            code = ast.unparse(fn)
            assert not re.search(r"np\.eye\([^()]*\*", code)
            assert ".reshape(" not in code
