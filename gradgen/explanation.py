"""The explanation stage: the derivation as the article teaches it, as data.

Parr & Howard's procedure has four steps, and the explanation follows them:

1. the intermediate variables: one per operation of the graph, named as the
   generated code names them (the spec's `define` entries, `t0`... where the code
   gives a value a line of its own, `u1, u2...` otherwise);
2. each variable's local derivative with respect to each operand, with the rule
   it came from (`rules.RULES`), as the vector-Jacobian product the derivation
   applies: the rule run on a symbolic adjoint `∂L/∂v`;
3. the chain rule: walking back from the loss, each variable's adjoint as the sum
   of what the variables that use it pass back (the total-derivative rule when
   there are several), with the vector chain rule's Jacobian shapes;
4. the substituted result in closed form (`closedform.simplify`), for every param,
   every output's Jacobians, and the optimizer's update.

Plus the data flow from inputs and params through the variables to the loss and
the outputs (`Diagram`). Every formula comes in LaTeX, MathML and one numpy-like
line (`Formula`); the sympy expression is kept for the tests to evaluate.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sympy as sp

from . import closedform as cf
from .derive import Derivation, Derivatives, differentiable, unbroadcast
from .graph import LEAVES, Node, ancestors
from .lower import Program
from .model import Model
from .printer import Body
from .rules import RULES, number
from .shapes import show

LOSS = sp.Symbol("L", real=True)


class Formula:
    """One formula, in the three notations; `expr` is the sympy expression.

    Each notation is printed when first asked for: a module's docstrings read only
    `text`, and printing LaTeX and MathML for every formula cost a module about a
    seventh of its generation time."""

    def __init__(self, expr: Any, ranks: Mapping[sp.Symbol, int]) -> None:
        self.expr = expr
        self._ranks = dict(ranks)  # a snapshot: the builder's ranks grow later

    @functools.cached_property
    def tex(self) -> str:
        return cf.latex(self.expr, self._ranks)

    @functools.cached_property
    def mathml(self) -> str:
        return cf.mathml(self.expr, self._ranks)

    @functools.cached_property
    def text(self) -> str:
        return cf.text(self.expr, self._ranks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Formula) and (self.expr, self._ranks) == (
            other.expr,
            other._ranks,
        )

    def __hash__(self) -> int:
        return hash(self.expr)

    def __repr__(self) -> str:
        return f"Formula({self.expr!r})"


@dataclass(frozen=True)
class Variable:
    name: str  # as in the generated code
    symbol: Formula
    definition: Formula | None  # None for an input or a param
    shape: str  # [N, n]
    kind: str  # input, param, define, introduced
    node: Node


@dataclass(frozen=True)
class Local:
    """Step 2: the local derivative of `variable` with respect to one operand."""

    variable: str
    operand: str
    rule: str
    jacobian: Formula | None  # element-wise: the diagonal Jacobian ∂v/∂operand
    shape: str  # of the Jacobian, N x n
    contribution: Formula  # ∂L/∂v passed back: the vector-Jacobian product


@dataclass(frozen=True)
class Adjoint:
    """Step 3: ∂L/∂variable as the sum of what its users pass back."""

    variable: str
    equation: Formula  # ∂L/∂v = sum of the contributions, symbolically
    value: Formula  # ... = its value in terms of the variables
    users: tuple[str, ...]  # the variables whose contributions were summed
    chains: tuple[str, ...]  # vector chain rule, shapes: "∂L/∂w (1 x n) = ..."


@dataclass(frozen=True)
class Result:
    """Step 4: a derivative in closed form."""

    name: str  # dL/dw, dy/dx
    equation: Formula  # ∂L/∂w = closed form
    closed: Formula  # the closed form alone
    of: str  # the loss or the output
    wrt: str  # the param


@dataclass(frozen=True)
class Edge:
    source: str
    target: str


@dataclass(frozen=True)
class DiagramNode:
    key: str  # a unique id
    name: str  # the variable's name; `L` for the loss, an output's name
    label: str
    kind: str  # input, param, define, introduced, loss, output
    depth: int  # its layer: 0 for inputs and params


@dataclass(frozen=True)
class Diagram:
    nodes: tuple[DiagramNode, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True)
class Explanation:
    name: str
    doc: str
    variables: tuple[Variable, ...]
    loss: str | None  # the variable the loss is
    outputs: tuple[tuple[str, str], ...]  # output name -> variable
    locals: tuple[Local, ...]
    adjoints: tuple[Adjoint, ...]
    gradients: tuple[Result, ...]
    jacobians: tuple[Result, ...]
    optimizer: str
    hyper: tuple[tuple[Formula, str], ...]  # (symbol, value)
    updates: tuple[Formula, ...]
    diagram: Diagram
    values: Mapping[str, Any]  # symbol name -> its rank, for evaluating closed forms


def _formula(expr: Any, ranks: Mapping[sp.Symbol, int]) -> Formula:
    return Formula(expr, ranks)


def _size(shape: tuple[object, ...]) -> str:
    return " \u00b7 ".join(str(d) for d in shape) or "1"


RULE_NAMES = {
    "add": "element-wise sum",
    "sub": "element-wise difference",
    "mul": "element-wise product",
    "div": "element-wise quotient",
    "neg": "element-wise negation",
    "powc": "element-wise power",
    "pow": "element-wise power",
    "maximum": "element-wise max: the adjoint goes to the operand picked",
    "minimum": "element-wise min: the adjoint goes to the operand picked",
    "sum": "sum reduction",
    "mean": "mean reduction",
    "logsumexp": "log-sum-exp reduction: its derivative is the softmax",
    "matmul": "matrix product",
    "transpose": "transpose",
    "stack": "vector literal: each element gets its own entry (indexing)",
}


def rule_name(node: Node, i: int) -> str:
    """The rule a local derivative comes from, in the article's terms."""
    rule = RULES[node.op]
    name = RULE_NAMES.get(
        node.op, "element-wise function" if rule.elementwise else node.op
    )
    arg = node.args[i]
    if rule.broadcasts and arg.shape != node.shape:
        kind = "scalar expansion" if arg.rank == 0 else "broadcasting"
        name += f"; {kind}: summed over the repeated axes"
    return name


