"""Human-readable dumps of the pipeline's stages (`gradgen generate --dump STAGE`).

The derivation is printed the way the article presents one: the intermediate
variables, then, walking backwards from the loss, each variable's adjoint as the
sum of the contributions it received (total-derivative rule) and the local
derivative it passes to each operand (vector chain rule).
"""

from __future__ import annotations

from .derive import Derivation
from .graph import LEAVES, Node, ancestors
from .model import Model
from .printer import _spell
from .shapes import show
from .spec import Spec


def spec_text(spec: Spec) -> str:
    lines = [f"spec {spec.name} ({spec.path})"]
    for label, decls in (("input", spec.inputs), ("param", spec.params)):
        lines += [f"  {label} {d.name} {show(d.shape)}" for d in decls]
    lines += [f"  define {d.name}" for d in spec.define]
    if spec.loss:
        lines.append("  loss")
    lines += [f"  output {o.name}" for o in spec.outputs]
    hyper = ", ".join(f"{k}={v:g}" for k, v in spec.optimizer.hyper)
    lines.append(f"  optimizer {spec.optimizer.rule} ({hyper})")
    return "\n".join(lines) + "\n"


def _labels(nodes: list[Node], model: Model) -> dict[Node, tuple[str, int]]:
    text: dict[Node, tuple[str, int]] = {}
    for n in nodes:
        if n in model.names:
            text[n] = (model.names[n], 50)
        elif n.op in LEAVES:
            text[n] = _spell(n, text)
        else:
            text[n] = (f"u{n.id}", 50)
    return text


def graph_text(model: Model) -> str:
    roots = [*([model.loss] if model.loss is not None else []), *model.outputs.values()]
    nodes = ancestors(roots)
    labels = _labels(nodes, model)
    lines = ["intermediate variables (chain rule step 1):"]
    for n in nodes:
        if n.op in LEAVES:
            continue
        code, _ = _spell(n, labels)
        lines.append(f"  {labels[n][0]} = {code}    # {n.op} {show(n.shape)}")
    if model.loss is not None:
        lines.append(f"  loss = {labels[model.loss][0]}")
    for name, node in model.outputs.items():
        lines.append(f"  output {name} = {labels[node][0]}")
    return "\n".join(lines) + "\n"


def derivation_text(model: Model, derivation: Derivation | None) -> str:
    if derivation is None:
        return (
            graph_text(model)
            + "no loss: Jacobians of the outputs come from forward mode\n"
        )
    nodes = ancestors(
        [derivation.loss, *derivation.gradients.values(), *derivation.adjoints.values()]
    )
    labels = _labels(nodes, model)

    def show_node(n: Node) -> str:
        return (
            _spell(n, _expanded)[0]
            if n not in labels or n.op not in LEAVES
            else labels[n][0]
        )

    _expanded: dict[Node, tuple[str, int]] = {}
    for n in nodes:
        _expanded[n] = (
            labels[n] if n in model.names or n.op in LEAVES else _spell(n, _expanded)
        )
    lines = [
        graph_text(model).rstrip("\n"),
        "",
        "backward (reverse mode, from the loss):",
    ]
    for step in derivation.steps:
        name = labels[step.node][0]
        if len(step.contributions) > 1:
            parts = " + ".join(show_node(c) for c in step.contributions)
            lines.append(
                f"  dL/d{name} = {parts}    # {len(step.contributions)} paths summed"
            )
        else:
            lines.append(f"  dL/d{name} = {show_node(step.adjoint)}")
        for i, contribution in step.partials:
            operand = labels[step.node.args[i]][0]
            lines.append(f"      -> to {operand}: {show_node(contribution)}")
    lines.append("")
    for p, g in derivation.gradients.items():
        lines.append(f"  dL/d{p} = {show_node(g)}")
    return "\n".join(lines) + "\n"
