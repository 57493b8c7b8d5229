"""YAML -> a typed, validated `Spec` (format version 1).

Reads the located node tree from `load.py` and checks everything that can be
checked without looking inside expressions: keys, types, shapes, names, the
optimizer. Expressions stay as located YAML nodes; `model.py` parses them. Every
problem is collected with its location and reported together.
"""

from __future__ import annotations

import keyword
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from . import naming
from .errors import Collector, Location, SpecError, did_you_mean
from .graph import Shape
from .load import YMap, YNode, YScalar, YSeq, load_yaml

FORMAT_VERSION = 1
TOP_LEVEL = ("gradgen", "name", "doc", "inputs", "params", "define", "loss", "outputs", "optimizer")
MAX_RANK = 2
MAX_ENTRIES = 1000  # names in one section
MAX_DOC = 10_000  # characters

#: Optimizer rules and their hyperparameters with defaults, in signature order.
OPTIMIZERS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "beta": 0.9},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}

Expr = YScalar | YSeq  # an expression string, or a YAML list of them (a vector)


@dataclass(frozen=True)
class Declaration:
    name: str
    shape: Shape
    loc: Location


@dataclass(frozen=True)
class Definition:
    name: str
    expr: Expr
    loc: Location


@dataclass(frozen=True)
class Optimizer:
    rule: str
    hyper: tuple[tuple[str, float], ...]  # in signature order, defaults filled in
    loc: Location


@dataclass(frozen=True)
class Spec:
    path: str  # as displayed in messages
    name: str
    doc: str
    inputs: tuple[Declaration, ...]
    params: tuple[Declaration, ...]
    define: tuple[Definition, ...]
    loss: Definition | None
    outputs: tuple[Definition, ...]
    optimizer: Optimizer
    dims: dict[str, Location]
    loc: Location


def read_spec(path: Path, display: str | None = None, name: str | None = None) -> Spec:
    """Load and validate a spec file; `name` overrides the module name."""
    shown = display or str(path)
    return validate(load_yaml(path, shown), shown, path.stem, name)


def validate(root: YNode, path: str, stem: str, name_override: str | None = None) -> Spec:
    c = Collector()
    start = Location(path, 1, 1)
    if not isinstance(root, YMap):
        c.error(root.loc, f"a spec is a mapping of keys ({', '.join(TOP_LEVEL)}), not {_kind(root)}")
        c.raise_if_any()
        raise AssertionError  # unreachable
    for key, _ in root.entries:
        text = key.value if isinstance(key.value, str) else repr(key.value)
        if text not in TOP_LEVEL:
            c.error(key.loc, f"unknown key `{text}`{did_you_mean(str(text), TOP_LEVEL)}")

    _version(root, c, start)
    name = _module_name(root, c, stem, name_override, start)
    doc = _doc(root, c)
    dims: dict[str, Location] = {}
    inputs = _declarations(root, "inputs", c, dims)
    params = _declarations(root, "params", c, dims)
    define = _definitions(root, "define", c)
    outputs = _definitions(root, "outputs", c)
    loss_node = root.get("loss")
    loss = None
    if loss_node is not None:
        loss_expr = _expression(loss_node, c, "loss")
        if loss_expr is not None:
            loss = Definition("loss", loss_expr, loss_node.loc)
    if loss_node is None and root.get("outputs") is None:
        c.error(start, "a spec needs a `loss`, `outputs`, or both")
    if root.get("params") is None or (not params and not c):
        where = root.get("params")
        c.error(where.loc if where else start, "the spec has nothing to differentiate: `params` is empty")
    optimizer = _optimizer(root.get("optimizer"), c, start)
    _check_names(inputs, params, define, outputs, dims, c)
    c.raise_if_any()
    return Spec(path, name, doc, inputs, params, define, loss, outputs, optimizer, dims, start)


# -- sections --------------------------------------------------------------------------


