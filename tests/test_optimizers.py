"""The generated ``step()`` against hand-written reference optimizers.

The references follow the contract exactly, with the module's own ``gradients()`` as g:

- sgd:      p = p - lr*g
- momentum: v = beta*v + g;  p = p - lr*v                       (v starts at 0)
- adam:     t += 1 (from 1); m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g**2;
            mhat = m/(1-beta1**t); vhat = v/(1-beta2**t); p = p - lr*mhat/(sqrt(vhat)+eps)

Each of the 5 steps is checked from the module's current params (the reference keeps
its own optimizer state), so rounding differences cannot be amplified along a
trajectory; agreement is to ~1e-12 relative.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    LOSS_EXAMPLES,
    OPTIMIZER_DEFAULTS,
    Example,
    call,
    copy_point,
    example_id,
    generate_and_import,
    smooth_point,
)

from gradgen.optimizers import OPTIMIZERS

loss_examples = pytest.mark.parametrize("ex", LOSS_EXAMPLES, ids=example_id)

STEPS = 5
RTOL = 1e-12
ATOL = 1e-14

OVERRIDES: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.003},
    "momentum": {"lr": 0.003, "beta": 0.5},
    "adam": {"lr": 0.003, "beta1": 0.7, "beta2": 0.95, "eps": 1e-6},
}


class Reference:
    """A hand-written optimizer over a dict of params (name -> array or float)."""

    def __init__(
        self, rule: str, hyper: Mapping[str, float], params: Mapping[str, Any]
    ):
        self.rule = rule
        self.hyper = dict(hyper)
        zeros = {k: np.zeros(np.shape(v)) for k, v in params.items()}
        self.v = dict(zeros)  # momentum velocity, or adam second moment
        self.m = dict(zeros)  # adam first moment
        self.t = 0

    def update(self, params: Mapping[str, Any], grads: Mapping[str, Any]) -> dict:
        h = self.hyper
        lr = h["lr"]
        if self.rule == "sgd":
            return {k: params[k] - lr * np.asarray(grads[k]) for k in params}
        if self.rule == "momentum":
            self.v = {k: h["beta"] * self.v[k] + grads[k] for k in params}
            return {k: params[k] - lr * self.v[k] for k in params}
        assert self.rule == "adam", self.rule
        b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
        self.t += 1
        self.m = {k: b1 * self.m[k] + (1 - b1) * np.asarray(grads[k]) for k in params}
        self.v = {
            k: b2 * self.v[k] + (1 - b2) * np.asarray(grads[k]) ** 2 for k in params
        }
        new = {}
        for k in params:
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            new[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        return new


def split(ex: Example, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    inputs = [values[name] for name in ex.inputs]
    params = {name: values[name] for name in ex.params}
    return inputs, params


def run_and_compare(
    ex: Example, seed: int, hyper: Mapping[str, float], overrides: Mapping[str, float]
) -> None:
    mod = ex.module
    values = smooth_point(ex, seed)
    inputs, param_values = split(ex, values)
    params = mod.Params(**param_values)
    state = mod.init_state(params)
    reference = Reference(ex.rule, hyper, param_values)
    for t in range(1, STEPS + 1):
        current = {name: getattr(params, name) for name in ex.params}
        snapshot = copy_point(current)
        point = {**dict(zip(ex.inputs, inputs, strict=True)), **current}
        loss_before = call(mod.loss, point)
        grads = call(mod.gradients, point)
        expected = reference.update(
            current, {name: getattr(grads, name) for name in ex.params}
        )

        result = mod.step(params, state, *inputs, **overrides)
        assert isinstance(result, tuple) and len(result) == 3, result
        new_params, state, loss = result
        assert np.shape(loss) == (), f"step {t}: the loss should be a scalar"
        assert isinstance(new_params, mod.Params), type(new_params)
        np.testing.assert_allclose(
            loss, loss_before, rtol=1e-13, err_msg=f"step {t}: loss before the step"
        )
        for name, shape in ex.params.items():
            got = getattr(new_params, name)
            assert np.shape(got) == shape, (name, np.shape(got))
            np.testing.assert_allclose(
                got,
                expected[name],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{ex.rule} step {t}, param {name}",
            )
            np.testing.assert_array_equal(  # step returns new params, in place is a bug
                current[name], snapshot[name], err_msg=f"step {t} modified {name}"
            )
        params = new_params


# ------------------------------------------------------------------------ tests


def test_every_rule_is_exercised() -> None:
    rules = {ex.rule for ex in LOSS_EXAMPLES}
    assert rules >= {"sgd", "momentum", "adam"}, rules


def test_default_optimizer_is_exercised() -> None:
    """At least one example omits `optimizer:` and relies on the default (sgd, 0.01)."""
    defaults = [ex for ex in LOSS_EXAMPLES if "optimizer" not in ex.spec]
    assert defaults
    assert all(ex.hyperparameters == {"lr": 0.01} for ex in defaults)


def test_spec_optimizers_are_valid() -> None:
    for ex in EXAMPLES:
        optimizer = ex.spec.get("optimizer") or {}
        allowed = {"rule", *OPTIMIZER_DEFAULTS[ex.rule]}
        assert set(optimizer) <= allowed, (ex.path.name, optimizer)
        for name, value in optimizer.items():
            if name != "rule":  # YAML parses 1e-8 as a string; write 1.0e-8
                assert isinstance(value, int | float), (ex.path.name, name, value)


@loss_examples
def test_step_signature(ex: Example) -> None:
    """step(params, state, *inputs, *, <hyperparameters with the spec's defaults>)."""
    parameters = list(inspect.signature(ex.module.step).parameters.values())
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert [p.name for p in positional[2:]] == list(ex.inputs)
    assert len(positional) == 2 + len(ex.inputs)
    keyword_only = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    for name, value in ex.hyperparameters.items():
        assert name in keyword_only, f"step() lacks keyword-only hyperparameter {name}"
        assert keyword_only[name] == pytest.approx(value, rel=1e-15), name


@loss_examples
def test_init_state(ex: Example) -> None:
    mod = ex.module
    values = smooth_point(ex, 0)
    _, param_values = split(ex, values)
    params = mod.Params(**param_values)
    state = mod.init_state(params)
    if isinstance(mod.State, type):
        assert isinstance(state, mod.State), type(state)
    # A fresh state twice gives the same step: init_state is deterministic.
    inputs, _ = split(ex, values)
    first = mod.step(params, mod.init_state(params), *inputs)
    second = mod.step(params, state, *inputs)
    for a, b in zip(first[0], second[0], strict=True):
        np.testing.assert_array_equal(a, b)


@loss_examples
@pytest.mark.parametrize("seed", [0, 1])
def test_step_matches_reference(ex: Example, seed: int) -> None:
    run_and_compare(ex, seed, ex.hyperparameters, {})


@loss_examples
def test_step_hyperparameters_can_be_overridden(ex: Example) -> None:
    overrides = OVERRIDES[ex.rule]
    hyper = {**ex.hyperparameters, **overrides}
    run_and_compare(ex, 3, hyper, overrides)


@loss_examples
def test_step_is_functional(ex: Example) -> None:
    """Reusing an old state gives the same result: step does not mutate its state."""
    mod = ex.module
    values = smooth_point(ex, 4)
    inputs, param_values = split(ex, values)
    params = mod.Params(**param_values)
    params1, state1, _ = mod.step(params, mod.init_state(params), *inputs)
    first = mod.step(params1, state1, *inputs)
    again = mod.step(params1, state1, *inputs)
    for a, b in zip(first[0], again[0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[2], again[2])


# ----------------------------------------------- the optimizer table is the truth

LAYERNORM_ADAM = """\
gradgen: 1
name: names_{rule}
inputs: {{X: [N, d], sum: [N], filter: []}}
params: {{gain: [d], beta: [d], lr: [], grads: [], state: []}}
define:
  h: X * gain + beta
loss: mean((h @ gain - sum) ** 2) * filter + lr ** 2 + grads ** 2 + state ** 2
optimizer: {rule}
"""


@pytest.mark.parametrize("rule", sorted(OPTIMIZERS))
def test_step_binds_exactly_the_names_of_the_table(rule: str, tmp_path: Path) -> None:
    """The names a spec may not give an input are the names `step` binds; the
    template and `optimizers.OPTIMIZERS` must agree on them, and on the
    hyperparameters and their defaults. Params may take any of these names: a
    LayerNorm `beta` with adam, a param called `lr`, `grads` or `state` (params are
    reached as `params.<name>` inside `step`)."""
    spec = tmp_path / f"names_{rule}.yaml"
    spec.write_text(LAYERNORM_ADAM.format(rule=rule), encoding="utf-8")
    module, _ = generate_and_import(spec, tmp_path)
    step = next(
        node
        for node in ast.parse(inspect.getsource(module)).body
        if isinstance(node, ast.FunctionDef) and node.name == "step"
    )
    table = OPTIMIZERS[rule]
    arguments = [a.arg for a in step.args.args]
    keyword_only = [a.arg for a in step.args.kwonlyargs]
    bound = {
        target.id
        for node in ast.walk(step)
        if isinstance(node, ast.Assign)
        for target in ast.walk(node.targets[0])
        if isinstance(target, ast.Name)
    }
    assert arguments == ["params", "state", "X", "sum", "filter"]
    assert keyword_only == list(table.defaults())
    defaults = [ast.literal_eval(d) for d in step.args.kw_defaults if d is not None]
    assert defaults == list(table.defaults().values())
    assert bound == set(table.locals)
    assert table.step_names() == {*arguments[:2], *keyword_only, *bound}
    # and it trains: one step moves every param against its gradient
    rng = np.random.default_rng(0)
    X, target = rng.normal(size=(5, 3)), rng.normal(size=5)
    params = module.Params(rng.normal(size=3), rng.normal(size=3), 0.5, 0.5, 0.5)
    new, _, value = module.step(params, module.init_state(params), X, target, 1.0)
    assert np.isfinite(value) and not np.allclose(new.beta, params.beta)
