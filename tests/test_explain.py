"""`gradgen explain`: the derivation in math, checked against independent truth.

* the closed forms (sympy expressions, and the one-line forms in the generated
  docstrings) are evaluated on random data and compared with the generated code;
* the article's closed forms appear for its examples;
* the Markdown explanations in generated/ are a golden record, sealed and checked
  like modules;
* `explain` reports a bad spec exactly as `generate` does;
* every convention at a non-differentiable point is what the generated code does.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sympy as sp
from conftest import (
    EXAMPLES,
    Example,
    call,
    evaluate,
    example,
    example_id,
    import_file,
    random_point,
    smooth_point,
)
from typer.testing import CliRunner

from gradgen import closedform, pipeline, rules, write
from gradgen.cli import app
from gradgen.closedform import broadcast_except
from gradgen.explanation import Explanation, Result

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
BAD = sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))


def explained(ex: Example) -> Explanation:
    """The explanation of an example, as the pipeline builds it."""
    from gradgen.derive import derive
    from gradgen.explanation import explain
    from gradgen.load import load_yaml_text, read_spec_bytes
    from gradgen.lower import lower
    from gradgen.model import build
    from gradgen.printer import print_program
    from gradgen.spec import validate

    shown = str(ex.path)
    data = read_spec_bytes(ex.path, shown)
    model = build(validate(load_yaml_text(data, shown), shown, ex.path.stem, None))
    derivatives = derive(model)
    program = lower(model, derivatives)
    return explain(model, derivatives, program, print_program(program))


def point_values(ex: Example, seed: int, smooth: bool = True) -> dict[str, Any]:
    """Inputs, params, `define` entries and dims at a random point away from kinks
    (`smooth`; else any random point, for specs without relu, abs, max or min)."""
    if smooth:
        point = smooth_point(ex, seed)
    else:
        point = random_point(ex, np.random.default_rng(seed))
    defined = evaluate(ex, {**point, **_LAYOUT}).define
    return {**point, **defined, **ex.dims}


# the functions of the rank work, for the reference evaluator (as in
# tests/test_differential.py)
_LAYOUT: dict[str, Any] = {
    "transpose": lambda x, perm=None: np.transpose(x, perm),
    "reshape": lambda x, shape: np.reshape(x, tuple(int(d) for d in shape)),
    "concat": lambda items, axis=0: np.concatenate(items, axis=axis),
    "stack": lambda items, axis=0: np.stack(items, axis=axis),
    "ones": lambda shape: np.ones(tuple(int(d) for d in shape)),
    "diag": lambda x: np.diagonal(x, axis1=-2, axis2=-1),
    "trace": lambda x: np.sum(np.diagonal(x, axis1=-2, axis2=-1), axis=-1),
}


def _softmax(x: Any, axis: int = -1) -> Any:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _extreme(pairwise: Any, reduce: Any) -> Any:
    """max(a, b) element-wise; max(x, axis=...) a reduction (as a spec writes them)."""

    def extreme(*args: Any, **kwargs: Any) -> Any:
        return pairwise(*args) if len(args) == 2 else reduce(*args, **kwargs)

    return extreme


def _scatter_add(g: Any, ids: Any, size: int) -> Any:
    out = np.zeros((size, *np.shape(g)[np.ndim(ids) :]))
    np.add.at(out, ids, g)
    return out


def _put(g: Any, shape: tuple[int, ...], *index: Any) -> Any:
    out = np.zeros(shape)
    out[index] = g
    return out


def _take_along(x: Any, labels: Any, axis: int) -> Any:
    index = np.expand_dims(labels, axis)
    index = index.reshape(index.shape + (1,) * (np.ndim(x) - index.ndim))
    return np.squeeze(np.take_along_axis(x, index, axis), axis)


def _put_along(g: Any, labels: Any, size: int, axis: int) -> Any:
    index = np.expand_dims(labels, axis)
    out = np.zeros((*index.shape[:axis], size, *index.shape[axis + 1 :]))
    out = np.zeros(out.shape + np.shape(g)[np.ndim(labels) :])
    index = index.reshape(index.shape + (1,) * (out.ndim - index.ndim))
    np.put_along_axis(out, index, np.expand_dims(g, axis), axis)
    return out


# numpy for the names the one-line closed forms use
_TEXT_NAMESPACE: dict[str, Any] = {
    "__builtins__": {},
    "sum": lambda x, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims),
    "var": np.var,
    "std": np.std,
    "norm": lambda x, axis=None, keepdims=False: np.sqrt(
        np.sum(np.square(x), axis=axis, keepdims=keepdims)
    ),
    "where": lambda c, a, b: np.where(c, a, b),
    "clip": np.clip,
    "softmax": _softmax,
    "log_softmax": lambda x, axis=-1: np.log(_softmax(x, axis)),
    "onehot": lambda y, k: np.eye(k)[y],
    "scatter_add": _scatter_add,
    "put": _put,
    "take_along": _take_along,
    "put_along": _put_along,
    "arange": np.arange,
    "slice": slice,
    "transpose": np.transpose,
    "reshape": np.reshape,
    "concatenate": lambda items, axis: np.concatenate(
        broadcast_except(items, axis), axis=axis
    ),
    "tensordot": np.tensordot,
    "diag": lambda x, a=-2, b=-1: np.diagonal(x, axis1=a, axis2=b),
    "outer": np.outer,
    "ones": np.ones,
    "stack": lambda items, axis=0: np.stack(np.broadcast_arrays(*items), axis=axis),
    "einsum": np.einsum,
    "eye": np.eye,
    "swapaxes": np.swapaxes,
    "exp": np.exp,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "arctan": np.arctan,
    "sinh": np.sinh,
    "erf": np.vectorize(math.erf, otypes=[float]),
    "cot": lambda x: 1 / np.tan(x),
    "tanh": np.tanh,
    "cosh": np.cosh,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sign": np.sign,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "softplus": lambda x: np.logaddexp(0, x),
    "max": _extreme(np.maximum, np.max),
    "min": _extreme(np.minimum, np.min),
    "logsumexp": lambda x, axis=None, keepdims=False: np.log(
        np.sum(np.exp(x), axis=axis, keepdims=keepdims)
    ),
}


def expected_derivatives(
    ex: Example, values: dict[str, Any], module: Any = None
) -> dict[str, Any]:
    """What the generated module computes: dL/dw, and d out/d w, by name."""
    module = ex.module if module is None else module
    found: dict[str, Any] = {}
    if ex.loss is not None:
        for p, g in call(module.gradients, values)._asdict().items():
            found[f"dL/d{p}"] = g
    for out in ex.outputs:
        jac = call(getattr(module, f"jacobian_{out}"), values)
        for p, j in jac._asdict().items():
            found[f"d{out}/d{p}"] = j
    return found


def _close(got: Any, want: Any) -> None:
    want = np.asarray(want, dtype=float)
    got = np.broadcast_to(np.asarray(got, dtype=float), want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
def test_closed_forms_agree_with_the_generated_code(ex: Example) -> None:
    e = explained(ex)
    results: list[Result] = [*e.gradients, *e.jacobians]
    assert results
    for seed in (0, 1):
        values = point_values(ex, seed)
        want = expected_derivatives(ex, values)
        assert set(want) == {r.name for r in results}
        for r in results:
            got = closedform.evaluate(r.closed.expr, values)
            _close(got, want[r.name])


@pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
def test_docstring_closed_forms_agree_with_the_generated_code(ex: Example) -> None:
    """Each `dL/dw = ...` line of a generated docstring, run as numpy."""
    _docstrings_agree(ex, ex.module)


def _docstrings_agree(ex: Example, module: Any, smooth: bool = True) -> None:
    lines: dict[str, str] = {}
    for fn in ("loss_and_gradients", *(f"jacobian_{o}" for o in ex.outputs)):
        doc = getattr(module, fn, None).__doc__ if hasattr(module, fn) else None
        for line in (doc or "").splitlines():
            match = re.fullmatch(r"\s*(d\w+/d\w+) = (.+)", line)
            if match:
                lines[match[1]] = match[2]
    values = point_values(ex, 0, smooth)
    want = expected_derivatives(ex, values, module)
    assert set(lines) == set(want)
    for name, text in lines.items():
        got = eval(text, dict(_TEXT_NAMESPACE), dict(values))  # our own examples
        _close(got, want[name])


# Every op of the language in a closed form: specs beyond the examples.
OP_SPECS: dict[str, str] = {
    "reductions": """