def _kind(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    if node.value is None:
        return "empty"
    return f"{type(node.value).__name__} `{node.value}`"


def _version(root: YMap, c: Collector, start: Location) -> None:
    node = root.get("gradgen")
    if node is None:
        c.error(start, f"missing `gradgen: {FORMAT_VERSION}`: the spec format version is required")
    elif not (isinstance(node, YScalar) and type(node.value) is int and node.value == FORMAT_VERSION):
        shown = node.value if isinstance(node, YScalar) else _kind(node)
        c.error(
            node.loc,
            f"unsupported spec format version `{shown}`; this gradgen reads version {FORMAT_VERSION}",
        )


def _identifier_problem(name: str) -> str | None:
    if not name.isidentifier() or not name.isascii():
        return "is not a Python identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if name.startswith("_"):
        return "starts with `_`, which gradgen reserves for its own names"
    return None


def _module_name(root: YMap, c: Collector, stem: str, override: str | None, start: Location) -> str:
    node = root.get("name")
    if override is not None:
        name, loc = override, start
    elif node is None:
        name, loc = stem, start
    elif isinstance(node, YScalar) and isinstance(node.value, str):
        name, loc = node.value, node.loc
    else:
        c.error(node.loc, f"`name` must be a string, not {_kind(node)}")
        return stem
    problem = _identifier_problem(name)
    if problem is None and (name in sys.stdlib_module_names or name in {"numpy", "gradgen"}):
        problem = "would shadow an installed module of the same name"
    if problem:
        hint = "" if node is not None else " (set `name:` in the spec)"
        c.error(loc, f"module name `{name}` {problem}{hint}")
    return name


def _doc(root: YMap, c: Collector) -> str:
    node = root.get("doc")
    if node is None:
        return ""
    if not isinstance(node, YScalar) or not isinstance(node.value, str):
        c.error(node.loc, f"`doc` must be a string, not {_kind(node)}")
        return ""
    if len(node.value) > MAX_DOC:
        c.error(node.loc, f"`doc` is {len(node.value)} characters; the limit is {MAX_DOC}")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in node.value):
        c.error(node.loc, "`doc` contains control characters")
    return node.value.strip()


def _section(root: YMap, key: str, c: Collector) -> YMap | None:
    node = root.get(key)
    if node is None:
        return None
    if isinstance(node, YScalar) and node.value is None:
        return YMap((), node.loc)  # `params:` with nothing under it
    if not isinstance(node, YMap):
        c.error(node.loc, f"`{key}` must be a mapping of names, not {_kind(node)}")
        return None
    if len(node.entries) > MAX_ENTRIES:
        c.error(node.loc, f"`{key}` has {len(node.entries)} entries; the limit is {MAX_ENTRIES}")
        return None
    return node


def _declarations(root: YMap, key: str, c: Collector, dims: dict[str, Location]) -> tuple[Declaration, ...]:
    section = _section(root, key, c)
    if section is None:
        return ()
    out = []
    for k, value in section.entries:
        name = _entry_name(k, key, c)
        shape = _shape(value, c, dims)
        if name is not None and shape is not None:
            out.append(Declaration(name, shape, k.loc))
    return tuple(out)


def _shape(node: YNode, c: Collector, dims: dict[str, Location]) -> Shape | None:
    if not isinstance(node, YSeq):
        c.error(node.loc, f"a shape is a list of dims like `[N, n]` or `[]`, not {_kind(node)}")
        return None
    if len(node.items) > MAX_RANK:
        c.error(node.loc, f"shapes have rank 0, 1 or 2; this one has rank {len(node.items)}")
        return None
    shape: list[str | int] = []
    for item in node.items:
        if not isinstance(item, YScalar):
            c.error(item.loc, f"a dim is a name or a positive integer, not {_kind(item)}")
            return None
        v = item.value
        if type(v) is int:
            if v < 1:
                c.error(item.loc, f"a dim must be a positive integer, got {v}")
                return None
            shape.append(v)
        elif isinstance(v, str) and _identifier_problem(v) is None:
            dims.setdefault(v, item.loc)
            shape.append(v)
        else:
            c.error(item.loc, f"a dim is a name or a positive integer, not {_kind(item)}")
            return None
    return tuple(shape)


def _entry_name(key: YScalar, section: str, c: Collector) -> str | None:
    if not isinstance(key.value, str):
        c.error(key.loc, f"`{key.value}` in `{section}` is not a name")
        return None
    problem = _identifier_problem(key.value)
    if problem:
        c.error(key.loc, f"`{key.value}` in `{section}` {problem}")
        return None
    return key.value


