"""YAML -> a typed, validated `Spec` (format version 1).

Reads the located node tree from `load.py` and checks everything that can be
checked without looking inside expressions: keys, types, shapes, names, the
optimizer. Expressions stay as located YAML nodes; `model.py` parses them. Every
problem is collected with its location and reported together.
"""

from __future__ import annotations

import difflib
import keyword
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import naming
from .errors import Collector, Diagnostic, Location, SpecError, did_you_mean
from .limits import MAX_DOC, MAX_ENTRIES, MAX_MODULE_NAME, MAX_RANK, MAX_VECTOR
from .load import (
    YMap,
    YNode,
    YScalar,
    YSeq,
    control_character,
    key_text,
    load_yaml_text,
    read_spec_bytes,
    show_text,
)
from .optimizers import DEFAULT, OPTIMIZERS, OptimizerRule

#: A dim is a name (the same name is the same size everywhere) or a positive int.
Dim = str | int
#: A shape: `()` a scalar, `("n",)` a vector, `("N", "n")` a matrix; rank up to 6.
Shape = tuple[Dim, ...]

FORMAT_VERSION = 1
TOP_LEVEL = (
    "gradgen",
    "name",
    "doc",
    "inputs",
    "params",
    "define",
    "loss",
    "outputs",
    "optimizer",
    "dtype",
    "backend",
    "threads",
)
#: The float dtypes a generated module computes in.
DTYPES = ("float64", "float32")
#: The array libraries a generated module is written for: numpy itself, or any
#: library of the Python array API standard (through array-api-compat).
BACKENDS = ("numpy", "array-api")
#: Modules a generated module could hide from its importer (or from itself).
SHADOWED_MODULES = frozenset(
    {*sys.stdlib_module_names, "numpy", "gradgen", "yaml", "jinja2", "sympy"}
)
WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"{port}{i}" for port in ("com", "lpt") for i in range(10)}
)
#: Lines the generated module's docstring reserves for its header (`write.py`).
HEADER_LINE = re.compile(r"(gradgen-version|spec|spec-sha256|body-sha256):")


Expr = YScalar | YSeq  # an expression string, or a YAML list of them (a vector)


@dataclass(frozen=True)
class Declaration:
    name: str
    shape: Shape
    loc: Location
    dtype: str = "float"  # "int": an input of integer ids (indices, class labels)


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
    dtype: str = "float64"  # what the module computes in: float64 or float32
    backend: str = "numpy"  # what the module is written against: numpy or array-api
    threads: bool = False  # loss_and_gradients over row chunks on threads
    batch: str | None = None  # the dim it splits, when `threads:` names one
    threads_at: Location | None = None  # where `threads:` is written


@dataclass(frozen=True)
class Validated:
    """A spec as far as it is valid, and the problems found in it.

    Expressions are checked by the next stage (`model.build`), which reports their
    problems together with these: a user sees a bad dim and a misspelt function in
    one run.
    """

    spec: Spec | None  # the valid parts; None: the file is not even a mapping
    diagnostics: tuple[Diagnostic, ...]
    #: declared entries that failed validation: expressions that use them are not
    #: checked (their problem is reported already); None: no expression can be
    unchecked: frozenset[str] | None


def read_spec(
    path: Path,
    display: str | None = None,
    name: str | None = None,
    data: bytes | None = None,
) -> Spec:
    """Load and validate a spec file, for tools that read its declarations; raises
    `SpecError` with the spec's problems (its expressions are `model.build`'s).
    `name` overrides the module name; `data`, the file's bytes if already read."""
    shown = display or str(path)
    if data is None:
        data = read_spec_bytes(path, shown)
    checked = validate(load_yaml_text(data, shown), shown, path.stem, name)
    if checked.diagnostics or checked.spec is None:
        raise SpecError(list(checked.diagnostics))
    return checked.spec


