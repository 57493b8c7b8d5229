"""The optimizer rules: the one definition of each rule's hyperparameters (names,
defaults, bounds, order in `step`'s signature) and of the names its `step` binds.

`templates/optimizer_<rule>.py.jinja` lays each rule out; `tests/test_optimizers.py`
checks that the generated `step` takes and binds exactly the names listed here, so
that the spec's name checks (`naming.clash`) refuse exactly what would clash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    default: float
    bound: Literal["positive", "fraction"]  # > 0, or in [0, 1)


@dataclass(frozen=True)
class OptimizerRule:
    name: str
    hyperparameters: tuple[Hyperparameter, ...]  # keyword-only arguments of `step`
    locals: tuple[str, ...]  # the other names `step` binds

    def defaults(self) -> dict[str, float]:
        return {h.name: h.default for h in self.hyperparameters}

    def step_names(self) -> frozenset[str]:
        """Every name `step` binds: a spec input (an argument of `step`) must not
        take one of them."""
        return frozenset(STEP_ARGUMENTS + tuple(self.defaults()) + self.locals)


#: `step(params, state, *inputs, *, hyperparameters...)`
STEP_ARGUMENTS = ("params", "state")

OPTIMIZERS: dict[str, OptimizerRule] = {
    # p <- p - lr g
    "sgd": OptimizerRule(
        "sgd",
        (Hyperparameter("lr", 0.01, "positive"),),
        ("value", "grads", "new_params"),
    ),
    # v <- beta v + g;  p <- p - lr v
    "momentum": OptimizerRule(
        "momentum",
        (
            Hyperparameter("lr", 0.01, "positive"),
            Hyperparameter("beta", 0.9, "fraction"),
        ),
        ("value", "grads", "velocity", "new_params"),
    ),
    # Kingma & Ba, bias-corrected: m <- beta1 m + (1 - beta1) g,
    # v <- beta2 v + (1 - beta2) g^2,  p <- p - lr mhat / (sqrt(vhat) + eps)
    "adam": OptimizerRule(
        "adam",
        (
            Hyperparameter("lr", 0.001, "positive"),
            Hyperparameter("beta1", 0.9, "fraction"),
            Hyperparameter("beta2", 0.999, "fraction"),
            Hyperparameter("eps", 1e-8, "positive"),
        ),
        (
            "value",
            "grads",
            "count",
            "moment1",
            "moment2",
            "correction1",
            "correction2",
            "new_params",
        ),
    ),
}
DEFAULT = "sgd"