class _Builder:
    def __init__(
        self, model: Model, derivatives: Derivatives, bodies: Mapping[str, Body]
    ) -> None:
        self.model = model
        self.derivatives = derivatives
        roots: list[Node] = [*model.outputs.values()]
        if model.loss is not None:
            roots.insert(0, model.loss)
        self.forward = [n for n in ancestors(roots) if n.op not in ("const", "dim")]
        code_names = dict(bodies["loss_and_gradients"].named) if bodies else {}
        taken = {*model.names.values(), *code_names.values(), *model.spec.dims}
        self.labels: dict[Node, str] = {}
        count = 0
        for n in self.forward:
            if n in model.names:
                self.labels[n] = model.names[n]
            elif n in code_names and not code_names[n].startswith("dL_d"):
                self.labels[n] = code_names[n]
            else:
                count += 1
                while f"u{count}" in taken:
                    count += 1
                self.labels[n] = f"u{count}"
        seed = cf.Shadow({})
        self.symbols = {n: seed.symbol(name, n) for n, name in self.labels.items()}
        self.named = cf.Shadow(
            {n: seed.symbol(name, n) for n, name in model.names.items()}
        )

    def formula(self, expr: Any, shadow: cf.Shadow) -> Formula:
        return _formula(expr, shadow.ranks)

    def variables(self) -> list[Variable]:
        one_level = cf.Shadow(self.symbols)
        found: list[Variable] = []
        for n in self.forward:
            name = self.labels[n]
            symbol = self.formula(self.symbols[n], one_level)
            if n.op in LEAVES:
                kind, definition = n.op, None
            else:
                kind = "define" if n in self.model.names else "introduced"
                definition = self.formula(
                    cf.Assign(self.symbols[n], one_level.expr(n), sp.Integer(0)),
                    one_level,
                )
            found.append(Variable(name, symbol, definition, show(n.shape), kind, n))
        return found

    def derivation(self, derivation: Derivation) -> tuple[list[Local], list[Adjoint]]:
        ops = self.model.ops
        placeholders: dict[Node, Node] = {}
        atoms: dict[Node, Any] = dict(self.symbols)
        for step in derivation.steps:
            g = ops.leaf("input", f"_adjoint{step.node.id}", step.node.shape)
            placeholders[step.node] = g
            atoms[g] = cf.Partial(LOSS, self.symbols[step.node])
        symbolic = cf.Shadow(atoms)
        for n, s in self.symbols.items():
            symbolic.ranks[s] = n.rank
        one_level = cf.Shadow(self.symbols)
        locals_: list[Local] = []
        incoming: dict[Node, list[tuple[Node, Any]]] = {}
        for step in derivation.steps:
            node = step.node
            rule = differentiable(node)
            if rule is None:
                continue
            for i, _ in step.partials:
                arg = node.args[i]
                c = rule.vjp(ops, node, placeholders[node], i)
                assert c is not None
                if rule.broadcasts:
                    c = unbroadcast(ops, c, arg, node)
                contribution = cf.simplify(
                    symbolic.expr(c, stop_at_root=True), symbolic.ranks
                )
                incoming.setdefault(arg, []).append((node, contribution))
                jacobian = None
                if rule.broadcasts or rule.elementwise or node.op == "neg":
                    d = rule.vjp(ops, node, ops.const(1.0), i)
                    if d is not None and (arg.shape == node.shape or not arg.rank):
                        local = cf.simplify(one_level.expr(d), one_level.ranks)
                        if node.rank and arg.shape == node.shape:
                            local = cf.Diag(local)
                        elif node.rank:  # a scalar expanded: a column of ones
                            local = local * cf.Ones()
                        jacobian = self.formula(
                            cf.Assign(
                                cf.Partial(self.symbols[node], self.symbols[arg]),
                                local,
                                sp.Integer(0),
                            ),
                            one_level,
                        )
                locals_.append(
                    Local(
                        self.labels[node],
                        self.labels[arg],
                        rule_name(node, i),
                        jacobian,
                        f"{_size(node.shape)} \u00d7 {_size(arg.shape)}",
                        self.formula(contribution, symbolic),
                    )
                )
        adjoints: list[Adjoint] = []
        for step in derivation.steps:
            node = step.node
            if node not in self.symbols:
                continue
            users = incoming.get(node, [])
            total = sp.Add(*(c for _, c in users)) if users else sp.Integer(1)
            left = cf.Partial(LOSS, self.symbols[node])
            value = cf.simplify(one_level.expr(step.adjoint), one_level.ranks)
            chains = tuple(
                f"\u2202L/\u2202{self.labels[node]} (1 \u00d7 {_size(node.shape)})"
                f" += \u2202L/\u2202{self.labels[u]} (1 \u00d7 {_size(u.shape)})"
                f" \u00b7 \u2202{self.labels[u]}/\u2202{self.labels[node]}"
                f" ({_size(u.shape)} \u00d7 {_size(node.shape)})"
                for u, _ in users
                if u.rank or node.rank
            )
            adjoints.append(
                Adjoint(
                    self.labels[node],
                    self.formula(cf.Assign(left, total, sp.Integer(0)), symbolic),
                    self.formula(cf.Assign(left, value, sp.Integer(0)), one_level),
                    tuple(self.labels[u] for u, _ in users),
                    chains,
                )
            )
        return locals_, adjoints

    def result(self, of: str, wrt: str, node: Node) -> Result:
        shadow = self.named
        closed = cf.simplify(shadow.expr(node, stop_at_root=False), shadow.ranks)
        f = sp.Symbol(of, real=True) if of != "L" else LOSS
        p = sp.Symbol(wrt, real=True)
        equation = cf.Assign(cf.Partial(f, p), closed, sp.Integer(0))
        return Result(
            f"d{of}/d{wrt}",
            self.formula(equation, shadow),
            self.formula(closed, shadow),
            of,
            wrt,
        )

    def diagram(self) -> Diagram:
        depth: dict[Node, int] = {}
        nodes: list[DiagramNode] = []
        edges: list[Edge] = []
        key = {n: f"v{n.id}" for n in self.forward}
        for n in self.forward:
            args = [a for a in n.args if a in key]
            depth[n] = 1 + max((depth[a] for a in args), default=-1)
            if n.op in LEAVES:
                kind = n.op
            else:
                kind = "define" if n in self.model.names else "introduced"
            label = f"{self.labels[n]} {show(n.shape)}"
            nodes.append(DiagramNode(key[n], self.labels[n], label, kind, depth[n]))
            for a in dict.fromkeys(args):
                edges.append(Edge(key[a], key[n]))
        if self.model.loss is not None:
            loss_depth = depth[self.model.loss] + 1
            nodes.append(DiagramNode("loss", "L", "loss L", "loss", loss_depth))
            edges.append(Edge(key[self.model.loss], "loss"))
        for name, node in self.model.outputs.items():
            nodes.append(
                DiagramNode(
                    f"out_{name}", name, f"output {name}", "output", depth[node] + 1
                )
            )
            edges.append(Edge(key[node], f"out_{name}"))
        return Diagram(tuple(nodes), tuple(edges))


