"""Fuzzing the whole CLI with random, mutated and generated specs (hypothesis).

Every input goes through `gradgen generate` in-process (typer's CliRunner), into a
fresh folder. Whatever the input:

* the exit code is 0 or 2 (3 would be an internal error: a gradgen bug), and no
  traceback is printed;
* nothing is written outside the output folder, and the output folder holds the
  one module only on success;
* on success the module imports without writing anything, and its gradients (and
  its outputs' Jacobians) agree with central finite differences at a random point
  (a point where the loss is not finite is skipped).

The tensor grammar (`tests/tensor_grammar.py`, section (d)) is checked harder:
its specs are valid by construction, so each must generate, and its module run on
random data with finite values (no exception skipped); the same specs with one
deliberate error must exit 2 with a located error at that error's line.

The runs are bounded and reproducible for CI: `derandomize=True` makes hypothesis
draw the same examples on every run, `database=None` keeps it from replaying
earlier failures, and the example counts below add up to `FUZZ_EXAMPLES`.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import import_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensor_grammar import BROKEN_KINDS, SIZES, Broken, Grammar, broken, constructs
from typer.testing import CliRunner

from gradgen.cli import app
from gradgen.load import load_yaml_text
from gradgen.model import build
from gradgen.spec import read_spec, validate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TEXTS = [
    p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.yaml"))
]

# GRADGEN_FUZZ_SCALE=20 runs twenty times as many (and random ones, not the same
# every run): for hunting bugs by hand, not for CI.
SCALE = int(os.environ.get("GRADGEN_FUZZ_SCALE", "1"))
EXAMPLES = {
    k: v * SCALE
    for k, v in {
        "bytes": 40,
        "text": 40,
        "mutated": 130,
        "grammar": 90,
        "tensors_quick": 1,
        "tensors": 150,
        "broken": 150,
    }.items()
}
FUZZ_EXAMPLES = sum(EXAMPLES.values())

DIM_SIZES = {"h": 2, **SIZES}  # N 4, n 3, k 2, and the tensor grammar's B, T, d
MAX_FD_COORDINATES = 64
_modules = itertools.count()


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# ------------------------------------------------------------------ running one


@contextmanager
def workspace() -> Iterator[Path]:
    # The same folder every time: hypothesis tells failures apart by where they
    # were raised, and that includes the generated module's path.
    base = Path(tempfile.gettempdir()) / f"gradgen-fuzz-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    previous = Path.cwd()
    try:
        os.chdir(base)  # no pyproject.toml here: the spec alone decides
        yield base
    finally:
        os.chdir(previous)
        shutil.rmtree(base, ignore_errors=True)


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def run(spec_bytes: bytes) -> None:
    """Generate from `spec_bytes` and check everything the module docstring says."""
    with workspace() as base:
        spec = base / "spec.yaml"
        spec.write_bytes(spec_bytes)
        result = CliRunner().invoke(
            app, ["generate", "spec.yaml", "--out", "out"], catch_exceptions=True
        )
        output = result.stdout + result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            repr(result.exception),
            spec_bytes,
        )
        assert result.exit_code in (0, 2), (result.exit_code, output, spec_bytes)
        assert "Traceback" not in output and "internal error" not in output, output
        made = files(base) - {"spec.yaml"}
        if result.exit_code == 2:
            assert made == set(), (made, output)
            for line in result.stderr.splitlines():
                assert re.match(
                    r"^(spec\.yaml|gradgen|out/.*):\d+:\d+: error: ", line
                ), line
            return
        modules = [m for m in made if m.startswith("out/") and m.endswith(".py")]
        assert made == {"out", *modules} and len(modules) == 1, made
        module_path = base / modules[0]
        module = import_module(module_path)
        assert files(base) - {"spec.yaml"} - {"out/__pycache__"} <= made | {
            m for m in files(base) if m.startswith("out/__pycache__")
        }
        check_derivatives(module, spec, seed=len(spec_bytes))


def import_module(path: Path) -> Any:
    return import_file(path, f"gradgen_fuzz_{next(_modules)}")


# ------------------------------------------------------------------ derivatives


def check_derivatives(
    module: Any, spec_path: Path, seed: int, *, strict: bool = False
) -> None:
    """Every gradient and Jacobian against central differences at a random point.

    `strict`, for a spec valid by construction whose values are finite on data of
    magnitude about 1: every function runs, and returns finite values; else a point
    where a function raises (a complex power) or is not finite is skipped."""
    spec = read_spec(spec_path)
    text = spec_path.read_bytes()
    integers = build(validate(load_yaml_text(text, "s"), "s", spec_path.stem)).integers
    sizes = dict(DIM_SIZES)
    spare = iter(range(2, 100))
    values: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for decl in (*spec.inputs, *spec.params):
        shape = []
        for d in decl.shape:
            if isinstance(d, str):
                sizes.setdefault(d, next(spare) % 4 + 2)
            shape.append(sizes[d] if isinstance(d, str) else d)
        if math.prod(shape) > 10_000:
            return  # a dim written as a huge integer: nothing sensible to check
        if decl.name in integers:  # ids: below every dim's size (at least 2)
            values[decl.name] = rng.integers(0, 2, size=shape)
            continue
        signs = rng.choice([-1.0, 1.0], size=shape)
        value = signs * rng.uniform(0.3, 1.3, size=shape)
        values[decl.name] = float(value) if not shape else value
    checks: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = []
    if spec.loss is not None:
        checks.append(("L", module.loss, module.gradients))
    for o in spec.outputs:
        jacobian = getattr(module, f"jacobian_{o.name}")
        checks.append((o.name, getattr(module, o.name), jacobian))
    for name, function, derivative in checks:
        try:
            value = np.asarray(call(function, values), dtype=float)
        except OUTSIDE_THE_DOMAIN:
            if strict:
                raise
            continue  # e.g. x ** 2.5 at a negative Python float: a complex number
        if not np.all(np.isfinite(value)):
            assert not strict, (f"{name} is not finite", value)
            continue
        derivatives = call(derivative, values)
        for p in derivatives._fields:
            analytic = np.asarray(getattr(derivatives, p), dtype=float)
            assert not strict or np.all(np.isfinite(analytic)), (
                f"d{name}/d{p}",
                analytic,
            )
            shape = (
                np.shape(values[p])
                if name == "L"
                else value.shape + np.shape(values[p])
            )
            assert analytic.shape == shape, (name, p, analytic.shape, shape)
            compare(
                lambda v, f=function: np.asarray(call(f, v), dtype=float),
                values,
                p,
                analytic,
                f"d{name}/d{p}",
                strict,
            )


OUTSIDE_THE_DOMAIN = (TypeError, ZeroDivisionError, OverflowError, ValueError)


def call(function: Callable[..., Any], values: dict[str, Any]) -> Any:
    names = list(inspect.signature(function).parameters)
    return function(*(values[n] for n in names))


def compare(
    f: Callable[[dict[str, Any]], Any],
    values: dict[str, Any],
    param: str,
    analytic: np.ndarray,
    what: str,
    strict: bool = False,
) -> None:
    """Central differences of f with respect to `param`, at two step sizes; the
    analytic derivative must match one of them (a kink between the stencil points
    spoils one step size, not both). If the two estimates disagree with each other
    as well, f is not smooth here (a jump of a `where` whose condition compares
    values equal up to rounding): no verdict."""
    with np.errstate(all="ignore"):
        try:
            return _compare(f, values, param, analytic, what)
        except OUTSIDE_THE_DOMAIN:
            if strict:
                raise
            return  # a stencil point outside the domain: no finite difference


def _compare(
    f: Callable[[dict[str, Any]], Any],
    values: dict[str, Any],
    param: str,
    analytic: np.ndarray,
    what: str,
) -> None:
    base = np.asarray(f(values), dtype=float)
    if not np.all(np.isfinite(base)) or np.max(np.abs(base), initial=0) > 1e8:
        return
    x0 = np.asarray(values[param], dtype=float)
    if x0.size > MAX_FD_COORDINATES:
        return
    failures = []
    estimates = []
    for step in (1e-6, 1e-4):
        numeric = np.zeros(base.shape + x0.shape)
        for index in np.ndindex(x0.shape):
            h = step * max(1.0, abs(x0[index]))
            shifted = []
            for sign in (1, -1):
                x = x0.copy()
                x[index] += sign * h
                moved = dict(values)
                moved[param] = float(x) if x.shape == () else x
                shifted.append(np.asarray(f(moved), dtype=float))
            numeric[(..., *index)] = (shifted[0] - shifted[1]) / (2 * h)
        if not np.all(np.isfinite(numeric)):
            return
        expected = np.broadcast_to(analytic, numeric.shape)
        scale = 1.0 + np.max(np.abs(numeric), initial=0)
        if np.allclose(expected, numeric, rtol=1e-4, atol=1e-5 * scale):
            return
        failures.append(np.max(np.abs(expected - numeric)))
        estimates.append((numeric, scale))
    (first, scale), (second, _) = estimates
    if not np.allclose(first, second, rtol=1e-4, atol=1e-5 * scale):
        return
    raise AssertionError(
        f"{what}: analytic and finite differences differ by {failures}"
    )


# ------------------------------------------------------------------ (a) garbage


@fuzz_settings(EXAMPLES["bytes"])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    run(data)


@fuzz_settings(EXAMPLES["text"])
@given(
    st.text(
        alphabet=st.sampled_from(
            list("gradenpmslo: \n-[]{}#&*!|>'\"\\,.0123456789_xwN\t")
        ),
        max_size=300,
    )
)
def test_random_yamlish_text(text: str) -> None:
    run(text.encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------ (b) mutations


TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d+)?(?:e-?\d+)?|\*\*|[^\sA-Za-z_0-9]"
)
IDENTIFIERS = [
    *"xwNnTXyb",
    "W1",
    "relu",
    "rleu",
    "exp",
    "log",
    "sqrt",
    "sum",
    "mean",
    "max",
    "dot",
    "axis",
    "lambda",
    "__import__",
    "np",
    "loss",
    "Params",
    "dL_dw",
    "params",
    "inputs",
    "define",
    "outputs",
    "optimizer",
    "adam",
    "rule",
    "lr",
    "beta",
]
NUMBERS = ["0", "1", "2", "-1", "2.5", "0.5", "1e308", "99999999999", "1e-8"]
SYMBOLS = [*"+-*/@()[]{},.:#&!|'\"", "**", ""]
REPLACEMENTS = [*IDENTIFIERS, *NUMBERS, *SYMBOLS]


def replacement_for(token: str) -> st.SearchStrategy[str]:
    """Mostly a token of the same kind (the YAML then stays valid more often)."""
    if token[0].isalpha() or token[0] == "_":
        same = IDENTIFIERS
    elif token[0].isdigit():
        same = NUMBERS
    else:
        same = SYMBOLS
    return st.sampled_from(same) | st.sampled_from(REPLACEMENTS)


# Token edits most often: they keep the YAML valid and reach the expressions.
MUTATIONS = (
    ["value"] * 6
    + ["token"] * 2
    + ["insert"] * 2
    + [
        "delete",
        "duplicate",
        "swap",
        "indent",
        "truncate",
    ]
)


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(MUTATIONS))
        i = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 0
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "indent":
            lines[i] = draw(st.sampled_from(["  ", " ", "\t", ""])) + (
                lines[i][2:] if draw(st.booleans()) else lines[i]
            )
        elif kind == "truncate":
            lines = "\n".join(lines)[: draw(st.integers(0, len(text)))].split("\n")
        elif kind == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = (
                lines[i][:at] + draw(st.sampled_from(REPLACEMENTS)) + lines[i][at:]
            )
        else:
            # "value": a token of a value (an expression, most often), not of a key
            # or a comment; "token": any token of the line.
            line = lines[i]
            start = line.find(": ") + 2 if kind == "value" else 0
            end = line.find(" #") if " #" in line else len(line)
            tokens = list(TOKEN.finditer(line, max(start, 0), end))
            if kind == "value" and start < 2:
                tokens = []
            if tokens:
                m = draw(st.sampled_from(tokens))
                new = draw(replacement_for(m.group()))
                lines[i] = lines[i][: m.start()] + new + lines[i][m.end() :]
        text = "\n".join(lines)
    return text


@pytest.mark.slow
@fuzz_settings(EXAMPLES["mutated"])
@given(mutated_example())
def test_mutated_examples(text: str) -> None:
    run(text.encode("utf-8"))


# ------------------------------------------------------------------ (c) grammar

INPUTS = {"X": "[N, n]", "y": "[N]", "x": "[n]", "t": "[]"}
PARAMS = {"w": "[n]", "s": "[]", "M": "[N, n]"}
LEAVES = {
    "s": ["s", "t", "0.5", "2", "N", "sum(x)", "mean(w)"],
    "n": ["x", "w", "w", "M.T @ y"],
    "N": ["y", "X @ w", "M @ x"],
    "Nn": ["X", "M", "M"],
}
SMOOTH = ["exp", "sin", "cos", "tanh", "sigmoid", "square", "softplus"]
KINKED = ["relu", "abs"]


@st.composite
def expression(
    draw: st.DrawFn, shape: str, depth: int, leaves: dict[str, list[str]] = LEAVES
) -> str:
    """An expression of shape `shape` (s: scalar, n, N or Nn), mostly well typed;
    now and then an operand of the wrong shape, to reach the error paths too."""
    if draw(st.integers(0, 40)) == 0:
        shape = draw(st.sampled_from(list(LEAVES)))
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(leaves[shape]))
    sub = lambda s=shape: expression(s, depth - 1, leaves)  # noqa: E731
    kind = draw(st.integers(0, 9))
    if kind <= 1:
        fn = draw(st.sampled_from(SMOOTH + KINKED))
        return f"{fn}({draw(sub())})"
    if kind <= 4:
        op = draw(st.sampled_from(["+", "-", "*"]))
        right = draw(sub("s" if draw(st.booleans()) else shape))
        return f"({draw(sub())} {op} {right})"
    if kind == 5:
        return f"{draw(sub())} / (1 + square({draw(sub())}))"
    if kind == 6:
        k = draw(st.sampled_from(["2", "3", "-1", "0.5", "5", "17", "N"]))
        if k in ("-1", "0.5"):
            return f"(1 + square({draw(sub())})) ** {k}"
        return f"({draw(sub())}) ** {k}"
    if kind == 7:
        fn = draw(st.sampled_from(["max", "min"]))
        return f"{fn}({draw(sub())}, {draw(sub('s'))})"
    if kind == 8:
        if shape == "s":
            red = draw(st.sampled_from(["sum", "mean"]))
            return f"{red}({draw(sub(draw(st.sampled_from(['n', 'N', 'Nn']))))})"
        if shape == "n":
            return f"sum({draw(sub('Nn'))}, axis=0)"
        if shape == "N":
            return f"mean({draw(sub('Nn'))}, axis=1)"
        return f"{draw(sub('N'))}" if draw(st.booleans()) else f"({draw(sub())}).T.T"
    if shape == "s":
        return f"dot({draw(sub('n'))}, {draw(sub('n'))})"
    if shape == "N":
        return f"({draw(sub('Nn'))}) @ {draw(sub('n'))}"
    if shape == "n":
        return f"({draw(sub('Nn'))}).T @ {draw(sub('N'))}"
    return draw(sub())


@st.composite
def generated_spec(draw: st.DrawFn) -> str:
    lines = ["gradgen: 1", "inputs:"]
    lines += [f"  {k}: {v}" for k, v in INPUTS.items()]
    lines.append("params:")
    lines += [f"  {k}: {v}" for k, v in PARAMS.items()]
    leaves = {shape: list(names) for shape, names in LEAVES.items()}
    count = draw(st.integers(0, 3))
    if count:
        lines.append("define:")
    for i in range(count):
        shape = draw(st.sampled_from(list(leaves)))
        lines.append(f"  d{i}: {draw(expression(shape, 3, leaves))}")
        leaves[shape].append(f"d{i}")  # later entries may use it
    reduce = draw(st.sampled_from(["sum", "mean"]))
    body = draw(expression(draw(st.sampled_from(list(leaves))), 4, leaves))
    lines.append(f"loss: {reduce}({body}) + sum(square(w)) + square(s) + sum(M)")
    if draw(st.booleans()):
        shape = draw(st.sampled_from(["s", "n", "N"]))
        lines += ["outputs:", f"  o: {draw(expression(shape, 3, leaves))}"]
    optimizer = ["sgd", "{rule: momentum, beta: 0.5}", "{rule: adam, lr: 0.1}"]
    lines.append("optimizer: " + draw(st.sampled_from(optimizer)))
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@fuzz_settings(EXAMPLES["grammar"])
@given(generated_spec())
def test_generated_specs(text: str) -> None:
    run(text.encode("utf-8"))


@pytest.mark.slow  # thirty specs derived; it vouches for the slow test above
def test_the_grammar_produces_valid_specs_often() -> None:
    """The grammar is mostly well typed: most of its specs generate a module (so
    the derivative checks above really run)."""
    accepted = 0
    total = 30
    with workspace() as base:
        for i, text in enumerate(_examples(generated_spec(), total)):
            path = base / f"s{i}.yaml"
            path.write_text(text)
            result = CliRunner().invoke(app, ["generate", str(path), "--out", "out"])
            accepted += result.exit_code == 0
    assert accepted >= total // 2, accepted


def _examples(strategy: st.SearchStrategy[str], count: int) -> list[str]:
    found: list[str] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None)
    @given(strategy)
    def collect(text: str) -> None:
        if len(found) < count:
            found.append(text)

    collect()
    return found


# ------------------------------------------------------------------ (d) tensors
# The grammar of real models (tests/tensor_grammar.py): tensors of rank 0-6,
# indexing, integer ids, where, keepdims, the softmax family. Its specs are valid by
# construction: each must generate (exit 0), import, run on random data with finite
# values, and have the derivatives central differences give. The same specs with
# one deliberate error must fail (exit 2) at that error's line, with its message.
# Hypothesis draws a seed, and the grammar makes its choices with numpy from it:
# hypothesis's own draws, skewed to the first option of every choice, would give
# the tensor constructs a fraction of the specs they get this way.


def seeded(seed: int) -> Grammar:
    rng = np.random.default_rng(seed)
    return Grammar(lambda lo, hi: int(rng.integers(lo, hi + 1)))


SEEDS = st.integers(0, 2**32 - 1)
tensor_spec = SEEDS.map(lambda seed: seeded(seed).model().text())


def with_an_error(seed: int, kind: str | None = None) -> Broken:
    grammar = seeded(seed)
    return broken(grammar, grammar.model(), kind)


broken_tensor_spec = SEEDS.map(with_an_error)


def run_valid(text: str) -> None:
    """Generate `text`, which must succeed, and check its module strictly."""
    with workspace() as base:
        spec = base / "spec.yaml"
        spec.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(
            app, ["generate", "spec.yaml", "--out", "out"], catch_exceptions=True
        )
        output = result.stdout + result.stderr
        assert result.exit_code == 0, (output, text)
        assert files(base) == {"spec.yaml", "out", "out/spec.py"}, files(base)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SyntaxWarning)  # `0.5[None]` and the like
            module = import_module(base / "out" / "spec.py")
        check_derivatives(module, spec, seed=len(text), strict=True)


def run_broken(case: Broken) -> None:
    """Generate a spec with one error: exit 2, located messages only, one of them
    at the error's line and saying what is wrong; nothing written."""
    with workspace() as base:
        (base / "spec.yaml").write_text(case.text, encoding="utf-8")
        result = CliRunner().invoke(
            app, ["generate", "spec.yaml", "--out", "out"], catch_exceptions=True
        )
        output = result.stdout + result.stderr
        assert result.exit_code == 2, (result.exit_code, output, case)
        assert "Traceback" not in output, output
        assert files(base) == {"spec.yaml"}, files(base)
        lines = result.stderr.splitlines()
        assert all(re.match(r"^spec\.yaml:\d+:\d+: error: ", line) for line in lines)
        at = [line for line in lines if line.startswith(f"spec.yaml:{case.line}:")]
        assert any(case.message in line for line in at), (case, result.stderr)


