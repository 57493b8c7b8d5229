"""Spec -> expression graph: each `define` entry, the loss and the outputs parsed in
order into one hash-consed graph (chain rule step 1: intermediate variables).

Every expression is parsed even after another one failed, so a spec's problems are
reported together; an expression that uses a name whose own definition failed is
skipped silently (its problem is already reported, and a second message about the
same mistake would only be noise).

A spec without errors may still have warnings (`Model.warnings`, in file order):
the parser's broadcasts that pair a dim with itself, a param that neither the loss
nor any output depends on (its gradient is always zero), and an input that nothing
uses. They are returned, never printed or raised; a spec with errors reports only
its errors.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass

from .errors import Collector, Diagnostic
from .graph import Node, ancestors, leaves_of
from .limits import MAX_LENGTH, MAX_NODES, MAX_PRINTED
from .load import YNode, YScalar, YSeq
from .ops import Ops
from .parse import (
    ExpressionError,
    Integers,
    Parser,
    element_problem,
    syntax_tree,
    vector,
)
from .shapes import ShapeError, show
from .spec import Definition, Expr, Spec, Validated


class _TooBig(Exception):
    """The spec outgrew a size limit; the problem is already reported."""


@dataclass(frozen=True)
class Model:
    spec: Spec
    ops: Ops
    inputs: dict[str, Node]
    params: dict[str, Node]
    names: dict[Node, str]  # nodes the spec named (inputs, params, define entries)
    loss: Node | None
    outputs: dict[str, Node]
    integers: frozenset[str] = frozenset()  # inputs that are integer ids
    warnings: tuple[Diagnostic, ...] = ()  # in file order

    def arguments_of(self, roots: list[Node]) -> list[str]:
        """The inputs and params the roots depend on, in spec order."""
        used = leaves_of(roots, "input") | leaves_of(roots, "iinput")
        used |= leaves_of(roots, "param")
        dims = {n.name for n in ancestors(roots) if n.op == "dim"}
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


def build(checked: Validated) -> Model:
    """The graph of a validated spec. Raises `SpecError` with every problem found:
    the spec's own (`checked.diagnostics`) and its expressions', together."""
    c = Collector()
    c.diagnostics += checked.diagnostics
    if checked.spec is None:
        c.raise_if_any()
    assert checked.spec is not None
    if checked.diagnostics and checked.unchecked is None:
        c.raise_if_any()  # the names in scope are unknown: no expression is checked
    model = _Builder(checked.spec, c, checked.unchecked or frozenset()).build()
    c.raise_if_any()
    _unused(model, c)
    return dataclasses.replace(model, warnings=tuple(sorted(set(c.warnings))))


def _unused(model: Model, c: Collector) -> None:
    """Warn, at its declaration, about each param that neither the loss nor any
    output depends on, and each input that nothing uses (not even for a dim)."""
    roots = [*([model.loss] if model.loss is not None else []), *model.outputs.values()]
    used, trained = set(model.arguments_of(roots)), leaves_of(roots, "param")
    by = "the loss or any output" if model.loss is not None else "any output"
    for d in model.spec.params:
        if d.name not in trained:
            zero = " (its gradient is always zero)" if model.loss is not None else ""
            c.warning(d.loc, f"param `{d.name}` is not used by {by}{zero}")
    for d in model.spec.inputs:
        if d.name not in used:
            c.warning(d.loc, f"input `{d.name}` is not used by {by}")


class _Builder:
    def __init__(self, spec: Spec, c: Collector, skipped: frozenset[str]) -> None:
        self.spec, self.c = spec, c
        self.ops = Ops()
        self.failed = set(skipped)  # names whose value is unknown: no messages
        self.inputs = {
            d.name: self.ops.leaf(
                "iinput" if d.dtype == "int" else "input", d.name, d.shape
            )
            for d in spec.inputs
        }
        self.integers = Integers(
            frozenset(d.name for d in spec.inputs if d.dtype == "int")
        )
        self.params = {
            d.name: self.ops.leaf("param", d.name, d.shape) for d in spec.params
        }
        self.scope: dict[str, Node] = {**self.inputs, **self.params}
        self.later: dict[str, Definition] = {d.name: d for d in spec.define}
        self.uses = {d.name: _names_in(d.expr) for d in spec.define}

    def build(self) -> Model:
        try:
            return self._build()
        except _TooBig:
            return Model(self.spec, self.ops, self.inputs, self.params, {}, None, {})

    def _build(self) -> Model:
        spec, c = self.spec, self.c
        names: dict[Node, str] = {n: k for k, n in self.scope.items()}
        for d in spec.define:
            self.later.pop(d.name, None)
            node = self.parse(d)
            if node is None:
                self.failed.add(d.name)
                continue
            self.scope[d.name] = node
            names.setdefault(node, d.name)
        loss = self.parse(spec.loss) if spec.loss else None
        if spec.loss is not None and loss is not None:
            if loss.rank != 0:
                c.error(
                    spec.loss.loc,
                    f"the loss must be a scalar; this one has shape {show(loss.shape)}"
                    " (reduce it with sum(...) or mean(...))",
                )
            elif not leaves_of([loss], "param") and self.params and not c:
                c.error(
                    spec.loss.loc,
                    "the loss does not depend on any param: nothing to differentiate",
                )
        printed = 2 * len(ancestors([loss])) if loss is not None else 0
        outputs: dict[str, Node] = {}
        for o in spec.outputs:
            node = self.parse(o)
            if node is None:
                continue
            params = leaves_of([node], "param")
            outputs[o.name] = node
            printed += len(ancestors([node])) * (1 + len(params))
            if printed > MAX_PRINTED:
                c.error(
                    o.expr.loc,
                    "the spec is too large: with this output, the generated module"
                    f" would compute {printed} operations (the loss counts twice, an"
                    " output once more per param for its Jacobian); the limit is"
                    f" {MAX_PRINTED}",
                )
                raise _TooBig
        self._check_integers()
        ids = frozenset(self.integers.declared | self.integers.as_ids.keys())
        return Model(
            spec, self.ops, self.inputs, self.params, names, loss, outputs, ids
        )

    def _check_integers(self) -> None:
        """An input is integer ids or a number, never both."""
        found = self.integers
        for name, at in sorted(found.as_number.items()):
            if name in found.declared:
                self.c.error(
                    at,
                    f"`{name}` is declared `dtype: int` (integer ids):"
                    " it cannot be used as a number",
                )
            elif name in found.as_ids:
                ids = found.as_ids[name]
                self.c.error(
                    at,
                    f"`{name}` is used as integer ids (line {ids.line}, column"
                    f" {ids.col}); it cannot also be used as a number",
                )

    def parse(self, definition: Definition) -> Node | None:
        node = self._parse(definition.expr, definition.name)
        size = len(self.ops.graph.nodes)
        if size > MAX_NODES:
            self.c.error(
                definition.expr.loc,
                f"the spec is too large: with this expression it has {size}"
                f" operations; the limit is {MAX_NODES}",
            )
            raise _TooBig
        return node

    def _parse(self, expr: Expr, entry: str) -> Node | None:
        if not isinstance(expr, YScalar):  # a YAML list: the vector [e1, e2, ...]
            items = [self._parse(_element(item), entry) for item in expr.items]
            present = [i for i in items if i is not None]
            if len(present) < len(items):
                return None
            for item, src in zip(present, expr.items, strict=True):
                problem = element_problem(item)
                if problem is not None:
                    self.c.error(src.loc, problem)
                    return None
            try:
                return vector(self.ops, present)
            except ShapeError as e:
                self.c.error(expr.loc, str(e))
                return None
        value = expr.value
        if isinstance(value, float) and not math.isfinite(value):
            self.c.error(expr.loc, f"the number `{value}` is not finite")
            return None
        text = value if isinstance(value, str) else repr(value)
        parser = Parser(
            self.ops, self.scope, self.spec.dims, expr.position, self.integers
        )
        try:
            node = parser.parse(text)
        except ExpressionError as e:
            if e.name is not None and e.name in self.failed:
                return None  # already reported where that name is defined
            message = e.message
            if e.name is not None:
                message = self._undefined(e.name, entry) or message
            self.c.error(expr.position(e.offset), message)
            return None
        self.c.warnings += parser.warnings
        return node

    def _undefined(self, name: str, entry: str) -> str | None:
        """A better message for a name used before (or without) its definition."""
        if name == entry and entry in self.uses:
            return f"`{name}` refers to itself; `define` cannot have cycles"
        later = self.later.get(name)
        if later is None:
            return None
        cycle = self._cycle(name, entry)
        if cycle:
            path = " -> ".join(cycle)
            return f"a cycle in `define`: {path}; an entry may only use the entries above it"
        return (
            f"`{name}` is defined later in `define` (line {later.loc.line});"
            " an entry may only use the entries above it"
        )

    def _cycle(self, start: str, back_to: str) -> list[str] | None:
        """The shortest path of uses from `start` back to `back_to`, as a cycle
        `back_to -> start -> ... -> back_to`, if there is one."""
        parents: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        while frontier:
            following: list[str] = []
            for name in frontier:
                for used in sorted(self.uses.get(name, ())):
                    if used == back_to:
                        path = [name]
                        while path[-1] != start:
                            path.append(parents[path[-1]])
                        return [back_to, *reversed(path), back_to]
                    if used in self.uses and used not in seen:
                        seen.add(used)
                        parents[used] = name
                        following.append(used)
            frontier = following
        return None


def _element(item: YNode) -> Expr:
    """An element of a YAML-list vector: an expression (the spec checked it)."""
    assert isinstance(item, YScalar | YSeq)
    return item


def _names_in(expr: Expr) -> set[str]:
    """The names an expression mentions, or none if it does not parse."""
    if not isinstance(expr, YScalar):
        return set().union(*(_names_in(_element(i)) for i in expr.items))
    if not isinstance(expr.value, str) or len(expr.value) > MAX_LENGTH:
        return set()
    try:
        tree = syntax_tree(expr.value.strip())
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
