"""The Jinja environment, and the context handed to the templates.

The program arrives lowered (`lower.py`) and printed (`printer.py`); rendering only
turns it into template context, in Python: the functions' signatures, docstrings,
return expressions and the helpers they call. The templates only lay that text out. Rendering is strict (`StrictUndefined`): a missing field is
an error, never an empty string.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import jinja2

from . import naming
from .explanation import Diagram, Explanation, Result
from .graph import Exponent, ancestors, attr
from .load import YNode, YScalar, YSeq
from .lower import Program
from .model import Model
from .printer import DTYPE_FIELDS, XP_DTYPE_FIELDS, Body
from .rules import CONVENTIONS, number
from .shapes import show


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


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja environment, built once: it compiles each template once."""
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
    program: Program,
    bodies: Mapping[str, Body],
    explained: Explanation,
    *,
    version: str,
    spec_rel: str,
    spec_sha256: str,
    placeholder: str,
) -> str:
    """The module's text from the lowered `program` and its printed `bodies` (by
    kernel name); `placeholder` stands where sealing will write the body digest.
    The gradient functions' docstrings state each gradient's closed form, from the
    explanation."""
    spec = model.spec
    xp = spec.backend == "array-api"
    # numpy: float and np.ndarray, loss values as Python floats; the array API:
    # `Array` (any library's array), the loss a 0-d array (a lazy library's stays lazy)
    array = "Array" if xp else "np.ndarray"
    number_ = "Array" if xp else "float"
    annotations = {
        n: (number_ if node.rank == 0 else array)
        for n, node in {**model.inputs, **model.params}.items()
    }

    def scalar(value: str) -> str:
        return value if xp else f"float({value})"

    def arguments(names: Sequence[str]) -> tuple[Argument, ...]:
        return tuple(Argument(n, annotations[n]) for n in names)

    all_args = [*model.inputs, *model.params]
    functions: list[Function] = []
    helpers: set[str] = set()
    if program.loss is not None and program.loss_and_gradients is not None:
        forward = bodies[program.loss.name]
        backward = bodies[program.loss_and_gradients.name]
        loss_value, *grads = backward.results
        functions += [
            Function(
                "loss",
                arguments(all_args),
                number_,
                "The loss.",
                forward,
                scalar(forward.results[0]),
            ),
            Function(
                "loss_and_gradients",
                arguments(all_args),
                f"tuple[{number_}, Gradients]",
                _closed_forms(
                    "The loss and its gradient with respect to every param.",
                    explained.gradients,
                ),
                backward,
                f"{scalar(loss_value)}, {_call('Gradients', list(model.params), grads)}",
            ),
        ]
        helpers |= forward.helpers | backward.helpers
    outputs: list[Output] = []
    for out in program.outputs:
        node = model.outputs[out.name]
        value, jac = bodies[out.value.name], bodies[out.jacobian.name]
        helpers |= value.helpers | jac.helpers
        shape = show(node.shape)
        type_name = naming.jacobian_type(out.name)
        outputs.append(
            Output(
                out.name,
                shape,
                Function(
                    out.name,
                    arguments(out.value.args),
                    array if node.rank else number_,
                    f"The output `{out.name}`, shape {shape}.",
                    value,
                    value.results[0] if node.rank else scalar(value.results[0]),
                ),
                Function(
                    out.jacobian.name,
                    arguments(out.jacobian.args),
                    type_name,
                    _closed_forms(
                        f"The Jacobians of `{out.name}`: shape {shape} + each"
                        " param's shape.",
                        [r for r in explained.jacobians if r.of == out.name],
                    ),
                    jac,
                    _call(type_name, list(out.params), list(jac.results)),
                ),
                type_name,
                out.params,
            )
        )
    helper_templates = [
        ("xp_helper_" if xp else "helper_") + h for h in sorted(helpers)
    ]
    bodies_text = [t for b in bodies.values() for t in (*b.lines, *b.results)]
    # array_namespace always; `device` and `is_writeable_array` where the code or a
    # helper calls them
    sources = (
        *bodies_text,
        *(_template_source(h + ".py.jinja") for h in helper_templates),
    )
    imports = ["array_namespace"] + [
        name
        for name in ("device", "is_writeable_array")
        if any(f"{name}(" in t for t in sources)
    ]
    context = {
        "version": version,
        "spec_rel": spec_rel,
        "spec_sha256": spec_sha256,
        "placeholder": placeholder,
        "doc": spec.doc,
        "summary": _summary(model),
        "conventions": conventions(model),
        "gradient_doc": _closed_forms(
            "The gradient of the loss with respect to every param.",
            explained.gradients,
        ),
        "inputs": list(model.inputs),
        "params": [Argument(p, annotations[p]) for p in model.params],
        "data_args": arguments(list(model.inputs)),
        "all_args": arguments(all_args),
        "param_shapes": {p: show(n.shape) for p, n in model.params.items()},
        "has_loss": program.loss is not None,
        "functions": functions,
        "outputs": outputs,
        "helpers": helper_templates,
        "imports": ", ".join(imports),
        "flat": _flat(model),
        "float": (XP_DTYPE_FIELDS if xp else DTYPE_FIELDS)[model.spec.dtype]["float"],
        "xp": xp,
        "ns": "xp" if xp else "np",
        "array": array,
        "number": number_,
        "optimizer": spec.optimizer.rule,
        "hyper": [(k, number(v)) for k, v in spec.optimizer.hyper],
    }
    return environment().get_template("module.py.jinja").render(context)