def validate(
    root: YNode,
    path: str,
    stem: str,
    name_override: str | None = None,
    backend_override: str | None = None,
) -> Validated:
    """The spec as far as it is valid, and its problems; `backend_override` (the
    command line's or the project's `backend`) replaces the spec's own."""
    c = Collector()
    start = Location(path, 1, 1)
    if not isinstance(root, YMap):
        c.error(
            root.loc,
            f"a spec is a mapping of keys ({', '.join(TOP_LEVEL)}), not {_kind(root)}",
        )
        return Validated(None, tuple(c.diagnostics), None)
    misspelt: set[str] = set()  # keys that an unknown key probably meant
    for key, _ in root.entries:
        text = key_text(key)
        if text not in TOP_LEVEL:
            close = difflib.get_close_matches(text, TOP_LEVEL, n=1, cutoff=0.6)
            misspelt.update(close)
            hint = (
                did_you_mean(text, TOP_LEVEL)
                or f" (the keys are {', '.join(TOP_LEVEL)})"
            )
            c.error(key.loc, f"unknown key `{show_text(text)}`{hint}")

    _version(root, c, start, misspelt="gradgen" in misspelt)
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
    if (
        loss_node is None
        and root.get("outputs") is None
        and not {"loss", "outputs"} & misspelt
    ):
        c.error(start, "a spec needs a `loss`, `outputs`, or both")
    params_node = root.get("params")
    if params_node is None and "params" not in misspelt:
        c.error(start, "the spec has no `params`: nothing to differentiate")
    elif params_node is not None and _is_empty(params_node):
        c.error(params_node.loc, "`params` is empty: nothing to differentiate")
    optimizer = _optimizer(root.get("optimizer"), c, start)
    backend = _backend(root.get("backend"), c)
    if backend_override is not None:
        backend = backend_override
    _check_names(
        inputs, params, define, outputs, dims, OPTIMIZERS[optimizer.rule], c, backend
    )
    spec = Spec(
        path,
        name,
        doc,
        inputs,
        params,
        define,
        loss,
        outputs,
        optimizer,
        dims,
        start,
        _dtype(root.get("dtype"), c),
        backend,
        *_threads(root.get("threads"), dims, c),
    )
    unchecked = _unchecked(root, spec) if c else frozenset()
    return Validated(spec, tuple(c.diagnostics), unchecked)


def _dtype(node: YNode | None, c: Collector) -> str:
    """`dtype: float32` (or float64, the default)."""
    return _choice(node, c, "dtype", DTYPES)


def _backend(node: YNode | None, c: Collector) -> str:
    """`backend: array-api` (or numpy, the default)."""
    return _choice(node, c, "backend", BACKENDS)


def _choice(
    node: YNode | None, c: Collector, key: str, choices: tuple[str, ...]
) -> str:
    """One of `choices` (the first by default), or a located error."""
    if node is None:
        return choices[0]
    value = node.value if isinstance(node, YScalar) else None
    if value not in choices:
        shown = show_text(str(value)) if isinstance(value, str) else _kind(node)
        c.error(node.loc, f"`{key}` is {' or '.join(choices)}, not {shown}")
        return choices[0]
    return str(value)


def _threads(
    node: YNode | None, dims: dict[str, Location], c: Collector
) -> tuple[bool, str | None, Location | None]:
    """`threads: true` (false, the default), or the batch dim to split: `threads: N`."""
    if node is None:
        return False, None, None
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, bool):
        return value, None, node.loc
    if isinstance(value, str) and value in dims:
        return True, value, node.loc
    shown = show_text(str(value)) if isinstance(value, str) else _kind(node)
    known = f" ({', '.join(dims)})" if dims else ""
    c.error(
        node.loc,
        f"`threads` is true, false or the batch dim to split{known}, not {shown}",
    )
    return False, None, node.loc


def _is_empty(node: YNode) -> bool:
    """`params:` with nothing under it, or `params: {}`."""
    if isinstance(node, YScalar):
        return node.value is None
    return isinstance(node, YMap) and not node.entries


def _entries(node: YNode) -> tuple[tuple[YScalar, YNode], ...]:
    return node.entries if isinstance(node, YMap) else ()


def _unchecked(root: YMap, spec: Spec) -> frozenset[str] | None:
    """The entries declared but left out of `spec` (they failed validation), whose
    users' expressions cannot be checked; None when the names in scope are unknown
    (`inputs` or `params` is not a mapping)."""
    declarations = [root.get(k) for k in ("inputs", "params")]
    if any(
        s is not None and not (isinstance(s, YMap) or _is_empty(s))
        for s in declarations
    ):
        return None
    # Names under a misspelt key (`parms:`) were meant as declarations too.
    sections = ["inputs", "params", "define", "outputs"]
    sections += [k for k in root.keys() if k not in TOP_LEVEL]
    declared = {
        key_text(k)
        for section in sections
        for k, _ in _entries(root.get(section) or YMap((), spec.loc))
    }
    entries: tuple[Declaration | Definition, ...] = (
        *spec.inputs,
        *spec.params,
        *spec.define,
        *spec.outputs,
    )
    return frozenset(declared - {e.name for e in entries})