def optimizer_updates(
    model: Model,
) -> tuple[tuple[tuple[Formula, str], ...], tuple[Formula, ...]]:
    """The optimizer's update of every param θ, in the article's notation."""
    rule = model.spec.optimizer.rule
    theta, v, m, t = (sp.Symbol(s, real=True) for s in ("theta", "v", "m", "t"))
    ranks = {theta: 1, v: 1, m: 1}
    g = cf.Partial(LOSS, theta)
    names = {
        "lr": "eta",
        "beta": "beta",
        "beta1": "beta1",
        "beta2": "beta2",
        "eps": "epsilon",
    }
    sym = {k: sp.Symbol(names[k], positive=True) for k, _ in model.spec.optimizer.hyper}
    hyper = tuple(
        (_formula(sym[k], ranks), number(value))
        for k, value in model.spec.optimizer.hyper
    )
    lr = sym["lr"]
    steps: list[Any]
    if rule == "sgd":
        steps = [cf.Assign(theta, theta - lr * g)]
    elif rule == "momentum":
        steps = [
            cf.Assign(v, sym["beta"] * v + g),
            cf.Assign(theta, theta - lr * v),
        ]
    else:
        b1, b2, eps = sym["beta1"], sym["beta2"], sym["eps"]
        mhat, vhat = cf.Hat(m), cf.Hat(v)
        steps = [
            cf.Assign(t, t + 1),
            cf.Assign(m, b1 * m + (1 - b1) * g),
            cf.Assign(v, b2 * v + (1 - b2) * g**2),
            cf.Assign(mhat, m / (1 - b1**t), sp.Integer(0)),
            cf.Assign(vhat, v / (1 - b2**t), sp.Integer(0)),
            cf.Assign(theta, theta - lr * mhat / (sp.sqrt(vhat) + eps)),
        ]
    return hyper, tuple(_formula(s, ranks) for s in steps)