def _expression(node: YNode, c: Collector, what: str) -> Expr | None:
    if isinstance(node, YSeq):
        if not node.items:
            c.error(node.loc, f"`{what}` is an empty list")
            return None
        for item in node.items:
            if _expression(item, c, what) is None:
                return None
        return node
    if isinstance(node, YScalar) and type(node.value) in (str, int, float):
        return node
    c.error(node.loc, f"`{what}` must be an expression, not {_kind(node)}")
    return None


def _definitions(root: YMap, key: str, c: Collector) -> tuple[Definition, ...]:
    section = _section(root, key, c)
    if section is None:
        return ()
    out = []
    for k, value in section.entries:
        name = _entry_name(k, key, c)
        expr = _expression(value, c, name or key)
        if name is not None and expr is not None:
            out.append(Definition(name, expr, k.loc))
    return tuple(out)


def _number(node: YNode) -> float | None:
    if not isinstance(node, YScalar) or isinstance(node.value, bool):
        return None
    v = node.value
    if isinstance(v, str):  # YAML 1.1 reads `1e-8` (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            return None
    if not isinstance(v, int | float):
        return None
    try:
        value = float(v)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _optimizer(node: YNode | None, c: Collector, start: Location) -> Optimizer:
    if node is None:
        return Optimizer("sgd", tuple(OPTIMIZERS["sgd"].items()), start)
    if isinstance(node, YScalar) and isinstance(node.value, str):
        node = YMap(((YScalar("rule", node.loc), node),), node.loc)  # `optimizer: adam`
    if not isinstance(node, YMap):
        c.error(node.loc, f"`optimizer` must be a mapping like `{{rule: sgd, lr: 0.01}}`, not {_kind(node)}")
        return Optimizer("sgd", tuple(OPTIMIZERS["sgd"].items()), start)
    rule_node = node.get("rule")
    rule = "sgd"
    if rule_node is not None:
        value = rule_node.value if isinstance(rule_node, YScalar) else None
        if value not in OPTIMIZERS:
            c.error(
                rule_node.loc,
                f"unknown optimizer rule `{value}`{did_you_mean(str(value), OPTIMIZERS)};"
                f" the rules are {', '.join(OPTIMIZERS)}",
            )
        else:
            rule = str(value)
    hyper = dict(OPTIMIZERS[rule])
    for key, value in node.entries:
        k = str(key.value)
        if k == "rule":
            continue
        if k not in hyper:
            known = ", ".join(OPTIMIZERS[rule])
            c.error(key.loc, f"`{k}` is not a hyperparameter of `{rule}`{did_you_mean(k, hyper)} (it takes {known})")
            continue
        number = _number(value)
        if number is None:
            c.error(value.loc, f"`{k}` must be a finite number, not {_kind(value)}")
        elif k in ("lr", "eps") and number <= 0:
            c.error(value.loc, f"`{k}` must be positive, got {number:g}")
        elif k.startswith("beta") and not 0 <= number < 1:
            c.error(value.loc, f"`{k}` must be in [0, 1), got {number:g}")
        else:
            hyper[k] = number
    return Optimizer(rule, tuple(hyper.items()), node.loc)


def _check_names(
    inputs: tuple[Declaration, ...],
    params: tuple[Declaration, ...],
    define: tuple[Definition, ...],
    outputs: tuple[Definition, ...],
    dims: dict[str, Location],
    c: Collector,
) -> None:
    seen: dict[str, Location] = {}
    module_level = naming.generated_for(o.name for o in outputs)
    for entry in (*inputs, *params, *define, *outputs):
        name, loc = entry.name, entry.loc
        if name in seen:
            c.error(loc, f"`{name}` is already defined at line {seen[name].line}")
            continue
        seen[name] = loc
        if name in naming.RESERVED:
            c.error(loc, f"`{name}` is reserved: the generated module uses this name")
        elif name in module_level:
            c.error(loc, f"`{name}` clashes with a name generated for `outputs`")
        elif name in dims:
            c.error(loc, f"`{name}` is also used as a dim (line {dims[name].line})")
    for dim, loc in dims.items():
        if dim in naming.RESERVED:
            c.error(loc, f"dim `{dim}` is reserved: the generated module uses this name")


def spec_error(loc: Location, message: str) -> SpecError:
    c = Collector()
    c.error(loc, message)
    return SpecError(c.diagnostics)
