"""Differential testing of the grammar of real models (issue 9): random specs against
autograd and finite differences, with `test_differential.py`'s checks and reference.

The specs come from `tensor_grammar.py` (valid by construction): tensors of rank
0-6 with repeated dims, integer and dim-valued indices, slices, `None` and `...`,
rows by integer ids (`E[ids]` with repeated ids, ids declared `dtype: int` or
inferred from their use) and one entry per row (`Z[arange(N), lab]`), `where` with
comparisons and `& | ~`, reductions along int, negative and tuple axes with and
without `keepdims=True`, softmax, log_softmax, cross_entropy on labels or on
probabilities, one_hot, batched `@`. Each spec has a loss and/or outputs; every
gradient and Jacobian is compared with autograd's and with central differences,
every returned array must be fresh and float. 1 spec in the fast subset (a
fraction of a second), 60 more with the slow tests (about 10 s), and 200 others in
the long run (about 40 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tensor_grammar import SIZES, Grammar, Model, constructs
from test_differential import Profile, RandomSpec, Var, assert_all_pass

pytest.importorskip("autograd")

SCALE = int(os.environ.get("GRADGEN_DIFF_SCALE", "1"))
QUICK, MORE, LONG = 1 * SCALE, 62 * SCALE, 200 * SCALE
MODELS = Profile("models", SIZES, ())


class ModelSpec(RandomSpec):
    """A `tensor_grammar.Model` as the differential harness reads it; its dims are
    Python ints, as the generated code has them (`X[T - 1]`, `arange(N)`)."""

    @property
    def dims(self) -> dict[str, float]:
        named = {t for v in self.variables for t in v.shape if t in SIZES}
        return {d: SIZES[d] for d in sorted(named)}


def model_of(seed: int) -> Model:
    rng = np.random.default_rng(9_000_000 + seed)
    return Grammar(lambda lo, hi: int(rng.integers(lo, hi + 1))).model(f"model{seed}")


def model_spec(seed: int) -> RandomSpec:
    model = model_of(seed)
    variables = [
        Var(v.name, v.shape, v.param, v.integer, v.declared) for v in model.variables
    ]
    return ModelSpec(
        model.name, MODELS, variables, model.define, model.loss, model.outputs
    )


def test_random_model_specs_quick(tmp_path: Path) -> None:
    assert_all_pass(range(QUICK), tmp_path, make=model_spec)


@pytest.mark.slow
def test_random_model_specs(tmp_path: Path) -> None:
    assert_all_pass(range(QUICK, QUICK + MORE), tmp_path, make=model_spec)


@pytest.mark.slow
def test_random_model_specs_long(tmp_path: Path) -> None:
    assert_all_pass(range(10_000, 10_000 + LONG), tmp_path, make=model_spec)


def test_the_text_is_the_grammars() -> None:
    """The harness writes the spec the grammar drew, integer declarations too."""
    for seed in range(20):
        assert model_spec(seed).text() == model_of(seed).text()


def test_the_specs_have_the_constructs() -> None:
    """The CI-sized sample holds every construct of the grammar, several times."""
    found = constructs(model_of(seed).text() for seed in range(QUICK + MORE))
    assert all(count >= 3 for count in found.values()), found
