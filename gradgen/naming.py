"""Every identifier that gradgen writes into a generated module comes from here.

Names are predictable, so that reviewers can read the code against the spec:
the spec's own names for inputs, params and `define` entries; `dL_dw` for the
gradient (adjoint) of the loss with respect to `w`; `t0, t1, ...` for other
intermediate values, numbered in order of appearance within each function.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable

from .optimizers import OptimizerRule

#: Module-level names of every generated module.
MODULE_NAMES = frozenset(
    {
        "np",
        "NamedTuple",
        "Params",
        "Gradients",
        "State",
        "loss",
        "gradients",
        "loss_and_gradients",
        "init_state",
        "step",
        "pack",
        "unpack",
        "loss_and_gradient_flat",
        "theta",
        "_sigmoid",
    }
)
#: The imports every generated module starts with, by the name they bind.
IMPORTS = {"np": "numpy as `np`", "NamedTuple": "`NamedTuple` from typing"}
#: The names an array-API module (`backend: array-api`) binds besides those above:
#: its imports, its type alias and the namespace every function takes.
ARRAY_API_NAMES = {
    "xp": "the array namespace `xp` that every function takes",
    "array_namespace": "`array_namespace` from array_api_compat",
    "device": "`device` from array_api_compat",
    "is_writeable_array": "`is_writeable_array` from array_api_compat",
    "Any": "`Any` from typing",
    "Array": "its type alias `Array`",
}
#: Python's builtins that generated code calls or annotates with: a spec name that
#: hid one would break the module. Other builtins (`input`, `filter`, `sum`) may be
#: spec names: the generated code never uses them.
USED_BUILTINS = frozenset({"float", "int", "tuple"})
GRADIENT_PREFIX = "dL_d"


def gradient(name: str) -> str:
    """The adjoint dL/d(name)."""
    return f"{GRADIENT_PREFIX}{name}"


def clash(
    name: str, step: OptimizerRule | None = None, backend: str = "numpy"
) -> str | None:
    """Why a spec name would clash with a name of the generated module, or None.

    `step` is the optimizer whose `step` function takes the name as an argument (an
    input's), so the name must not be one `step` binds. The phrase completes
    "`name` ...". Temporaries (`t0`...) never clash: they are numbered around the
    spec's names.
    """
    if name in IMPORTS:
        return f"is reserved: the generated module imports {IMPORTS[name]}"
    if backend == "array-api" and name in ARRAY_API_NAMES:
        return (
            "is reserved: the generated array-API module uses"
            f" {ARRAY_API_NAMES[name]}"
        )
    if name in MODULE_NAMES:
        return f"is reserved: the generated module defines its own `{name}`"
    if step is not None and name in step.step_names():
        return (
            f"is reserved: the generated `step` ({step.name}) has a variable `{name}`"
        )
    if name in USED_BUILTINS:
        return f"is reserved: the generated code uses Python's builtin `{name}`"
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if name.startswith(GRADIENT_PREFIX):
        of = name[len(GRADIENT_PREFIX) :]
        return f"is reserved: gradgen names gradients `{GRADIENT_PREFIX}<name>`" + (
            f" (this one reads as the gradient of `{of}`)" if of else ""
        )
    return None


def jacobian_function(output: str) -> str:
    return f"jacobian_{output}"


def jacobian_type(output: str) -> str:
    return (
        "".join(part[:1].upper() + part[1:] for part in output.split("_") if part)
        + "Jacobian"
    )


def generated_for(outputs: Iterable[str]) -> set[str]:
    """The module-level names a spec's outputs add."""
    names: set[str] = set()
    for out in outputs:
        names |= {jacobian_function(out), jacobian_type(out)}
    return names


class Temporaries:
    """Fresh names t0, t1, ... that avoid every name already taken."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)
        self.count = 0

    def fresh(self, prefix: str = "t") -> str:
        while True:
            name = f"{prefix}{self.count}"
            self.count += 1
            if name not in self.taken:
                self.taken.add(name)
                return name
