"""Reverse-mode (and forward-mode) differentiation over the expression graph.

This is the article's procedure run mechanically. The graph already holds one
intermediate variable per operation (step 1). For each node, its rule in
`rules.RULES` gives the local derivative as a vector-Jacobian product (step 2).
Walking the nodes in reverse topological order multiplies the local derivatives
along every path (the vector chain rule, step 3), and a node reached along several
paths receives the sum of their contributions (the total-derivative chain rule: the
adjoint accumulates, `+=` in micrograd's words). Because the adjoint expressions are
built from the forward nodes themselves, substituting back (step 4) is just printing
them: the backward pass reuses the forward values.

The derivation is kept as data (`Derivation.steps`) so that it can be explained.

Jacobians of `outputs:` use forward mode instead: a tangent, carrying the param's
axes after the value's axes, flows from the param to the output. An output of N
values and a param of n never needs more than N x n numbers, where reverse mode
would have to seed an N x N identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import LEAVES, Node, ancestors, leaves_of
from .model import Model
from .ops import Ops
from .rules import RULES, STEPWISE, Rule, total


@dataclass(frozen=True)
class Step:
    """One intermediate variable's backward step."""

    node: Node
    adjoint: Node  # dL/dnode: the sum of `contributions`
    contributions: tuple[Node, ...]  # one per path from the node to the loss
    partials: tuple[tuple[int, Node], ...]  # (operand index, its contribution)


@dataclass(frozen=True)
class Derivation:
    """Reverse mode from the loss: the gradients, and how they were found."""

    loss: Node
    gradients: dict[str, Node]  # param name -> dL/dparam, exactly the param's shape
    adjoints: dict[Node, Node]  # every differentiated node -> its adjoint
    steps: tuple[Step, ...]  # in the order they were taken (reverse topological)


@dataclass(frozen=True)
class Derivatives:
    """Everything the module needs differentiated: the loss's gradients (reverse
    mode) and each output's Jacobians (forward mode), one per param it depends on."""

    gradients: Derivation | None  # None: the spec has no loss
    jacobians: dict[str, dict[str, Node]]  # output -> param -> d output / d param


def derive(model: Model) -> Derivatives:
    """Differentiate the model: the chain rule's steps 2 to 4, for every result."""
    params = list(model.params.values())
    gradients_ = (
        None if model.loss is None else gradients(model.ops, model.loss, params)
    )
    jacobians = {
        name: {
            p.name: jacobian(model.ops, node, p)
            for p in params
            if p.name in leaves_of([node], "param")
        }
        for name, node in model.outputs.items()
    }
    return Derivatives(gradients_, jacobians)


def depends_on_params(nodes: list[Node]) -> set[Node]:
    """The nodes (in topological order) whose value changes with some param."""
    live: set[Node] = set()
    for n in nodes:
        if n.op == "param" or any(a in live for a in n.args):
            live.add(n)
    return live


def differentiable(node: Node) -> Rule | None:
    """The node's derivative rule; None for a leaf and for a piecewise-constant op
    (a comparison, a sign), whose derivative is zero: it passes nothing on."""
    rule = RULES.get(node.op)
    if rule is None:
        assert node.op in LEAVES or node.op in STEPWISE, f"no derivative for {node.op}"
    return rule


def unbroadcast(ops: Ops, g: Node, arg: Node, out: Node) -> Node:
    """The adjoint of a broadcast operand: the contribution `g`, which stands for an
    array of `out`'s shape, summed over the axes along which numpy repeated `arg`.

    Where the operand was broadcast (a bias row added to every sample, a scalar
    added to a vector) every repetition contributed, so they add up (docs/derivation.md:
    d(x + z)/dz = 1 summed). `g` may itself be "lazy", smaller than `out` (a scalar
    standing for a constant array): along such an axis the sum is `g` times the
    axis length, and no array is built for it.
    """
    lead = out.rank - arg.rank
    summed: list[int] = []  # axes of g to sum over
    factor = ops.const(1.0)  # product of the lengths of lazy axes
    g_lead = g.rank - out.rank  # g's axes are aligned with out's from the right
    for axis, d in enumerate(out.shape):
        repeated = axis < lead or (arg.shape[axis - lead] == 1 and d != 1)
        if not repeated:
            continue
        g_axis = axis + g_lead
        if g_axis >= 0 and g.shape[g_axis] != 1:
            summed.append(g_axis)
        else:
            factor = ops.mul(factor, ops.dimension(d))
    keep = tuple(a for a in summed if a - g_lead >= lead)  # arg's own size-1 axes
    drop = tuple(a for a in summed if a - g_lead < lead)
    if keep:
        g = ops.keep_sum(g, keep)
    if drop:
        g = ops.sum_axes(g, drop)
    g = ops.mul(factor, g)
    while g.rank > arg.rank and g.shape[0] == 1:  # leftover size-1 leading axes
        g = ops.index(g, 0)
    return g


def gradients(ops: Ops, loss: Node, params: list[Node]) -> Derivation:
    order = ancestors([loss])
    live = depends_on_params(order)
    pending: dict[Node, list[Node]] = {loss: [ops.const(1.0)]}
    adjoints: dict[Node, Node] = {}
    steps: list[Step] = []
    for node in reversed(order):
        contributions = pending.pop(node, None)
        if not contributions or node not in live:
            continue
        g = total(ops, *contributions)
        assert g is not None
        adjoints[node] = g
        partials: list[tuple[int, Node]] = []
        rule = differentiable(node)
        if rule is not None:
            for i, arg in enumerate(node.args):
                if arg not in live:
                    continue
                c = rule.vjp(ops, node, g, i)
                if c is None:
                    continue  # an operand without a derivative: it gets nothing
                if rule.broadcasts:
                    c = unbroadcast(ops, c, arg, node)
                partials.append((i, c))
                pending.setdefault(arg, []).append(c)
        steps.append(Step(node, g, tuple(contributions), tuple(partials)))
    grads: dict[str, Node] = {}
    for p in params:
        adjoint = adjoints.get(p)
        if adjoint is None:
            grads[p.name] = ops.make("zeros_like", p, shape=p.shape)
        else:
            grads[p.name] = ops.fill(adjoint, p)  # exactly p's shape, a fresh array
    return Derivation(loss, grads, adjoints, tuple(steps))


def jacobian(ops: Ops, output: Node, param: Node) -> Node:
    """d output / d param, of shape output.shape + param.shape, by forward mode."""
    order = ancestors([output])
    tangent: dict[Node, Node | None] = {}
    for node in order:
        if node is param:
            tangent[node] = ops.const(1.0) if param.rank == 0 else ops.seed(param)
            continue
        ts = tuple(tangent.get(a) for a in node.args)
        if all(t is None for t in ts):  # constant in the param (a dim, a literal)
            tangent[node] = None
            continue
        rule = differentiable(node)
        tangent[node] = None if rule is None else rule.jvp(ops, node, ts, param)
    t = tangent[output]
    if t is None:
        return ops.zeros(output, param)
    return ops.tfull(t, output, param)
