"""Numerical tests of the generated modules: finite differences, closed forms, imports.

Parametrized over every ``examples/*.yaml``. Finite differences are central, in float64,
with step FD_STEP = 1e-6, compared at rtol 1e-6 and atol 1e-8 (scaled by the size of the
value). Points are seeded random draws, redrawn until every relu/abs/max/min switching
argument is at least 1e-3 from its kink and has entries on both sides of it (see
``conftest.smooth_point``), so no difference stencil straddles a kink and a ReLU is
never all dead; the kink itself is tested on its own
(``test_relu_derivative_at_zero_is_zero``). Values and outputs are also compared with a
direct numpy evaluation of the spec's expressions (``conftest.evaluate``).
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    FD_RTOL,
    LOSS_EXAMPLES,
    OUTPUT_CASES,
    ROOT,
    SEEDS,
    Example,
    as_0d_arrays,
    call,
    central_difference,
    copy_point,
    evaluate,
    example,
    example_id,
    fd_atol,
    output_case_id,
    positional_names,
    public_function,
    smooth_point,
)
from hypothesis import given, settings
from hypothesis import strategies as st

loss_examples = pytest.mark.parametrize("ex", LOSS_EXAMPLES, ids=example_id)
all_examples = pytest.mark.parametrize("ex", EXAMPLES, ids=example_id)
output_cases = pytest.mark.parametrize("case", OUTPUT_CASES, ids=output_case_id)
seeds = pytest.mark.parametrize("seed", SEEDS)


def names_used(expression: Any) -> set[str]:
    if isinstance(expression, list):
        return set().union(*(names_used(e) for e in expression))
    tree = ast.parse(str(expression).strip(), mode="eval")
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def dependencies(ex: Example, expression: Any) -> list[str]:
    """The inputs and params ``expression`` depends on (through defines), in spec order."""
    seen: set[str] = set()
    pending = list(names_used(expression))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in ex.define:
            pending.extend(names_used(ex.define[name]))
    args = [name for name in ex.arg_names if name in seen]
    # A dim used as a number is read off an argument's shape at run time: if no
    # dependency has that dim, the first argument (in spec order) that has it is taken.
    spec_shapes = {**(ex.spec.get("inputs") or {}), **(ex.spec.get("params") or {})}
    for dim in sorted(seen & set(ex.dims)):
        if not any(dim in (spec_shapes[a] or []) for a in args):
            args.append(next(a for a in ex.arg_names if dim in (spec_shapes[a] or [])))
    return [name for name in ex.arg_names if name in args]


def assert_scalar(value: Any, what: str) -> None:
    ok = isinstance(value, float | np.floating) or (
        isinstance(value, np.ndarray) and value.shape == ()
    )
    assert ok, f"{what} should be a Python float or 0-d array, got {value!r}"


# ----------------------------------------------------------------- spec sanity


@all_examples
def test_example_spec_is_well_formed(ex: Example) -> None:
    spec = ex.spec
    assert spec.get("gradgen") == 1
    assert ex.name.isidentifier(), ex.name
    assert str(spec.get("doc") or "").strip(), "every example needs a useful doc:"
    assert ex.loss is not None or ex.outputs, "a spec needs a loss, outputs, or both"
    assert ex.params, "every example has at least one param"
    assert ex.rule in {"sgd", "momentum", "adam"}
    for section in ("inputs", "params"):
        for name, declared in (spec.get(section) or {}).items():
            assert name.isidentifier(), name
            shape = declared["shape"] if isinstance(declared, dict) else declared
            assert isinstance(shape, list), (name, shape)
            assert all(isinstance(d, str | int) for d in shape), (name, shape)
    # The reference evaluator can run it, and the loss is a scalar.
    result = evaluate(ex, smooth_point(ex, 0))
    if ex.loss is not None:
        assert np.shape(result.loss) == ()
        assert np.isfinite(result.loss)


def test_example_names_are_unique() -> None:
    names = [ex.name for ex in EXAMPLES]
    assert len(names) == len(set(names)), names


# ----------------------------------------------------------- module interface


@loss_examples
def test_loss_module_interface(ex: Example) -> None:
    mod = ex.module
    params = tuple(ex.params)
    assert tuple(mod.Params._fields) == params
    assert tuple(mod.Gradients._fields) == params
    for fn_name in ("loss", "gradients", "loss_and_gradients"):
        fn = public_function(mod, fn_name)
        message = f"{fn_name} must take the inputs, then the params, in spec order"
        assert positional_names(fn) == ex.arg_names, message
    for name in ("State", "init_state", "step"):
        assert hasattr(mod, name), f"{ex.name} has no {name}"


@output_cases
def test_output_function_interface(case: tuple[Example, str]) -> None:
    ex, out = case
    fn = public_function(ex.module, out)
    jac = public_function(ex.module, f"jacobian_{out}")
    expected = dependencies(ex, ex.outputs[out])
    message = f"{out} must take exactly the inputs and params it depends on, in order"
    assert positional_names(fn) == expected, message
    assert positional_names(jac) == expected


# -------------------------------------------------- loss: values and gradients


@loss_examples
@seeds
def test_loss_matches_spec(ex: Example, seed: int) -> None:
    values = smooth_point(ex, seed)
    loss = call(ex.module.loss, values)
    assert_scalar(loss, "loss")
    expected = evaluate(ex, values).loss
    np.testing.assert_allclose(loss, expected, rtol=1e-12, atol=1e-14)


@loss_examples
@seeds
def test_gradients_match_finite_differences(ex: Example, seed: int) -> None:
    mod = ex.module
    values = smooth_point(ex, seed)
    grads = call(mod.gradients, values)
    assert isinstance(grads, mod.Gradients)
    loss_value = call(mod.loss, values)
    for name, shape in ex.params.items():
        g = getattr(grads, name)
        assert np.shape(g) == shape, f"d loss / d {name} has shape {np.shape(g)}"
        fd = central_difference(lambda v: call(mod.loss, v), values, name)
        np.testing.assert_allclose(
            g,
            fd,
            rtol=FD_RTOL,
            atol=fd_atol(loss_value),
            err_msg=f"d loss / d {name} at seed {seed}",
        )


@loss_examples
@seeds
def test_loss_and_gradients_agree(ex: Example, seed: int) -> None:
    mod = ex.module
    values = smooth_point(ex, seed)
    untouched = copy_point(values)
    loss, grads = call(mod.loss_and_gradients, values)
    assert_scalar(loss, "loss_and_gradients()[0]")
    assert isinstance(grads, mod.Gradients)
    # Different code paths may round differently, hence not bit-for-bit.
    np.testing.assert_allclose(loss, call(mod.loss, values), rtol=1e-12, atol=1e-14)
    separate = call(mod.gradients, values)
    for name in ex.params:
        np.testing.assert_allclose(
            getattr(grads, name), getattr(separate, name), rtol=1e-12, atol=1e-13
        )
    for name, value in untouched.items():  # the arguments were not modified
        np.testing.assert_array_equal(values[name], value, err_msg=name)


@all_examples
def test_scalars_accept_0d_arrays(ex: Example) -> None:
    """Scalar inputs and params work both as Python floats and as 0-d arrays."""
    floats = smooth_point(ex, 0)
    arrays = as_0d_arrays(floats)
    if ex.loss is not None:
        np.testing.assert_allclose(
            call(ex.module.loss, arrays),
            call(ex.module.loss, floats),
            rtol=1e-14,
            atol=1e-15,
        )
        for a, f in zip(
            call(ex.module.gradients, arrays),
            call(ex.module.gradients, floats),
            strict=True,
        ):
            np.testing.assert_allclose(a, f, rtol=1e-14, atol=1e-15)
    for out in ex.outputs:
        fn = public_function(ex.module, out)
        np.testing.assert_allclose(
            call(fn, arrays), call(fn, floats), rtol=1e-14, atol=1e-15
        )
        jac = public_function(ex.module, f"jacobian_{out}")
        for a, f in zip(call(jac, arrays), call(jac, floats), strict=True):
            np.testing.assert_allclose(a, f, rtol=1e-14, atol=1e-15)


# ------------------------------------------------------- outputs and Jacobians


@output_cases
@seeds
def test_output_matches_spec(case: tuple[Example, str], seed: int) -> None:
    ex, out = case
    values = smooth_point(ex, seed)
    value = call(public_function(ex.module, out), values)
    expected = evaluate(ex, values).outputs[out]
    assert np.shape(value) == np.shape(expected)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)


@output_cases
@seeds
def test_jacobian_matches_finite_differences(
    case: tuple[Example, str], seed: int
) -> None:
    ex, out = case
    fn = public_function(ex.module, out)
    values = smooth_point(ex, seed)
    jacobian = call(public_function(ex.module, f"jacobian_{out}"), values)
    value = call(fn, values)
    takes = positional_names(fn)
    for name, shape in ex.params.items():
        expected_shape = np.shape(value) + shape
        if not hasattr(jacobian, name):
            message = f"jacobian_{out} lacks {name!r}, but {out} depends on it"
            assert name not in takes, message
            continue
        block = getattr(jacobian, name)
        message = f"d {out} / d {name}: shape {np.shape(block)}, not {expected_shape}"
        assert np.shape(block) == expected_shape, message
        if name not in takes:  # out does not depend on it: a zero block
            np.testing.assert_array_equal(block, np.zeros(expected_shape))
            continue
        fd = central_difference(lambda v: call(fn, v), values, name)
        np.testing.assert_allclose(
            block,
            fd,
            rtol=FD_RTOL,
            atol=fd_atol(value),
            err_msg=f"d {out} / d {name} at seed {seed}",
        )


# ------------------------------------------------------------------ closed forms


@pytest.mark.parametrize(
    ("x", "expected"), [(1.0, 3.85255569561), (0.8, 6.83289311133)]
)
def test_nested_chain_closed_form(x: float, expected: float) -> None:
    mod = example("nested_chain").module
    closed = 6 * x**2 * math.cos(x**3) / math.sin(x**3)
    assert closed == pytest.approx(expected, abs=1e-10)
    assert float(mod.gradients(x).x) == pytest.approx(closed, rel=1e-12)
    assert float(mod.loss(x)) == pytest.approx(math.log(math.sin(x**3) ** 2), rel=1e-12)
    assert float(mod.y(x)) == pytest.approx(math.log(math.sin(x**3) ** 2), rel=1e-12)
    assert float(mod.jacobian_y(x).x) == pytest.approx(closed, rel=1e-12)
    assert float(mod.gradients(np.array(x)).x) == pytest.approx(closed, rel=1e-12)


# The hypothesis tests load the module before hypothesis runs, so a missing module is
# one plain failure (and hypothesis writes no example database or patch files).
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, database=None)


def test_nested_chain_derivative_property() -> None:
    """On (0.2, 1.4), x**3 < pi, so sin(x**3) has no zero and the loss is smooth."""
    mod = example("nested_chain").module

    @PROPERTY_SETTINGS
    @given(x=st.floats(0.2, 1.4))
    def check(x: float) -> None:
        closed = 6 * x**2 * math.cos(x**3) / math.sin(x**3)
        assert float(mod.gradients(x).x) == pytest.approx(closed, rel=1e-10)

    check()


def test_sin_of_square_closed_form() -> None:
    mod = example("nested_chain").module
    assert float(mod.jacobian_s(1.5).x) == pytest.approx(-1.88452086817, abs=1e-10)
    assert float(mod.jacobian_s(1.5).x) == pytest.approx(3 * math.cos(2.25), rel=1e-12)


@pytest.mark.parametrize(("x", "expected"), [(1.0, 3.0), (2.0, 5.0)])
def test_total_derivative_sums_both_paths(x: float, expected: float) -> None:
    mod = example("total_derivative").module
    grad = float(mod.gradients(x).x)
    assert grad != pytest.approx(2 * x), "the naive chain rule (2x) lost a path"
    assert grad == pytest.approx(expected, rel=1e-14)
    assert float(mod.jacobian_sum_path(x).x) == pytest.approx(expected, rel=1e-14)


def test_total_derivative_property() -> None:
    mod = example("total_derivative").module

    @PROPERTY_SETTINGS
    @given(x=st.floats(-10.0, 10.0))
    def check(x: float) -> None:
        grad = float(mod.gradients(x).x)
        assert grad == pytest.approx(1 + 2 * x, rel=1e-12, abs=1e-12)

    check()


def test_total_derivative_outputs_closed_form() -> None:
    mod = example("total_derivative").module
    assert float(mod.jacobian_product(2.0).x) == pytest.approx(12.0, rel=1e-14)
    assert float(mod.jacobian_composed(0.5).x) == pytest.approx(
        1.46337773775, abs=1e-10
    )
    assert float(mod.jacobian_scaled(2.0).x) == pytest.approx(45.0, rel=1e-14)
    assert float(mod.product(2.0)) == pytest.approx(8.0, rel=1e-14)


def test_vector_chain_closed_form() -> None:
    mod = example("vector_chain").module
    np.testing.assert_allclose(mod.y(2.0), [math.log(4.0), math.sin(6.0)], rtol=1e-14)
    jacobian = mod.jacobian_y(2.0).x
    assert np.shape(jacobian) == (2,)
    np.testing.assert_allclose(jacobian, [1.0, 2.880510859951098], rtol=1e-13)


def test_two_by_two_jacobian_closed_form() -> None:
    mod = example("two_by_two_jacobian").module
    np.testing.assert_allclose(mod.f(2.0, 1.0), [12.0, 5.0], rtol=1e-14)
    jacobian = mod.jacobian_f(2.0, 1.0)
    matrix = np.column_stack([jacobian.x, jacobian.y])
    np.testing.assert_allclose(matrix, [[12.0, 12.0], [2.0, 8.0]], rtol=1e-14)


RELU_X = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, -1.0], [0.5, 0.0, 1.0], [2.0, 1.0, 0.0]])
RELU_Y = np.array([4.0, 1.0, 2.0, 0.5])
RELU_W = np.array([0.5, -1.0, 2.0])
RELU_B = 0.1


def test_relu_neuron_test_vector() -> None:
    mod = example("relu_neuron").module
    assert mod.loss(RELU_X, RELU_Y, RELU_W, RELU_B) == pytest.approx(
        0.410625, rel=1e-13
    )
    grads = mod.gradients(RELU_X, RELU_Y, RELU_W, RELU_B)
    # The per-sample mask matters: the unmasked formula gives [-2.2125, -4.0, 3.275].
    np.testing.assert_allclose(grads.w, [-0.0125, 0.4, 1.075], rtol=1e-12, atol=1e-15)
    assert float(grads.b) == pytest.approx(0.275, rel=1e-12)
    np.testing.assert_allclose(
        mod.prediction(RELU_X, RELU_W, RELU_B), [4.6, 0.0, 2.35, 0.1], rtol=1e-13
    )


def test_relu_neuron_sgd_step() -> None:
    mod = example("relu_neuron").module
    params = mod.Params(w=RELU_W.copy(), b=RELU_B)
    state = mod.init_state(params)
    new_params, _, loss_before = mod.step(params, state, RELU_X, RELU_Y, lr=0.1)
    assert float(loss_before) == pytest.approx(0.410625, rel=1e-13)
    np.testing.assert_allclose(new_params.w, [0.50125, -1.04, 1.8925], rtol=1e-13)
    assert float(new_params.b) == pytest.approx(0.0725, rel=1e-12)
    new_loss = mod.loss(RELU_X, RELU_Y, new_params.w, new_params.b)
    assert new_loss == pytest.approx(0.32301142578125, rel=1e-12)


def test_relu_derivative_at_zero_is_zero() -> None:
    """A sample with z = 0 exactly is masked out: relu'(0) = 0.

    Dyadic numbers make z = X @ w + b = [0, 1, -0.5] exact, so only the second sample
    is active: dC/dw = (2/3) e_2 x_2 = [-2/3, 0, 0], dC/db = -2/3. With relu'(0) = 1
    the gradient would be w: [0, 0, 0], b: -4/3 instead.
    """
    mod = example("relu_neuron").module
    X = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = np.array([1.0, 2.0, 3.0])
    w = np.array([0.5, -1.0, 2.0])
    b = 0.5
    assert (X @ w + b).tolist() == [0.0, 1.0, -0.5]
    assert mod.loss(X, y, w, b) == pytest.approx(11.0 / 3.0, rel=1e-14)
    grads = mod.gradients(X, y, w, b)
    np.testing.assert_allclose(grads.w, [-2.0 / 3.0, 0.0, 0.0], rtol=1e-14, atol=1e-15)
    assert float(grads.b) == pytest.approx(-2.0 / 3.0, rel=1e-14)
    jacobian = mod.jacobian_prediction(X, w, b)
    np.testing.assert_array_equal(jacobian.w[0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(jacobian.b, [0.0, 1.0, 0.0])


# ------------------------------------------------------------------ standalone

_IMPORT_CHECK = """
import importlib.util, sys
path = sys.argv[1]
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("generated_under_test", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
allowed = set(sys.stdlib_module_names) | {"numpy"}
new = set(sys.modules) - before - {spec.name}
bad = sorted(m for m in new if m.split(".")[0] not in allowed)
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


@all_examples
def test_generated_module_is_standalone(ex: Example, tmp_path: Any) -> None:
    """Importing the module (isolated, outside the repo) loads only numpy and stdlib."""
    path = ex.module.__file__
    result = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT_CHECK, path],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"importing {path} loaded non-stdlib, non-numpy modules:\n"
        f"{result.stdout}{result.stderr}"
    )


@all_examples
def test_generated_module_imports_only_numpy_and_stdlib(ex: Example) -> None:
    """No import statement anywhere in the file (not even inside a function) pulls in
    anything but numpy and the standard library."""
    path = ex.module.__file__
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] not in allowed]
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if node.level or top not in allowed:
                bad.append("." * node.level + (node.module or ""))
    assert not bad, f"{path} imports {bad}"


def test_examples_exist() -> None:
    assert (ROOT / "examples").is_dir() and EXAMPLES, "no examples/*.yaml found"
    assert LOSS_EXAMPLES and OUTPUT_CASES
