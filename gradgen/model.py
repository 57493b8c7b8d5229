"""Spec -> expression graph: each `define` entry, the loss and the outputs parsed in
order into one hash-consed graph (chain rule step 1: intermediate variables)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Collector, Location
from .graph import Node, leaves_of
from .ops import Ops
from .parse import ExpressionError, Parser
from .shapes import ShapeError, show
from .spec import Definition, Expr, Spec
from .load import YScalar


@dataclass(frozen=True)
class Model:
    spec: Spec
    ops: Ops
    inputs: dict[str, Node]
    params: dict[str, Node]
    names: dict[Node, str]  # nodes the spec named (inputs, params, define entries)
    loss: Node | None
    outputs: dict[str, Node]

    def arguments_of(self, roots: list[Node]) -> list[str]:
        """The inputs and params the roots depend on, in spec order."""
        used = leaves_of(roots, "input") | leaves_of(roots, "param")
        dims = {n.name for n in _dims(roots)}
        order = [*self.inputs, *self.params]
        args = [a for a in order if a in used]
        for d in sorted(dims):  # a dim used as a number needs an array that has it
            if not any(d in self._shape(a) for a in args):
                args.append(next(a for a in order if d in self._shape(a)))
        return [a for a in order if a in args]

    def dim_sources(self, args: list[str]) -> dict[str, tuple[str, int]]:
        """Where each dim can be read at run time: the first argument that has it."""
        out: dict[str, tuple[str, int]] = {}
        for a in args:
            for axis, d in enumerate(self._shape(a)):
                if isinstance(d, str):
                    out.setdefault(d, (a, axis))
        return out

    def _shape(self, name: str) -> tuple[object, ...]:
        node = self.inputs.get(name) or self.params[name]
        return node.shape


def _dims(roots: list[Node]) -> list[Node]:
    from .graph import ancestors

    return [n for n in ancestors(roots) if n.op == "dim"]


def build(spec: Spec) -> Model:
    ops = Ops()
    c = Collector()
    inputs = {d.name: ops.leaf("input", d.name, d.shape) for d in spec.inputs}
    params = {d.name: ops.leaf("param", d.name, d.shape) for d in spec.params}
    scope: dict[str, Node] = {**inputs, **params}
    names: dict[Node, str] = {n: k for k, n in scope.items()}
    later = {d.name: d.loc for d in spec.define}

    def parse(definition: Definition) -> Node | None:
        return _parse(definition.expr, ops, scope, spec, later, c)

    for d in spec.define:
        later.pop(d.name, None)
        node = parse(d)
        if node is not None:
            scope[d.name] = node
            names.setdefault(node, d.name)
    later = {}
    loss = parse(spec.loss) if spec.loss else None
    if loss is not None and loss.rank != 0:
        c.error(spec.loss.loc, f"the loss must be a scalar; this one has shape {show(loss.shape)}")  # type: ignore[union-attr]
    if loss is not None and not leaves_of([loss], "param") and not c:
        c.error(spec.loss.loc, "the loss does not depend on any param: nothing to differentiate")  # type: ignore[union-attr]
    outputs: dict[str, Node] = {}
    for o in spec.outputs:
        node = parse(o)
        if node is None:
            continue
        if not leaves_of([node], "param"):
            c.error(o.loc, f"output `{o.name}` does not depend on any param: it has no Jacobian")
        outputs[o.name] = node
    c.raise_if_any()
    return Model(spec, ops, inputs, params, names, loss, outputs)


def _parse(
    expr: Expr,
    ops: Ops,
    scope: dict[str, Node],
    spec: Spec,
    later: dict[str, Location],
    c: Collector,
) -> Node | None:
    if not isinstance(expr, YScalar):  # a YAML list: the vector literal [e1, e2, ...]
        items = [_parse(item, ops, scope, spec, later, c) for item in expr.items]  # type: ignore[arg-type]
        if any(i is None for i in items):
            return None
        for item, src in zip(items, expr.items, strict=True):
            if item.rank != 0:  # type: ignore[union-attr]
                c.error(src.loc, f"a vector literal takes scalars; this element has shape {show(item.shape)}")  # type: ignore[union-attr]
                return None
        ops.loc = expr.loc
        try:
            return ops.stack(items)  # type: ignore[arg-type]
        except ShapeError as e:
            c.error(expr.loc, str(e))
            return None
    value = expr.value
    text = value if isinstance(value, str) else repr(value)
    parser = Parser(ops, scope, spec.dims, expr.position)
    try:
        return parser.parse(text)
    except ExpressionError as e:
        message = e.message
        name = message.split("`")[1] if message.startswith("undefined name `") else None
        if name in later:
            message = (
                f"`{name}` is defined later in `define` (line {later[name].line});"
                " an entry may only use the entries above it"
            )
        c.error(expr.position(e.offset), message)
        return None