inputs: {X: [N, n]}
params: {W: [n, k], b: [k]}
define:
  Z: X @ W + b
  s: std(Z, axis=1, keepdims=True)
loss: "sum(square(Z / s)) + norm(W) + sum(max(Z, axis=0)) + min(Z) + max(W)
  + mean(var(Z, axis=0)) + logsumexp(Z, axis=(0, 1))
  + mean(square(Z), axis=(0, 1)) + sum(norm(Z, axis=1)) + std(b)
  + sum(sum(Z * Z, axis=(0, 1), keepdims=True))"
outputs:
  p: softmax(Z, axis=0)
  lp: log_softmax(Z)
""",
    "conditions": """
inputs: {y: [n]}
params: {x: [n], lo: [], hi: []}
loss: "sum(clip(x, lo, hi) * y)
  + sum(where((x > 0) & (y < 0.5) | ~(x >= -0.2), x * y, square(x)))
  + sum(where(x != y, x, 0)) + sum(where(x == y, 0, x * x)) + sum(where(x < y, y, x))"
outputs:
  c: clip(x, lo, hi)
""",
    "indexing": """
inputs:
  X: [N, n]
  y: {shape: [N], dtype: int}
  ids: {shape: [B], dtype: int}
params: {W: [n, k], E: [V, d], A: [T, d]}
define:
  Z: X @ W
  h: E[ids]