@fuzz_settings(EXAMPLES["tensors_quick"])
@given(tensor_spec)
def test_tensor_specs_quick(text: str) -> None:
    run_valid(text)


@pytest.mark.slow
@fuzz_settings(EXAMPLES["tensors"])
@given(tensor_spec)
def test_tensor_specs(text: str) -> None:
    run_valid(text)


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_each_kind_of_error(kind: str) -> None:
    """Every kind of deliberate error, once, in a spec of its own."""
    run_broken(with_an_error(BROKEN_KINDS.index(kind), kind))


@pytest.mark.slow
@fuzz_settings(EXAMPLES["broken"])
@given(broken_tensor_spec)
def test_broken_tensor_specs(case: Broken) -> None:
    run_broken(case)


def test_the_tensor_grammar_covers_the_constructs() -> None:
    """The fuzzer's specs really contain the new grammar, each construct in a fair
    share of them."""
    found = constructs(seeded(seed).model().text() for seed in range(100))
    assert all(count >= 3 for count in found.values()), found


# ------------------------------------------------------------------ bugs it found
# Three derivation bugs the fuzzer found, fixed; each keeps a regression test.


def generate_and_import(text: str) -> Any:
    with workspace() as base:
        (base / "spec.yaml").write_text(text)
        result = CliRunner().invoke(app, ["generate", "spec.yaml", "--out", "out"])
        assert result.exit_code == 0, result.stderr
        return import_module(base / "out" / "spec.py")