def explain(
    model: Model,
    derivatives: Derivatives,
    program: Program,
    bodies: Mapping[str, Body],
    *,
    steps: bool = True,
) -> Explanation:
    """The explanation of a derived model (its program and printed bodies give the
    names the generated code uses). Without `steps`, only the closed forms (what a
    module's docstrings state): no local derivatives, no chain rule."""
    del program  # the names come from the printed bodies
    b = _Builder(model, derivatives, bodies if "loss_and_gradients" in bodies else {})
    variables = b.variables()
    locals_: list[Local] = []
    adjoints: list[Adjoint] = []
    gradients: list[Result] = []
    derivation = derivatives.gradients
    if derivation is not None:
        if steps:
            locals_, adjoints = b.derivation(derivation)
        gradients = [b.result("L", p, g) for p, g in derivation.gradients.items()]
    jacobians = [
        b.result(out, p, j)
        for out, per_param in derivatives.jacobians.items()
        for p, j in per_param.items()
    ]
    hyper, updates = optimizer_updates(model)
    ranks = {s.name: r for s, r in b.named.ranks.items()}
    return Explanation(
        model.spec.name,
        model.spec.doc or "",
        tuple(variables),
        b.labels[model.loss] if model.loss is not None else None,
        tuple((name, b.labels[n]) for name, n in model.outputs.items()),
        tuple(locals_),
        tuple(adjoints),
        tuple(gradients),
        tuple(jacobians),
        model.spec.optimizer.rule,
        hyper,
        updates,
        b.diagram(),
        ranks,
    )