def _flat(model: Model) -> dict[str, object]:
    """What `pack`, `unpack` and `loss_and_gradient_flat` need: each param's slice of
    the flat vector, and the dims its shapes use (read from the inputs where one
    has them, else keyword-only arguments)."""
    xp = model.spec.backend == "array-api"
    dims: list[str] = []
    fields: list[dict[str, str]] = []
    start = "0"
    for name, node in model.params.items():
        size = " * ".join(str(d) for d in node.shape) or "1"
        dims += [
            d for d in dict.fromkeys(node.shape) if isinstance(d, str) and d not in dims
        ]
        end = size if start == "0" else f"{start} + {size}"
        if xp and node.rank == 0:
            value = f"xp.asarray(theta[{start}], copy=True)"
        elif xp:
            value = (
                f"xp.asarray(xp.reshape(theta[{start}:{end}],"
                f" {show_tuple(node.shape)}), copy=True)"
            )
        elif node.rank == 0:
            value = f"float(theta[{start}])"
        else:
            value = f"theta[{start}:{end}].reshape({show_tuple(node.shape)}).copy()"
        fields.append({"name": name, "value": value})
        start = end
    sources = model.dim_sources(list(model.inputs))
    return {
        "dims": dims,
        "size": start,
        "fields": fields,
        "extra": [d for d in dims if d not in sources],
        "lines": [
            (
                f"{d} = {sources[d][0]}.shape[{sources[d][1]}]"
                if xp
                else f"{d} = np.shape({sources[d][0]})[{sources[d][1]}]"
            )
            for d in dims
            if d in sources
        ],
    }


