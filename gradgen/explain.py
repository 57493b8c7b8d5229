"""Human-readable dumps of the pipeline's stages (`gradgen generate --dump STAGE`).

The derivation is printed the way the article presents one: the intermediate
variables, then, walking backwards from the loss, each variable's adjoint as the
sum of the contributions it received (total-derivative rule) and the local
derivative it passes to each operand (vector chain rule).
"""

from __future__ import annotations

from .derive import Derivation
from .graph import LEAVES, Node, ancestors
from .lower import Program
from .model import Model
from .printer import Body, spell
from .rules import ATOM
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
    """Each node as the article names it: spec names, else u<id> for intermediates."""
    text: dict[Node, tuple[str, int]] = {}
    for n in nodes:
        if n in model.names:
            text[n] = (model.names[n], ATOM)
        elif n.op in LEAVES:
            text[n] = spell(n, text)
        else:
            text[n] = (f"u{n.id}", ATOM)
    return text


def _expressions(nodes: list[Node], model: Model) -> dict[Node, tuple[str, int]]:
    """Each node written out in full, down to the spec's named variables."""
    text: dict[Node, tuple[str, int]] = {}
    for n in nodes:
        text[n] = (model.names[n], ATOM) if n in model.names else spell(n, text)
    return text


def graph_text(model: Model) -> str:
    roots = [*([model.loss] if model.loss is not None else []), *model.outputs.values()]
    nodes = ancestors(roots)
    labels = _labels(nodes, model)
    lines = ["intermediate variables (chain rule step 1):"]
    for n in nodes:
        if n.op in LEAVES:
            continue
        code, _ = spell(n, labels)
        lines.append(f"  {labels[n][0]} = {code}    # {n.op} {show(n.shape)}")
    if model.loss is not None:
        lines.append(f"  loss = {labels[model.loss][0]}")
    for name, node in model.outputs.items():
        lines.append(f"  output {name} = {labels[node][0]}")
    return "\n".join(lines) + "\n"


def derivation_text(model: Model, derivation: Derivation | None) -> str:
    """Steps 2-4: walking back from the loss, each adjoint as the sum of the paths
    that reach it, and the local derivative each node passes to its operands."""
    if derivation is None:
        return (
            graph_text(model)
            + "no loss: Jacobians of the outputs come from forward mode\n"
        )
    nodes = ancestors(
        [derivation.loss, *derivation.gradients.values(), *derivation.adjoints.values()]
    )
    labels = _labels(nodes, model)
    full = _expressions(nodes, model)
    lines = [
        graph_text(model).rstrip("\n"),
        "",
        "backward (reverse mode, from the loss):",
    ]
    for step in derivation.steps:
        name = labels[step.node][0]
        if len(step.contributions) > 1:
            parts = " + ".join(full[c][0] for c in step.contributions)
            lines.append(
                f"  dL/d{name} = {parts}    # {len(step.contributions)} paths summed"
            )
        else:
            lines.append(f"  dL/d{name} = {full[step.adjoint][0]}")
        for i, contribution in step.partials:
            lines.append(
                f"      -> to {labels[step.node.args[i]][0]}: {full[contribution][0]}"
            )
    lines.append("")
    for p, g in derivation.gradients.items():
        lines.append(f"  dL/d{p} = {full[g][0]}")
    return "\n".join(lines) + "\n"


def lowered_text(program: Program, bodies: dict[str, Body]) -> str:
    """The module's functions after lowering, as the numpy statements they print."""
    lines: list[str] = []
    for kernel in program.kernels():
        body = bodies[kernel.name]
        lines.append(f"{kernel.name}({', '.join(kernel.args)}):")
        lines += [f"    {line}" for line in body.lines]
        lines.append(f"    -> {', '.join(body.results)}")
    return "\n".join(lines) + "\n"
