"""Graph -> numpy source text, one function body at a time.

Dispatches on each node's op through its spelling in the rule table and
parenthesises by precedence, so the output reads like hand-written numpy. A node
gets its own line (and a name) when it is used more than once, when the spec named
it, or when it is long; otherwise it is written inline where it is used. Only
the nodes the results need are printed: there is no dead code. An op without a
spelling is refused loudly; there is no silent fallback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from . import naming
from .graph import LEAVES, Index, Node, ancestors
from .lower import Program
from .rules import ATOM, HELPERS_NEED, UNARY, number
from .rules import spelling as spelling_of

#: What the spellings' {float}, {dtype} and {scalar} fields print, per dtype: the
#: float64 default prints as before (`dtype=float`, no `dtype=` on np.zeros); float32
#: names its type wherever numpy would otherwise make a float64 array or scalar.
DTYPE_FIELDS = {
    "float64": {"float": "float", "dtype": "", "scalar": "np.float64"},
    "float32": {
        "float": "np.float32",
        "dtype": ", dtype=np.float32",
        "scalar": "np.float32",
    },
}
INLINE_LIMIT = 60  # characters: longer subexpressions get a line of their own


@dataclass(frozen=True)
class Body:
    lines: tuple[str, ...]  # statements, in evaluation order
    results: tuple[str, ...]  # one expression per requested result
    helpers: frozenset[str]  # module-level helpers the code calls (e.g. "sigmoid")
    named: tuple[tuple[Node, str], ...] = ()  # the nodes given a line, by name


def print_program(program: Program) -> dict[str, Body]:
    """Every function of the program printed, by name."""
    return {
        k.name: print_body(list(k.results), k.names, list(k.args), k.dims, k.dtype)
        for k in program.kernels()
    }


def print_body(
    results: list[Node],
    names: Mapping[Node, str],
    args: list[str],
    dim_sources: Mapping[str, tuple[str, int]],
    dtype: str = "float64",
) -> Body:
    """Statements computing `results`.

    `names` gives preferred names (spec names, `dL_dw`...), `args` the function's
    parameters, `dim_sources` where each dim is read from: name -> (array, axis).
    """
    needed = ancestors(results)
    uses: Counter[Node] = Counter()
    for n in needed:
        for a in n.args:
            uses[a] += 1
    for r in results:
        uses[r] += 1

    temps = naming.Temporaries([*args, *names.values(), *dim_sources])
    text: dict[Node, tuple[str, int]] = {}
    lines: list[str] = []
    helpers: set[str] = set()
    position = {a: i for i, a in enumerate(args)}
    dims = sorted(
        {n.name for n in needed if n.op == "dim"},
        key=lambda d: (position[dim_sources[d][0]], dim_sources[d][1]),
    )
    for d in dims:
        array, axis = dim_sources[d]
        lines.append(f"{d} = np.shape({array})[{axis}]")

    named: set[str] = set()
    lined: list[tuple[Node, str]] = []
    for n in needed:
        helper = spelling_of(n.op).helper
        if helper:
            helpers.add(helper)
            helpers.update(HELPERS_NEED.get(helper, ()))
        code, prec = spell(n, text, dtype)
        if n.op in LEAVES:
            text[n] = (code, prec)
            continue
        preferred = names.get(n)
        if preferred is not None and preferred in named:
            preferred = None  # one node, two spec names: the first one wins
        if preferred is not None or uses[n] > 1 or len(code) > INLINE_LIMIT:
            name = preferred if preferred is not None else temps.fresh()
            named.add(name)
            lined.append((n, name))
            lines.append(f"{name} = {code}")
            text[n] = (name, ATOM)
        else:
            text[n] = (code, prec)
    return Body(
        tuple(lines),
        tuple(text[r][0] for r in results),
        frozenset(helpers),
        tuple(lined),
    )


def spell(
    node: Node, text: Mapping[Node, tuple[str, int]], dtype: str = "float64"
) -> tuple[str, int]:
    spelling = spelling_of(node.op)
    if spelling.scalar is not None and node.args and node.args[0].rank == 0:
        spelling = spelling.scalar
    fields = spelling.fields(node.attrs) if spelling.fields else {}
    fields.update(DTYPE_FIELDS[dtype])
    if node.op == "const":
        value = node.value
        return number(value), (UNARY if value < 0 else ATOM)
    operands: list[str] = []
    for i, arg in enumerate(node.args):
        code, prec = text[arg]
        need = spelling.operand_prec[i] if i < len(spelling.operand_prec) else 0
        operands.append(f"({code})" if prec < need else code)
    if "{args}" in spelling.template:
        fields["args"] = ", ".join(operands)
    if operands and "{last}" in spelling.template:
        fields["last"] = operands[-1]
    if isinstance(node.attrs, Index):  # x[t, :, None]: items over the operands
        fields["index"] = ", ".join(item.format(*operands) for item in node.attrs.items)
    return spelling.template.format(*operands, **fields), spelling.prec