def test_a_negated_mask_in_a_jacobian_is_a_float_array() -> None:
    module = generate_and_import(
        "gradgen: 1\ninputs: {X: [N, n]}\nparams: {w: [n], b: []}\n"
        "outputs: {o: relu(X @ w - b)}\n"
    )
    X, w = np.ones((4, 3)), np.ones(3)
    assert np.allclose(module.jacobian_o(X, w, 0.5).b, -np.ones(4))


def test_the_adjoint_of_a_broadcast_operand_sums_every_repetition() -> None:
    module = generate_and_import(
        "gradgen: 1\ninputs: {x: [n]}\nparams: {s: [], w: [n]}\n"
        "loss: sum(x + s) + sum(x + w)\n"
    )
    grads = module.gradients(np.ones(3), 0.5, np.ones(3))
    assert grads.s == 3.0  # d/ds sum(x + s) = len(x), not 1
    assert np.array_equal(grads.w, np.ones(3))


def test_a_variable_power_has_a_finite_derivative_at_a_zero_base() -> None:
    module = generate_and_import(
        "gradgen: 1\nparams: {w: [n]}\nloss: sum(relu(w) ** n)\n"
    )
    with np.errstate(all="raise"):
        grads = module.gradients(np.array([-1.0, 1.0, 2.0]))
    assert np.allclose(grads.w, [0.0, 3.0, 12.0])