def show_tuple(shape: tuple[object, ...]) -> str:
    """A shape as the Python tuple that builds it: (n,), (n, h)."""
    return (
        "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    )


def _closed_forms(summary: str, results: Sequence[Result]) -> str:
    """A docstring: the summary, then one line per derivative in closed form."""
    if not results:
        return summary
    lines = [f"    {r.name} = {r.closed.text}" for r in results]
    text = "\n".join([summary, "", *lines, "    "])
    assert '"""' not in text and "\\" not in text, text
    return text


def conventions(model: Model) -> list[tuple[str, str]]:
    """The conventions at non-differentiable points (`rules.CONVENTIONS`) of the
    ops the model uses, in the table's order."""
    roots = [*([model.loss] if model.loss is not None else []), *model.outputs.values()]
    used = set()
    for n in ancestors(roots):
        used.add(n.op)
        if n.op == "powc":  # a**k with a constant k < 1 is a**b's row too
            k = attr(n, Exponent).k
            if k < 1 and not k.is_integer():
                used.add("pow")
    return [row for op, row in CONVENTIONS.items() if op in used]


def _call(callee: str, fields: list[str], values: list[str]) -> str:
    return (
        f"{callee}("
        + ", ".join(f"{k}={v}" for k, v in zip(fields, values, strict=True))
        + ")"
    )


def _summary(model: Model) -> list[str]:
    """The model as the spec states it, for the module docstring."""
    spec = model.spec
    lines = []
    for label, decls in (("inputs", spec.inputs), ("params", spec.params)):
        if decls:
            lines.append(
                f"{label}: "
                + ", ".join(
                    f"{d.name} {show(d.shape)}"
                    + (" (integer ids)" if d.name in model.integers else "")
                    for d in decls
                )
            )
    for d in (*spec.define, *([spec.loss] if spec.loss else []), *spec.outputs):
        lines.append(f"{d.name} = {_expr_text(d.expr)}")
    lines.append(
        f"optimizer: {spec.optimizer.rule} ("
        + ", ".join(f"{k}={number(v)}" for k, v in spec.optimizer.hyper)
        + ")"
    )
    if spec.dtype != "float64":
        lines.append(
            f"dtype: {spec.dtype} (every array the module makes is {spec.dtype})"
        )
    return lines


def _expr_text(expr: YNode) -> str:
    """An expression as written in the spec, on one line."""
    if isinstance(expr, YScalar):
        v = expr.value
        return " ".join(str(v).split()) if isinstance(v, str) else repr(v)
    assert isinstance(expr, YSeq)  # a YAML list: the vector literal
    return "[" + ", ".join(_expr_text(i) for i in expr.items) + "]"


# --- the explanation ------------------------------------------------------------------

#: The explanation's formats, by the name `--format` takes, and their templates.
EXPLAIN_TEMPLATES = {"markdown": "explain.md.jinja", "html": "explain.html.jinja"}


@dataclass(frozen=True)
class SvgNode:
    name: str
    label: str
    kind: str
    x: int
    y: int
    width: int
    height: int

    @property
    def cx(self) -> int:
        return self.x + self.width // 2

    @property
    def cy(self) -> int:
        return self.y + self.height // 2


@dataclass(frozen=True)
class Svg:
    width: int
    height: int
    nodes: tuple[SvgNode, ...]
    edges: tuple[str, ...]  # path data


_CHAR, _PAD, _ROW, _HEIGHT, _GAP, _MARGIN = 8, 20, 48, 30, 56, 12


def layout(diagram: Diagram) -> Svg:
    """A layered layout: one column per topological depth, nodes in order of
    appearance down each column, edges as curves from right edge to left edge."""
    columns: dict[int, list[int]] = {}
    for i, n in enumerate(diagram.nodes):
        columns.setdefault(n.depth, []).append(i)
    widths = [len(n.label) * _CHAR + _PAD for n in diagram.nodes]
    x = _MARGIN
    placed: dict[str, SvgNode] = {}
    height = 0
    for depth in sorted(columns):
        members = columns[depth]
        column_width = max(widths[i] for i in members)
        for row, i in enumerate(members):
            n = diagram.nodes[i]
            y = _MARGIN + row * _ROW
            placed[n.key] = SvgNode(
                n.name, n.label, n.kind, x, y, column_width, _HEIGHT
            )
            height = max(height, y + _HEIGHT + _MARGIN)
        x += column_width + _GAP
    edges = []
    for e in diagram.edges:
        a, b = placed[e.source], placed[e.target]
        x0, y0, x1, y1 = a.x + a.width, a.cy, b.x, b.cy
        mid = (x0 + x1) // 2
        edges.append(f"M {x0} {y0} C {mid} {y0}, {mid} {y1}, {x1} {y1}")
    return Svg(
        x - _GAP + _MARGIN,
        height,
        tuple(placed[n.key] for n in diagram.nodes),
        tuple(edges),
    )


_MERMAID_SHAPES = {
    "input": '[/"{}"/]',
    "iinput": '[/"{}"/]',
    "param": '[/"{}"/]',
    "define": '["{}"]',
    "introduced": '("{}")',
    "loss": '(["{}"])',
    "output": '(["{}"])',
}


def mermaid(diagram: Diagram) -> list[str]:
    """The diagram as the lines of a mermaid flowchart."""
    lines = [
        n.key + _MERMAID_SHAPES[n.kind].format(n.label.replace('"', "#quot;"))
        for n in diagram.nodes
    ]
    lines += [f"{e.source} --> {e.target}" for e in diagram.edges]
    return lines


def render_explanation(
    explanation: Explanation,
    fmt: str,
    *,
    version: str,
    spec_rel: str,
    spec_sha256: str,
    placeholder: str,
) -> str:
    """The explanation as Markdown (sealed like a module) or a self-contained HTML
    page; `placeholder` stands where sealing will write the body digest."""
    symbols = {v.name: v.symbol for v in explanation.variables}
    context = {
        "e": explanation,
        "version": version,
        "spec_rel": spec_rel,
        "spec_sha256": spec_sha256,
        "placeholder": placeholder,
        "tex": {k: f.tex for k, f in symbols.items()},
        "mml": {k: f.mathml for k, f in symbols.items()},
        "mermaid": mermaid(explanation.diagram),
        "svg": layout(explanation.diagram),
    }
    template = environment().get_template(EXPLAIN_TEMPLATES[fmt])
    return template.render(context)