# -- sections --------------------------------------------------------------------------


def _kind(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    if node.value is None:
        return "empty"
    if isinstance(node.value, bool):
        kind = "the boolean"
    elif isinstance(node.value, str):
        kind = "the string"
    else:
        kind = "the integer" if isinstance(node.value, int) else "the number"
    return f"{kind} `{show_text(key_text(node))}`"


def _version(root: YMap, c: Collector, start: Location, misspelt: bool) -> None:
    """Check `gradgen: 1`; `misspelt`: an unknown key probably meant it."""
    node = root.get("gradgen")
    if node is None and misspelt:
        return
    if node is None:
        c.error(
            start,
            f"missing `gradgen: {FORMAT_VERSION}`: the spec format version is required",
        )
    elif not (
        isinstance(node, YScalar)
        and type(node.value) is int
        and node.value == FORMAT_VERSION
    ):
        shown = (
            f"`{show_text(key_text(node))}`"
            if isinstance(node, YScalar) and node.value is not None
            else _kind(node)
        )
        c.error(
            node.loc,
            f"unsupported spec format version {shown};"
            f" this gradgen reads version {FORMAT_VERSION} (`gradgen: {FORMAT_VERSION}`)",
        )


def _identifier_problem(name: str) -> str | None:
    if not name.isidentifier() or not name.isascii():
        return "is not a Python identifier"
    if keyword.iskeyword(name):  # soft keywords (match, case) are fine names
        return "is a Python keyword"
    if name.startswith("_"):
        return "starts with `_`, which gradgen reserves for its own names"
    return None


def _module_name(
    root: YMap, c: Collector, stem: str, override: str | None, start: Location
) -> str:
    node = root.get("name")
    hint = ""
    if override is not None:
        name, loc, hint = override, start, " (the `name` given for this spec)"
    elif node is None:
        name, loc, hint = stem, start, " (the file's name; set `name:` in the spec)"
    elif isinstance(node, YScalar) and isinstance(node.value, str):
        name, loc = node.value, node.loc
    else:
        c.error(node.loc, f"`name` must be a string, not {_kind(node)}")
        return stem
    problem = _identifier_problem(name)
    if problem is None and len(name) > MAX_MODULE_NAME:
        problem = f"is {len(name)} characters long; the limit is {MAX_MODULE_NAME}"
    elif problem is None and name in sys.stdlib_module_names:
        problem = f"would shadow the standard library module `{name}`"
    elif problem is None and name in SHADOWED_MODULES:
        problem = f"would shadow the installed package `{name}`"
    elif problem is None and name.lower() in WINDOWS_DEVICES:
        problem = "is a device name on Windows, where no file can have it"
    if problem:
        c.error(loc, f"module name `{show_text(name)}` {problem}{hint}")
    return name


def _doc(root: YMap, c: Collector) -> str:
    node = root.get("doc")
    if node is None:
        return ""
    if not isinstance(node, YScalar) or not isinstance(node.value, str):
        c.error(node.loc, f"`doc` must be a string, not {_kind(node)}")
        return ""
    doc = node.value.strip()
    if len(doc) > MAX_DOC:
        c.error(node.loc, f"`doc` is {len(doc)} characters; the limit is {MAX_DOC}")
        return ""
    bad = control_character(node.value)
    if bad is not None:
        c.error(
            node.position(bad),
            f"`doc` contains the control character U+{ord(node.value[bad]):04X};"
            " the generated module's docstring cannot hold it",
        )
    for line in doc.splitlines():
        header = HEADER_LINE.match(line)
        if header:
            at = node.value.find(line)
            c.error(
                node.position(at) if at >= 0 else node.loc,
                f"a `doc` line may not start with `{header.group()}`: the generated"
                " module's header uses such lines (indent it, or reword it)",
            )
            break
    return doc


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
        c.error(
            node.loc,
            f"`{key}` has {len(node.entries)} entries; the limit is {MAX_ENTRIES}",
        )
        return None
    return node


def _declarations(
    root: YMap, key: str, c: Collector, dims: dict[str, Location]
) -> tuple[Declaration, ...]:
    section = _section(root, key, c)
    if section is None:
        return ()
    out = []
    for k, value in section.entries:
        name = _entry_name(k, key, c)
        dtype: str | None = "float"
        if isinstance(value, YMap):  # {shape: [N], dtype: int}
            dtype, value = _typed(value, key, c)
        shape = _shape(value, c, dims)
        if name is not None and shape is not None and dtype is not None:
            out.append(Declaration(name, shape, k.loc, dtype))
    return tuple(out)


def _typed(node: YMap, key: str, c: Collector) -> tuple[str | None, YNode]:
    """`{shape: [N], dtype: int}`: the dtype (None if invalid) and the shape node."""
    dtype: str | None = "float"
    for k, _ in node.entries:
        text = key_text(k)
        if text not in ("shape", "dtype"):
            c.error(
                k.loc,
                f"unknown key `{show_text(text)}`{did_you_mean(text, ['shape', 'dtype'])}"
                " (a declaration is a shape, or `{shape: [...], dtype: int}`)",
            )
            dtype = None
    given = node.get("dtype")
    if given is not None:
        value = given.value if isinstance(given, YScalar) else None
        allowed = ("int", "float") if key == "inputs" else ("float",)
        if value not in allowed:
            c.error(
                given.loc,
                f"`dtype` in `{key}` is {' or '.join(allowed)}"
                + (" (params are trained: they are floats)" if key == "params" else ""),
            )
            dtype = None
        else:
            dtype = str(value)
    shape = node.get("shape")
    if shape is None:
        c.error(
            node.loc,
            "a declaration mapping needs a `shape`: `{shape: [N], dtype: int}`",
        )
        return None, YSeq((), node.loc, True)
    return dtype, shape


def _shape(node: YNode, c: Collector, dims: dict[str, Location]) -> Shape | None:
    if not isinstance(node, YSeq):
        c.error(
            node.loc,
            f"a shape is a list of dims like `[N, n]` or `[]`, not {_kind(node)}",
        )
        return None
    if len(node.items) > MAX_RANK:
        c.error(
            node.loc,
            f"shapes have rank 0 to {MAX_RANK}; this one has rank {len(node.items)}",
        )
        return None
    shape: list[str | int] = []
    for item in node.items:
        problem = _dim_problem(item)
        if problem is not None:
            c.error(item.loc, problem)
            return None
        assert isinstance(item, YScalar) and isinstance(item.value, str | int)
        if isinstance(item.value, str):
            dims.setdefault(item.value, item.loc)
        shape.append(item.value)
    return tuple(shape)


def _dim_problem(item: YNode) -> str | None:
    """Why `item` is not a dim (a positive integer or a name), or None."""
    if not isinstance(item, YScalar):
        return f"a dim is a name or a positive integer, not {_kind(item)}"
    v = item.value
    if type(v) is int:
        return None if v >= 1 else f"a dim must be a positive integer, not {v}"
    if isinstance(v, str):
        problem = _identifier_problem(v)
        return None if problem is None else f"dim `{show_text(v)}` {problem}"
    return f"a dim is a name or a positive integer, not {_kind(item)}"


def _entry_name(key: YScalar, section: str, c: Collector) -> str | None:
    if not isinstance(key.value, str):
        c.error(
            key.loc,
            f"`{show_text(key_text(key))}` in `{section}` is not a name"
            " (names are Python identifiers)",
        )
        return None
    problem = _identifier_problem(key.value)
    if problem:
        c.error(key.loc, f"`{show_text(key.value)}` in `{section}` {problem}")
        return None
    return key.value


def _expression(node: YNode, c: Collector, what: str) -> Expr | None:
    if isinstance(node, YSeq):
        if not node.items:
            c.error(node.loc, f"`{what}` is an empty list")
            return None
        if len(node.items) > MAX_VECTOR:
            c.error(
                node.loc,
                f"`{what}` is a list of {len(node.items)} elements;"
                f" the limit is {MAX_VECTOR}",
            )
            return None
        for item in node.items:
            if _expression(item, c, what) is None:
                return None
        return node
    if isinstance(node, YScalar) and node.value is None:
        c.error(node.loc, f"`{what}` is empty; it needs an expression")
        return None
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
    default = Optimizer(DEFAULT, tuple(OPTIMIZERS[DEFAULT].defaults().items()), start)
    if node is None:
        return default
    if isinstance(node, YScalar) and isinstance(node.value, str):
        node = YMap(((YScalar("rule", node.loc), node),), node.loc)  # `optimizer: adam`
    if not isinstance(node, YMap):
        c.error(
            node.loc,
            "`optimizer` must be a mapping like `{rule: sgd, lr: 0.01}`,"
            f" not {_kind(node)}",
        )
        return default
    rules = ", ".join(OPTIMIZERS)
    rule_node = node.get("rule")
    rule = DEFAULT
    if rule_node is not None:
        value = rule_node.value if isinstance(rule_node, YScalar) else None
        if isinstance(value, str) and value in OPTIMIZERS:
            rule = value
        elif isinstance(value, str):
            c.error(
                rule_node.loc,
                f"unknown optimizer rule `{show_text(value)}`"
                f"{did_you_mean(value, OPTIMIZERS)}; the rules are {rules}",
            )
        else:
            c.error(
                rule_node.loc,
                f"the optimizer `rule` is one of {rules}, not {_kind(rule_node)}",
            )
    hyper = OPTIMIZERS[rule].defaults()
    bounds = {h.name: h.bound for h in OPTIMIZERS[rule].hyperparameters}
    for key, given in node.entries:
        k = key_text(key)
        if k == "rule":
            continue
        if k not in hyper:
            known = ", ".join(hyper)
            c.error(
                key.loc,
                f"`{show_text(k)}` is not a hyperparameter of `{rule}`"
                f"{did_you_mean(k, hyper)}; it takes {known}",
            )
            continue
        number = _number(given)
        if number is None:
            c.error(given.loc, f"`{k}` must be a finite number, not {_kind(given)}")
        elif bounds[k] == "positive" and number <= 0:
            c.error(given.loc, f"`{k}` must be positive, not {number:g}")
        elif bounds[k] == "fraction" and not 0 <= number < 1:
            c.error(given.loc, f"`{k}` must be in [0, 1), not {number:g}")
        else:
            hyper[k] = number
    return Optimizer(rule, tuple(hyper.items()), node.loc)


def _check_names(
    inputs: tuple[Declaration, ...],
    params: tuple[Declaration, ...],
    define: tuple[Definition, ...],
    outputs: tuple[Definition, ...],
    dims: dict[str, Location],
    optimizer: OptimizerRule,
    c: Collector,
    backend: str = "numpy",
) -> None:
    """Names must be unique and must not clash with what the generated code uses:
    an input is an argument of the optimizer's `step` too."""
    generated: dict[str, str] = {}  # module-level name -> the output it is for
    for o in outputs:
        for made in sorted(naming.generated_for([o.name])):
            other = generated.setdefault(made, o.name)
            if other != o.name:
                c.error(
                    o.loc,
                    f"outputs `{other}` and `{o.name}` would both generate `{made}`;"
                    " rename one of them",
                )
    seen: dict[str, Location] = {}
    entries: tuple[Declaration | Definition, ...] = (
        *inputs,
        *params,
        *define,
        *outputs,
    )
    for entry in entries:
        name, loc = entry.name, entry.loc
        if name in seen:
            c.error(loc, f"`{name}` is already defined at line {seen[name].line}")
            continue
        seen[name] = loc
        step = optimizer if entry in inputs else None
        if (
            not _clashes(name, f"`{name}`", loc, generated, c, step, backend)
            and name in dims
        ):
            c.error(loc, f"`{name}` is also used as a dim (line {dims[name].line})")
    for dim, loc in dims.items():
        _clashes(dim, f"dim `{dim}`", loc, generated, c, backend=backend)


def _clashes(
    name: str,
    shown: str,
    loc: Location,
    generated: dict[str, str],
    c: Collector,
    step: OptimizerRule | None = None,
    backend: str = "numpy",
) -> bool:
    """Report `name` if the generated module already uses it; True if it did."""
    problem = naming.clash(name, step, backend)
    if problem is not None:
        c.error(loc, f"{shown} {problem}")
    elif name in generated:
        c.error(
            loc,
            f"{shown} clashes with the name generated for output `{generated[name]}`",
        )
    else:
        return False
    return True
