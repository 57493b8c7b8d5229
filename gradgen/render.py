"""The Jinja environment, and the context handed to the templates.

Every decision is taken here, in Python: which functions the module has, their
arguments, their bodies (from `printer.py`), the helpers they call. The templates
only lay that text out. Rendering is strict (`StrictUndefined`): a missing field is
an error, never an empty string.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import jinja2

from . import naming
from .derive import Derivation, jacobian
from .graph import Node, leaves_of
from .load import YNode, YScalar, YSeq
from .model import Model
from .printer import Body, print_body
from .rules import number
from .shapes import show
from .simplify import fresh, lower_powers
from .write import PLACEHOLDER


@dataclass(frozen=True)
class Argument:
    name: str
    annotation: str


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[Argument, ...]
    returns: str
    doc: str
    body: Body
    result: str  # the returned expression


@dataclass(frozen=True)
class Output:
    name: str
    shape: str
    value: Function
    jacobian: Function
    type_name: str
    fields: tuple[str, ...]  # the params it depends on


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["docstring"] = docstring_text
    return env


def _template_source(name: str) -> str:
    return (
        resources.files("gradgen.templates").joinpath(name).read_text(encoding="utf-8")
    )


def docstring_text(text: str) -> str:
    """Text safe inside a triple-quoted docstring: backslashes and quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_module(
    model: Model,
    derivation: Derivation | None,
    *,
    version: str,
    spec_rel: str,
    spec_sha256: str,
) -> str:
    spec = model.spec
    annotations = {
        n: ("float" if node.rank == 0 else "np.ndarray")
        for n, node in {**model.inputs, **model.params}.items()
    }

    def arguments(names: list[str]) -> tuple[Argument, ...]:
        return tuple(Argument(n, annotations[n]) for n in names)

    all_args = [*model.inputs, *model.params]
    functions: list[Function] = []
    helpers: set[str] = set()
    if derivation is not None and model.loss is not None:
        forward = _body(model, [model.loss], all_args, {})
        # dL_dw for each param's gradient, then dL_dz for the spec's other named
        # variables; a node keeps the first name it gets (the spec's own first).
        names: dict[Node, str] = {}
        for p, g in derivation.gradients.items():
            names.setdefault(g, naming.gradient(p))
        for node, adjoint in derivation.adjoints.items():
            if node in model.names:
                names.setdefault(adjoint, naming.gradient(model.names[node]))
        # two params with the same gradient still get two arrays
        gradients = fresh(model.ops, list(derivation.gradients.values()))
        backward = _body(model, [model.loss, *gradients], all_args, names)
        loss_value, *grads = backward.results
        functions += [
            Function(
                "loss",
                arguments(all_args),
                "float",
                "The loss.",
                forward,
                f"float({forward.results[0]})",
            ),
            Function(
                "loss_and_gradients",
                arguments(all_args),
                "tuple[float, Gradients]",
                "The loss and its gradient with respect to every param.",
                backward,
                f"float({loss_value}), {_call('Gradients', list(model.params), grads)}",
            ),
        ]
        helpers |= forward.helpers | backward.helpers
    outputs: list[Output] = []
    for out_name, node in model.outputs.items():
        args = model.arguments_of([node])  # may add an array only to read a dim
        depends = leaves_of([node], "param")
        deps = [p for p in model.params if p in depends]
        value = _body(model, fresh(model.ops, [node]), args, {})
        jac = _body(
            model,
            fresh(
                model.ops, [jacobian(model.ops, node, model.params[p]) for p in deps]
            ),
            args,
            {},
        )
        helpers |= value.helpers | jac.helpers
        shape = show(node.shape)
        type_name = naming.jacobian_type(out_name)
        outputs.append(
            Output(
                out_name,
                shape,
                Function(
                    out_name,
                    arguments(args),
                    "np.ndarray" if node.rank else "float",
                    f"The output `{out_name}`, shape {shape}.",
                    value,
                    value.results[0] if node.rank else f"float({value.results[0]})",
                ),
                Function(
                    naming.jacobian_function(out_name),
                    arguments(args),
                    type_name,
                    f"The Jacobians of `{out_name}`: shape {shape} + each param's shape.",
                    jac,
                    _call(type_name, deps, list(jac.results)),
                ),
                type_name,
                tuple(deps),
            )
        )
    context = {
        "version": version,
        "spec_rel": spec_rel,
        "spec_sha256": spec_sha256,
        "placeholder": PLACEHOLDER,
        "doc": spec.doc,
        "summary": _summary(model),
        "inputs": list(model.inputs),
        "params": [Argument(p, annotations[p]) for p in model.params],
        "data_args": arguments(list(model.inputs)),
        "all_args": arguments(all_args),
        "param_shapes": {p: show(n.shape) for p, n in model.params.items()},
        "has_loss": derivation is not None,
        "functions": functions,
        "outputs": outputs,
        "helpers": sorted(helpers),
        "optimizer": spec.optimizer.rule,
        "hyper": [(k, number(v)) for k, v in spec.optimizer.hyper],
    }
    return environment().get_template("module.py.jinja").render(context)


def _call(callee: str, fields: list[str], values: list[str]) -> str:
    return (
        f"{callee}("
        + ", ".join(f"{k}={v}" for k, v in zip(fields, values, strict=True))
        + ")"
    )


def _body(
    model: Model, results: list[Node], args: list[str], names: dict[Node, str]
) -> Body:
    preferred = {n: name for n, name in model.names.items() if name not in args}
    for n, name in names.items():
        preferred.setdefault(n, name)  # never rename a variable the spec named
    lowered = lower_powers(model.ops, results)
    renamed = {lowered[n]: name for n, name in preferred.items() if n in lowered}
    return print_body(
        [lowered[r] for r in results], renamed, args, model.dim_sources(args)
    )


def _summary(model: Model) -> list[str]:
    """The model as the spec states it, for the module docstring."""
    spec = model.spec
    lines = []
    for label, decls in (("inputs", spec.inputs), ("params", spec.params)):
        if decls:
            lines.append(
                f"{label}: " + ", ".join(f"{d.name} {show(d.shape)}" for d in decls)
            )
    for d in (*spec.define, *([spec.loss] if spec.loss else []), *spec.outputs):
        lines.append(f"{d.name} = {_expr_text(d.expr)}")
    lines.append(
        f"optimizer: {spec.optimizer.rule} ("
        + ", ".join(f"{k}={number(v)}" for k, v in spec.optimizer.hyper)
        + ")"
    )
    return lines


def _expr_text(expr: YNode) -> str:
    """An expression as written in the spec, on one line."""
    if isinstance(expr, YScalar):
        v = expr.value
        return " ".join(str(v).split()) if isinstance(v, str) else repr(v)
    assert isinstance(expr, YSeq)  # a YAML list: the vector literal
    return "[" + ", ".join(_expr_text(i) for i in expr.items) + "]"