# Found by the tensor grammar, fixed; each keeps a regression test (the specs it
# found refused by mistake, or accepted by mistake, are in tests/bad_specs/:
# rank_7_intermediate, dim_index_out_of_range, whole_float_index).


def test_not_of_a_scalar_condition_with_python_floats() -> None:
    """`~(s > 0)` of a Python float (scalars accept them) was `~False`, -1: a
    truthy mask, the wrong branch, and a gradient of -1 or -2."""
    module = generate_and_import(
        "gradgen: 1\nparams: {s: []}\nloss: where(~(s > 0), s, 3 * s)\n"
    )
    for s, loss, grad in ((0.5, 1.5, 3.0), (-0.5, -0.5, 1.0)):
        for value in (s, np.array(s)):
            assert module.loss(value) == loss
            assert module.gradients(value).s == grad


def test_a_condition_of_literals() -> None:
    """`where(-0.5 <= 0.5 < 0.5, a, b)` is b: its `~` was a Python bool's."""
    module = generate_and_import(
        "gradgen: 1\nparams: {w: [n]}\n"
        "loss: where(-0.5 <= 0.5 < 0.5, sum(w), sum(square(w)))\n"
    )
    w = np.array([0.4, 0.2, 0.3])
    assert np.allclose(module.gradients(w).w, 2 * w)