loss: "-mean(Z[arange(N), y]) + sum(square(h[:, None, :] * A[0]))
  + sum(square(A[1:])) + sum(A[:, :2]) + cross_entropy(Z, y)
  + sum(one_hot(y, k) * Z) + sum(A[T - 1])"
outputs:
  first: X[0] @ W
  rows: E[ids]
  pick: Z[arange(N), y]
""",
    "layout": """
inputs: {X: [B, T, n]}
params: {W: [n, h], S: [h, h], v: [h]}
define:
  H: X @ W
  P: transpose(H, (1, 0, 2))
  R: reshape(P, [T, B * h])
loss: "sum(square(R)) + sum(square(concat([H, ones([B, T, h])], axis=2)))
  + sum(stack([v, 2 * v], axis=1) ** 2) + trace(S) + sum(diag(S) * v)
  + sum(H @ transpose(H, (0, 2, 1))) + sum(H.T)"
outputs:
  d: diag(S) + v
  flat: R
  st: stack([v, v * v], axis=0)
  both: concat([v, diag(S)], axis=0)
""",
}


# Found by hunting closed forms of the tensor grammar's random specs: functions
# sympy names otherwise (atan) or could not evaluate (erf); new axes restored
# around several reduced axes (printed v[:, :, None] for v[None, :, None]); an
# array that simplifies to 0 (a - a), indexed or multiplied (printed 0[:, -2]);
# a negated mask (printed -(s > 1/2) / ..., which numpy refuses).
FOUND_SPECS = {
    "functions": """
params: {x: [n]}
loss: sum(arctan(x) + sinh(x) + cosh(x) + gelu(x) + erf(x))
""",
    "restored_axes": """
inputs: {v: [T]}
params: {w: [d, T, 1]}
loss: sum(logsumexp(w, axis=(0, -1)) * v)
""",
    "zero_arrays": """
inputs: {x: [N]}
params: {w: [T], s: []}
outputs:
  o: (w * ones([N, T]) - w * ones([N, T]))[:, -2] + s * x
  p: ones([N, T]) @ (w - w) + s * x
""",
    "negated_mask": """
params: {w: [n]}
loss: sum(where(mean(w) > -2, 1 / (1 + square(w)), w))
""",
}


def _modules(out: Path, specs: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, body in specs.items():
        spec = out / f"ops_{name}.yaml"
        spec.write_text(f"gradgen: 1\nname: ops_{name}\n{body}", encoding="utf-8")
        g = pipeline.generate(spec, out)
        g.target.write_text(g.text, encoding="utf-8")
        found[name] = (Example(spec), import_file(g.target, f"gradgen_ops_{name}"))
    return found


@pytest.fixture(scope="module")
def op_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _modules(tmp_path_factory.mktemp("ops"), OP_SPECS)


@pytest.fixture(scope="module")
def found_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _modules(tmp_path_factory.mktemp("found"), FOUND_SPECS)


@pytest.mark.parametrize("name", sorted(OP_SPECS))
def test_every_op_has_an_evaluable_closed_form(
    name: str, op_modules: dict[str, Any]
) -> None:
    """Each op prints in the three notations, never as a generic `op(...)`, and
    its closed form and docstring line agree with the generated code."""
    _closed_forms_agree(*op_modules[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FOUND_SPECS))
def test_closed_forms_the_hunt_found_wrong(
    name: str, found_modules: dict[str, Any]
) -> None:
    _closed_forms_agree(*found_modules[name])


def _closed_forms_agree(ex: Example, module: Any) -> None:
    e = explained(ex)
    results = [*e.gradients, *e.jacobians]
    for r in results:
        for atom in sp.preorder_traversal(r.closed.expr):
            assert not isinstance(atom, closedform.Generic), (r.name, atom)
        assert r.closed.tex and r.closed.mathml and r.closed.text
    for seed in (0, 1):
        values = point_values(ex, seed, smooth=False)
        want = expected_derivatives(ex, values, module)
        assert set(want) == {r.name for r in results}
        for r in results:
            _close(closedform.evaluate(r.closed.expr, values), want[r.name])
    _docstrings_agree(ex, module, smooth=False)


def _result(e: Explanation, name: str) -> Result:
    return next(r for r in [*e.gradients, *e.jacobians] if r.name == name)


def test_the_nested_chain_is_6x2_cot_x3() -> None:
    e = explained(example("nested_chain"))
    x = sp.Symbol("x", real=True)
    for name in ("dL/dx", "dy/dx"):
        r = _result(e, name)
        assert sp.simplify(r.closed.expr - 6 * x**2 * sp.cot(x**3)) == 0
        assert r.closed.tex == "6 x^{2} \\cot{\\left(x^{3} \\right)}"
    assert sp.simplify(_result(e, "ds/dx").closed.expr - 2 * x * sp.cos(x**2)) == 0


def test_the_total_derivative_of_x_plus_x2_is_1_plus_2x() -> None:
    e = explained(example("total_derivative"))
    x = sp.Symbol("x", real=True)
    assert _result(e, "dL/dx").closed.expr == 1 + 2 * x  # not the naive 2x
    (adjoint,) = [a for a in e.adjoints if a.variable == "x"]
    assert len(adjoint.users) == 2  # the two paths, summed
    assert "Total-derivative rule" in render(example("total_derivative"))


def test_the_vector_chain_rule_at_x_2() -> None:
    e = explained(example("vector_chain"))
    r = _result(e, "dy/dx")
    assert r.closed.text == "[2/x, 3*cos(3*x)]"
    value = closedform.evaluate(r.closed.expr, {"x": 2.0})
    np.testing.assert_allclose(value, [1.0, 3 * np.cos(6.0)], rtol=1e-15)


def test_the_neurons_gradients_are_the_articles() -> None:
    """∂C/∂w = (2/N) Σ eᵢ xᵢ over the active units, ∂C/∂b the mean error over them."""
    e = explained(example("relu_neuron"))
    assert _result(e, "dL/dw").closed.text == "2/N * X.T @ ((a - y) * (z > 0))"
    assert _result(e, "dL/db").closed.text == "2/N * sum((a - y) * (z > 0))"
    assert _result(e, "dL/dw").closed.tex == (
        "\\frac{2}{N} X^{\\top} \\left(\\left(a - y\\right) \\odot"
        " \\left(z > 0\\right)\\right)"
    )


def test_the_new_ops_read_as_the_article_writes_them() -> None:
    """Softmax cross-entropy on labels is (softmax(Z) - onehot(y)) / N; Huber's
    where is a where; an embedding lookup is E[ids], its gradient a scatter-add.
    (The agreement tests above keep these rewrites numerically honest.)"""
    e = explained(example("softmax_labels"))
    assert _result(e, "dL/dW").closed.text == "1/N * X.T @ (softmax(Z) - onehot(y, k))"
    assert _result(e, "dL/dW").closed.tex == (
        "\\frac{1}{N} X^{\\top} \\left(\\operatorname{softmax}\\left(Z\\right)"
        " - \\operatorname{onehot}\\left(y, k\\right)\\right)"
    )
    e = explained(example("huber_regression"))
    assert (
        _result(e, "dL/dw").closed.text == "1/N * X.T @ where(abs(r) <= 1, r, sign(r))"
    )
    text = _result(explained(example("skipgram")), "dL/dE").closed.text
    assert text.startswith("1/B * scatter_add(") and "F[negatives]" in text


def render(ex: Example, fmt: str = "markdown") -> str:
    g = pipeline.generate(ex.path, GENERATED, explain=fmt)
    assert g.explanation is not None
    return g.explanation


# --- the golden record --------------------------------------------------------------


@pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
def test_golden_explanations(ex: Example) -> None:
    g = pipeline.generate(
        ex.path, GENERATED, display=f"examples/{ex.path.name}", explain="markdown"
    )
    committed = g.explanation_target.read_text(encoding="utf-8")
    assert g.explanation == committed, f"{g.explanation_target.name} is stale"
    header = write.read_header(committed)
    assert header is not None and write.body_intact(committed)
    assert header.spec == f"../examples/{ex.path.name}"


def test_every_example_has_its_explanation() -> None:
    assert {p.stem for p in GENERATED.glob("*.md")} == {
        p.stem for p in GENERATED.glob("*.py")
    }


@pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
def test_markdown_has_every_part(ex: Example) -> None:
    text = (GENERATED / f"{ex.name}.md").read_text(encoding="utf-8")  # golden above
    e = explained(ex)
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "```mermaid"):
        assert heading in text
    for v in e.variables:  # every variable in math, and in the diagram
        assert f"${v.symbol.tex}" in text or f"${v.definition.tex}" in text  # type: ignore[union-attr]
        assert f'"{v.name} ' in text
    for r in [*e.gradients, *e.jacobians]:
        assert r.equation.tex in text
    assert text.count("$$") % 2 == 0


# --- the command line -----------------------------------------------------------------


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("spec", BAD, ids=lambda p: p.stem)
def test_explain_reports_bad_specs_like_generate(
    spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    shown = spec.relative_to(ROOT).as_posix()
    code, stdout, stderr = run(["explain", shown])
    assert (code, stdout) == (2, ""), stderr
    assert stderr == spec.with_suffix(".expected").read_text(encoding="utf-8")


def test_explain_prints_markdown_and_writes_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, stdout, stderr = run(["explain", "examples/relu_neuron.yaml"])
    assert (code, stderr) == (0, "")
    assert stdout == (GENERATED / "relu_neuron.md").read_text(encoding="utf-8")
    page = tmp_path / "relu.html"
    code, stdout, stderr = run(
        ["explain", "examples/relu_neuron.yaml", "--format", "html", "-o", str(page)]
    )
    assert (code, stdout, stderr) == (0, "", "")
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "$" not in html and "\\frac" not in html


def test_check_treats_explanations_like_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "relu_neuron.yaml"
    spec.write_bytes((ROOT / "examples" / "relu_neuron.yaml").read_bytes())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["specs"]\nout = "gen"\nexplain = true\n'
    )
    monkeypatch.chdir(tmp_path)
    assert run(["generate"])[1].splitlines() == [
        "wrote gen/relu_neuron.py",
        "wrote gen/relu_neuron.md",
    ]
    assert run(["check"])[:2] == (0, "")
    md = tmp_path / "gen" / "relu_neuron.md"
    md.write_text(md.read_text().replace("sgd", "SGD"))
    code, stdout, _ = run(["check"])
    assert (code, stdout.splitlines()[0]) == (
        1,
        "would change gen/relu_neuron.md (edited by hand)",
    )
    md.unlink()
    code, stdout, _ = run(["check"])
    assert code == 1 and "missing gen/relu_neuron.md" in stdout
    assert run(["check", "--no-explain"])[:2] == (0, "")
    assert run(["generate"])[1] == "wrote gen/relu_neuron.md\n"


# --- conventions at non-differentiable points -------------------------------------------


def _module(tmp_path: Path, name: str, body: str) -> Any:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"gradgen: 1\nname: {name}\n{body}", encoding="utf-8")
    g = pipeline.generate(spec, tmp_path)
    g.target.write_text(g.text, encoding="utf-8")
    return import_file(g.target, f"gradgen_conventions_{name}"), g.text


def test_conventions_are_what_the_code_does(tmp_path: Path) -> None:
    relu, text = _module(tmp_path, "k_relu", "params: {x: []}\nloss: relu(x)\n")
    assert relu.gradients(0.0).x == 0.0 and "relu'(0) = 0" in text
    absolute, text = _module(tmp_path, "k_abs", "params: {x: []}\nloss: abs(x)\n")
    assert absolute.gradients(0.0).x == 0.0 and "abs'(0) = sign(0) = 0" in text
    const, _ = _module(tmp_path, "k_max0", "params: {z: []}\nloss: max(0, z)\n")
    assert const.gradients(0.0).z == 0.0  # the tie goes to the constant
    both, text = _module(tmp_path, "k_max", "params: {a: [], b: []}\nloss: max(a, b)\n")
    assert tuple(both.gradients(1.0, 1.0)) == (1.0, 0.0)  # to the first
    assert "at a tie" in text
    low, _ = _module(tmp_path, "k_min", "params: {a: [], b: []}\nloss: min(a, b)\n")
    assert tuple(low.gradients(1.0, 1.0)) == (1.0, 0.0)
    norm, text = _module(
        tmp_path, "k_norm", "params: {x: [n]}\nloss: sqrt(sum(x**2))\n"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(norm.gradients(np.zeros(3)).x).all()
    assert "sqrt'(0)" in text
    body = "params: {x: [n]}\nloss: norm(x) + std(x)\n"
    both, text = _module(tmp_path, "k_normstd", body)
    assert np.array_equal(both.gradients(np.zeros(3)).x, np.zeros(3))
    assert "norm'(x) = x / norm(x), taken as 0 at x = 0" in text
    assert "std'(x) = (x - mean(x)) / (count * std(x)), taken as 0" in text
    spec = tmp_path / "k_normstd.yaml"
    e = explained(Example(spec))
    (g,) = e.gradients
    assert g.closed.text == (  # undefined at 0 as written: the rows above say so
        "x / norm(x) + 1/n * (x - 1/n * sum(x, axis=0, keepdims=True)) / std(x)"
    )
    at_zero = closedform.evaluate(g.closed.expr, {"x": np.zeros(3), "n": 3})
    assert np.array_equal(np.broadcast_to(at_zero, (3,)), np.zeros(3))
    power, text = _module(tmp_path, "k_pow", "params: {a: [], b: []}\nloss: a**b\n")
    zero = np.float64(0.0)  # numpy, not a Python float, which raises instead
    with np.errstate(divide="ignore", invalid="ignore"):
        assert power.gradients(zero, 2.0).b == 0.0  # xlogy
        assert power.gradients(zero, 0.5).a == np.inf
    assert "xlogy" in text
    _, text = _module(tmp_path, "k_smooth", "params: {x: []}\nloss: exp(x)\n")
    assert "Where a derivative does not exist" not in text


def test_the_readme_states_the_conventions_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for op, rule in rules.CONVENTIONS.values():
        assert f"| `{op}` | {rule} |" in readme