@pytest.mark.parametrize(
    "expression", ["s[None] * x", "(2 * s)[None] * x", "t[None] * s", "s[...] * x"]
)
def test_indexing_a_scalar(expression: str) -> None:
    """`s[None]` of a Python float, a literal or a scalar expression was printed
    as `1[None]` or `s[None]` (a SyntaxWarning, then a TypeError), and `s[...]`
    as `s[]` (an internal error)."""
    module = generate_and_import(
        "gradgen: 1\ninputs: {x: [3], t: []}\nparams: {s: []}\n"
        f"loss: sum({expression})\noutputs:\n  o: {expression}\n"
    )
    x, t, s = np.array([1.0, 2.0, 3.0]), 0.5, 0.7
    values = {"x": x, "t": t, "s": s}
    numpy_values = {k: np.float64(v) if k != "x" else v for k, v in values.items()}
    expected = eval(expression, {}, numpy_values)  # our own text
    assert np.allclose(call(module.o, values), expected)
    assert np.allclose(call(module.loss, values), np.sum(expected))
    grads = call(module.gradients, values)
    assert np.isclose(grads.s, np.sum(expected) / s)


def test_a_function_of_a_literal_keeps_float32() -> None:
    """`sigmoid(2)` was printed `1 / (1 + np.exp(-2))`, an np.float64 that made a
    float32 module's gradient float64; a function of a literal is folded."""
    module = generate_and_import(
        "gradgen: 1\ndtype: float32\nparams: {w: [n]}\n"
        "loss: sum(w) * sqrt(1 + sigmoid(2)) + sum(square(w)) * exp(-1)\n"
    )
    w = np.array([0.5, -0.25], dtype=np.float32)
    grads = module.gradients(w)
    assert grads.w.dtype == np.float32
    expected = np.sqrt(1 + 1 / (1 + np.exp(-2))) + 2 * w * np.exp(-1)
    assert np.allclose(grads.w, expected, rtol=1e-6)
