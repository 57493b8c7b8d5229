"""Random specs in the grammar of real models (issue 9), valid by construction, and
the same specs with one deliberate error: for the fuzzer (`tests/test_fuzz.py`) and
the differential tests (`tests/test_differential_models.py`).

A typed, shape-directed generator: asked for an expression of a shape, it picks a
production that makes that shape and asks for its operands' shapes in turn, so every
spec it writes is well typed. Shapes have rank 0 to 6 over the dims `SIZES` (their
sizes coincide often: B, k and d are all 2) and the integer dims 1, 2 and 3, with a
dim repeated now and then (`[n, n]`, `[B, T, d]`). The productions:

* element-wise functions, `+ - * /` and `**` between broadcasting shapes (a scalar, a
  suffix, size-1 axes), `@` (batched too) and `.T`;
* indexing: an integer or a dim-valued index (`X[0]`, `X[-1]`, `X[:, T - 1]`,
  `X[..., 2]`), slices (`x[1:]`, `x[:-1]`, `X[:, :k]`, `x[1:]` of `[3]`), new axes
  (`x[:, None]`, `X[None]`, `X[..., None]`), rows by integer ids (`E[ids]`, `E[ids, :]`,
  any rank of ids, repeated ids since ids are drawn below `ID_BOUND`), and one entry
  per row (`Z[arange(N), lab]`);
* `where(cond, a, b)` with the comparisons `< <= > >= == !=`, a chain `a < x <= b`,
  `& | ~`, and a condition used as a number (`(x > 0) * y`);
* reductions `sum mean max min logsumexp var std norm` over everything or along an
  `axis=` written as an int, a negative int or a tuple, with and without
  `keepdims=True`;
* `softmax`, `log_softmax` (along a random axis), `cross_entropy` with integer labels
  (along the last axis or axis 0) or with probabilities, `one_hot`, `mse`, `huber`,
  `binary_cross_entropy_with_logits`;
* integer inputs declared `{shape: [N], dtype: int}` or left to be inferred from
  their use (rows by ids, `one_hot`, `cross_entropy`'s labels, a pick).

Magnitudes stay moderate (`exp` only of a `tanh`, divisions by `1 + square(...)`), so
the values of a valid spec are finite on data of magnitude about 1.

`broken` adds one error to a valid spec, in a line of its own, and says which line
the error must be reported on and a piece of its message: an index out of range of a
known dim (`X[:, 3]` of an axis of length 3, `X[T]` of an axis of length T), a float
as an index, `where` of a number, `keepdims` on an op that reduces nothing, an axis out
of range, an array of rank 7 (declared, or made by `None`, `stack`, `one_hot` or an
id lookup), an input used both as ids and as a number, and a few more.

The choices come from `choose(lo, hi)`, an integer in [lo, hi]: hypothesis's `draw`
in the fuzzer (its examples shrink), a seeded numpy generator in the differential
tests (a seed is a spec).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
Shape = tuple[str, ...]  # dim tokens: "N", "3", or a derived "N - 1"
Choose = Callable[[int, int], int]
T = TypeVar("T")

#: The named dims and their sizes, the same in the fuzzer and the differential tests.
SIZES = {"N": 4, "n": 3, "k": 2, "B": 2, "T": 3, "d": 2}
INTEGER_DIMS = ("1", "2", "3")
#: Integer ids are drawn from range(ID_BOUND): below the length of every axis they
#: index, and repeated (N = 4 ids from 2 values).
ID_BOUND = 2
MAX_RANK = 6
MAX_ELEMENTS = 48  # of one declared array: finite differences stay cheap

UNARY = (
    "tanh({})",
    "sin({})",
    "cos({})",
    "sigmoid({})",
    "softplus({})",
    "log_sigmoid({})",
    "square({})",
    "arctan({})",
    "gelu({})",
    "exp(tanh({}))",
    "(-{})",
    "sqrt(1 + square({}))",
    "log(1 + square({}))",
    "relu({})",
    "abs({})",
)
POSITIVE = ("(1 + square({}))", "(2 + sin({}))", "(1 + sigmoid({}))")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
REDUCTIONS = ("sum", "mean", "max", "min", "logsumexp", "var", "std", "norm")


def size(token: str) -> int:
    """The size of a dim token: 3, N, or a derived N - 1."""
    if token.isdigit():
        return int(token)
    name, _, minus = token.partition(" - ")
    return SIZES[name] - int(minus or 0)


def count(shape: Shape) -> int:
    return math.prod(size(d) for d in shape)


def yaml_shape(shape: Shape) -> str:
    return "[" + ", ".join(shape) + "]"


def broadcasts_to(small: Shape, shape: Shape) -> bool:
    """numpy: `small` broadcasts to `shape` (aligned from the right, 1 stretches)."""
    if len(small) > len(shape):
        return False
    tail = shape[len(shape) - len(small) :]
    return all(a in (b, "1") for a, b in zip(small, tail, strict=True))


def wrap(expression: str) -> str:
    """`expression` as the value of a subscript or `.T`: a name, or parenthesized."""
    return expression if expression.isidentifier() else f"({expression})"


@dataclass(frozen=True)
class Variable:
    name: str
    shape: Shape
    param: bool
    integer: bool = False  # integer ids
    declared: bool = False  # `dtype: int` written in the spec, else inferred from use


@dataclass
class Model:
    """A spec: its variables and expressions; `text()` is its YAML."""

    name: str
    variables: list[Variable]
    define: dict[str, str] = field(default_factory=dict)
    loss: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = ["gradgen: 1", f"name: {self.name}"]
        for section, param in (("inputs", False), ("params", True)):
            chosen = [v for v in self.variables if v.param is param]
            if chosen:
                lines.append(f"{section}:")
            for v in chosen:
                shape = yaml_shape(v.shape)
                if v.declared:
                    shape = f"{{shape: {shape}, dtype: int}}"
                lines.append(f"  {v.name}: {shape}")
        for section, entries in (("define", self.define), ("outputs", self.outputs)):
            if entries:
                lines.append(f"{section}:")
                lines += [f'  {k}: "{e}"' for k, e in entries.items()]
        if self.loss is not None:
            lines.append(f'loss: "{self.loss}"')
        return lines

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"


class Grammar:
    """Random well-typed expressions over a model's variables (see the module
    docstring); `model()` draws a whole spec.

    A production asked for a shape returns an expression of that shape, or None if
    it cannot make it. Called with a depth below 0 (for an atom), a production takes
    its operands from the variables as they are, and returns None if none fits.
    """

    def __init__(self, choose: Choose) -> None:
        self.choose = choose
        self.variables: list[Variable] = []
        self.floats: list[tuple[str, Shape]] = []  # float variables, define entries
        self.params: list[str] = []
        self.with_params: set[str] = set()  # params, and define entries using them
        self.named = list(SIZES)  # then the dims the variables declare

    # -- small helpers

    def pick(self, options: Sequence[T]) -> T:
        return options[self.choose(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        return self.choose(0, 99) < percent

    def dim(self, minimum: int = 1) -> str:
        """A named dim (mostly) or an integer one, of at least `minimum` entries."""
        named = [d for d in self.named if SIZES[d] >= minimum]
        integers = [d for d in INTEGER_DIMS if int(d) >= minimum]
        if not named or (integers and self.chance(20)):
            return self.pick(integers)
        return self.pick(named)

    def shape(self, rank: int | None = None) -> Shape:
        if rank is None:
            rank = int(self.pick("0111222233334456"))  # mostly low ranks, up to 6
        dims: list[str] = []
        for _ in range(rank):
            if dims and self.chance(20):
                dims.append(self.pick(dims))  # repeated: [n, n], [B, T, T]
            elif count(tuple(dims)) * 2 > MAX_ELEMENTS:
                dims.append(self.pick(("1", "1", "2")))
            else:
                dims.append(self.dim())
        return tuple(dims)

    def target(self, limit: int = 4 * MAX_ELEMENTS) -> Shape:
        """A shape to compute something of: a variable's (an embedding lookup's,
        a one-hot's) more often than a random one."""
        kind = self.choose(0, 19)
        if kind <= 7 and self.floats:
            shape = self.pick(self.shapes())
        elif kind <= 14 and self.ids():
            ids = self.pick(self.ids()).shape
            shape = (*ids, self.dim(ID_BOUND)) if len(ids) < MAX_RANK else ids
        else:
            shape = self.shape()
        while count(shape) > limit:
            shape = shape[1:]
        return shape

    def shapes(self) -> list[Shape]:
        """The shapes of the float variables and define entries."""
        return sorted({s for _, s in self.floats})

    def named_of(self, shape: Shape) -> list[str]:
        return [n for n, s in self.floats if s == shape]

    def depends(self, expression: str) -> bool:
        return not self.with_params.isdisjoint(NAME.findall(expression))

    def ids(self, shape: Shape | None = None) -> list[Variable]:
        return [
            v
            for v in self.variables
            if v.integer and (shape is None or v.shape == shape)
        ]

    def sub(self, shape: Shape, depth: int) -> str | None:
        """An operand of `shape`: an expression, or below depth 0 a variable."""
        if depth >= 0:
            return self.expression(shape, depth)
        found = self.named_of(shape)
        return self.pick(found) if found else None

    def fitting(self, depth: int) -> bool:
        """Whether a production takes a variable's shape for its operand: always
        for an atom, mostly otherwise."""
        return depth < 0 or self.chance(70)

    # -- the variables

    def make_variables(self) -> None:
        variables: list[Variable] = []
        if self.chance(35):  # a classifier's shapes
            variables += [
                Variable("X", ("N", "n"), False),
                Variable("W", ("n", "k"), True),
            ]
        if self.chance(25):  # a batch of sequences, an embedding table
            variables += [
                Variable("S", ("B", "T", "d"), False),
                Variable("E", (self.pick(["n", "N", "3"]), "d"), True),
            ]
        if self.chance(55):
            ids = self.pick(["N", "N", "B T", "T", "N 2", "B T 1"]).split()
            variables.append(Variable("ids", tuple(ids), False, True, self.chance(50)))
        if self.chance(45):
            variables.append(Variable("lab", ("N",), False, True, self.chance(50)))
        taken = {v.name for v in variables}
        inputs = [n for n in ("x", "Y", "Z") if n not in taken]
        params = [n for n in ("w", "V", "P", "b", "s") if n not in taken]
        for name in inputs[: self.choose(0, 2)]:
            variables.append(Variable(name, self.shape(), False))
        for name in params[: self.choose(0 if "W" in taken else 1, 3)]:
            variables.append(Variable(name, self.shape(), True))
        self.variables = variables
        self.floats = [(v.name, v.shape) for v in variables if not v.integer]
        self.params = [v.name for v in variables if v.param]
        self.with_params = set(self.params)
        self.named = [d for d in SIZES if any(d in v.shape for v in variables)]

    # -- expressions

    def expression(self, shape: Shape, depth: int) -> str:
        if depth <= 0 or self.chance(12):
            return self.atom(shape)
        productions = [
            *[self.unary] * 2,
            *[self.binary] * 3,
            self.power,
            *[self.new_axes] * 2,
            self.pairwise,
            *[self.index] * 2,
            *[self.sliced] * 2,
            *[self.gather] * 2,
            self.pick_along,
            self.one_hot,
            *[self.where] * 2,
            self.masked,
            *[self.reduction] * 3,
            self.centered,
            self.softmax,
            *[self.loss_function] * 2,
            self.matmul,
            self.transposed,
        ]
        for _ in range(12):
            made = self.pick(productions)(shape, depth - 1)
            if made is not None:
                return made
        return self.atom(shape)

    def atom(self, shape: Shape) -> str:
        """An expression of depth 0: a variable of this shape; else one indexed,
        sliced, reduced, given new axes or looked up by ids into it; else a variable
        (or a number) broadcast to it."""
        exact = self.named_of(shape)
        if exact and self.chance(75):
            with_params = [n for n in exact if n in self.with_params]
            return self.pick(with_params if with_params and self.chance(60) else exact)
        if self.chance(80):
            derived = [
                self.index,
                self.sliced,
                self.reduction,
                self.new_axes,
                self.gather,
                self.pick_along,
                self.transposed,
            ]
            for _ in range(4):
                made = self.pick(derived)(shape, -1)
                if made is not None:
                    return made
        if exact:
            return self.pick(exact)
        if not shape:
            scalars = ["0.5", "2", *(f"mean({p})" for p in self.params)]
            scalars += [f"sum({n})" for n, s in self.floats if 0 < count(s) <= 8]
            dims = self.named if self.named and self.chance(20) else []
            return self.pick(scalars + dims)
        sources = [n for n, s in self.floats if broadcasts_to(s, shape)]
        base = self.pick(sources) if sources and self.chance(70) else self.atom(())
        return f"({base} * ones({yaml_shape(shape)}))"

    def with_a_param(self, shape: Shape, depth: int) -> str:
        """An expression of `shape` that depends on a param."""
        made = ""
        for _ in range(4):
            made = self.expression(shape, depth)
            if self.depends(made):
                return made
        return f"({made} + mean({self.pick(self.params)}))"

    def operand_shape(self, shape: Shape) -> Shape:
        """A shape that broadcasts to `shape`: itself, a scalar, a suffix, or with
        size-1 axes (a keepdims statistic, a new axis)."""
        kind = self.choose(0, 4)
        if kind <= 1 or not shape:
            return shape
        if kind == 2:
            return ()
        if kind == 3:
            return shape[self.choose(1, len(shape)) :]
        ones = tuple("1" if self.chance(40) else d for d in shape)
        return ones[self.choose(0, len(shape) - 1) :]

    def unary(self, shape: Shape, depth: int) -> str:
        return self.pick(UNARY).format(self.expression(shape, depth))

    def binary(self, shape: Shape, depth: int) -> str:
        left = self.expression(shape, depth)
        right = self.expression(self.operand_shape(shape), depth)
        op = self.pick(["+", "-", "*", "*", "/"])
        if op == "/":
            return f"({left} / {self.pick(POSITIVE).format(right)})"
        if self.chance(50):
            left, right = right, left
        return f"({left} {op} {right})"

    def power(self, shape: Shape, depth: int) -> str:
        inner = self.expression(shape, depth)
        if self.chance(50):
            return f"({inner}) ** {self.pick(['2', '3'])}"
        base = self.pick(POSITIVE).format(inner)
        return f"{base} ** {self.pick(['0.5', '-1', '1.5'])}"

    def new_axes(self, shape: Shape, depth: int) -> str | None:
        """`x[:, None]`, `X[None]`, `X[..., None]`: size-1 axes of `shape` made by
        `None`."""
        ones = [i for i, d in enumerate(shape) if d == "1"]
        subsets = [
            set(axes)
            for k in range(1, len(ones) + 1)
            for axes in itertools.combinations(ones, k)
        ]
        if self.fitting(depth):
            subsets = [a for a in subsets if self.named_of(_without(shape, a))]
        if not subsets:
            return None
        new = self.pick(subsets)
        inner = self.sub(_without(shape, new), depth)
        if inner is None:
            return None
        items = ["None" if i in new else ":" for i in range(len(shape))]
        last = range(len(shape) - len(new), len(shape))
        if all(i in new for i in last) and self.chance(40):
            items = ["...", *["None"] * len(new)]  # x[..., None]
        else:
            while items and items[-1] == ":" and self.chance(70):
                items.pop()  # trailing `:` go without saying
        return f"{wrap(inner)}[{', '.join(items)}]"

    def pairwise(self, shape: Shape, depth: int) -> str | None:
        """A table of every entry of one operand against every entry of the other,
        the new axes written with `None`: `x[:, None] - y[None, :]`, `d[:, None] * d`
        (the leading one implicit), `X[:, None, :] - X[None, :, :]`."""
        if len(shape) < 2:
            return None
        i, j = sorted(self.pick(list(itertools.combinations(range(len(shape)), 2))))
        left = wrap(self.expression(_without(shape, {j}), depth))
        right = wrap(self.expression(_without(shape, {i}), depth))
        left_items = ["None" if a == j else ":" for a in range(len(shape))]
        right_items = ["None" if a == i else ":" for a in range(len(shape))]
        for items in (left_items, right_items):
            while items[-1] == ":" and self.chance(70):
                items.pop()
        left = f"{left}[{', '.join(left_items)}]"
        if i > 0 or self.chance(50):
            right = f"{right}[{', '.join(right_items)}]"
        op = self.pick(["-", "*", "+"])
        if self.chance(30):
            return f"exp(-square({left} {op} {right}))"  # an RBF kernel
        return f"({left} {op} {right})"

    def index(self, shape: Shape, depth: int) -> str | None:
        """An integer or dim-valued index into an axis that `shape` then lacks."""
        if len(shape) >= MAX_RANK:
            return None
        fits = [
            (s, axis)
            for s in self.shapes()
            for axis in range(len(s))
            if len(s) == len(shape) + 1 and s[:axis] + s[axis + 1 :] == shape
        ]
        if self.fitting(depth):
            if not fits:
                return None
            inner_shape, axis = self.pick(fits)
            dim = inner_shape[axis]
        else:
            axis = self.choose(0, len(shape))
            dim = self.dim()
            inner_shape = (*shape[:axis], dim, *shape[axis:])
        inner = self.sub(inner_shape, depth)
        if inner is None:
            return None
        n = size(dim)
        options = ["0", "-1", str(n - 1), str(-n)]
        if not dim.isdigit():
            options += [f"{dim} - 1", f"{dim} - {n}", f"-{dim}"]  # the last, the first
        at = self.pick(options)
        if axis == len(shape) and shape and self.chance(50):
            items = ["...", at]
        else:
            items = [":"] * axis + [at]
        return f"{wrap(inner)}[{', '.join(items)}]"

    def slices(self, target: str) -> list[tuple[str, str]]:
        """The slices of an axis that leave `target` entries: (axis, slice)."""
        options: list[tuple[str, str]] = [(target, ":")]
        name, _, minus = target.partition(" - ")
        if minus:
            options += [(name, f"{minus}:"), (name, f":-{minus}")]
        elif target.isdigit():
            c = int(target)
            sources = (*self.named, *INTEGER_DIMS)
            options += [(d, f":{c}") for d in sources if size(d) >= c]
            options += [(str(s), f"{s - c}:") for s in (2, 3) if s > c]
        else:
            bigger = [d for d in self.named if d != target and size(d) >= size(target)]
            options += [(d, f":{target}") for d in bigger]
        return options

    def sliced(self, shape: Shape, depth: int) -> str | None:
        """A slice of an axis whose length is the axis of `shape`."""
        if not shape:
            return None
        choices = [
            (axis, source, written)
            for axis in range(len(shape))
            for source, written in self.slices(shape[axis])
        ]
        if self.fitting(depth):
            choices = [
                c for c in choices if self.named_of(_replaced(shape, c[0], c[1]))
            ]
        if not choices:
            return None
        axis, source, written = self.pick(choices)
        inner = self.sub(_replaced(shape, axis, source), depth)
        if inner is None:
            return None
        if axis == len(shape) - 1 and axis and self.chance(50):
            items = ["...", written]
        else:
            items = [":"] * axis + [written]
        return f"{wrap(inner)}[{', '.join(items)}]"

    def gather(self, shape: Shape, depth: int) -> str | None:
        """Rows by integer ids: `E[ids]` has shape ids.shape + E.shape[1:]."""
        found = [v for v in self.ids() if shape[: len(v.shape)] == v.shape]
        if not found:
            return None
        ids = self.pick(found)
        rest = shape[len(ids.shape) :]
        if len(rest) + 1 > MAX_RANK:
            return None
        rows = [s[0] for s in self.shapes() if s and s[1:] == rest and size(s[0]) > 1]
        if self.fitting(depth) and not rows:
            return None
        row = self.pick(rows) if rows and self.fitting(depth) else self.dim(ID_BOUND)
        table = self.sub((row, *rest), depth)
        if table is None:
            return None
        if rest and self.chance(30):
            return f"{wrap(table)}[{ids.name}, {', '.join([':'] * len(rest))}]"
        return f"{wrap(table)}[{ids.name}]"

    def pick_along(self, shape: Shape, depth: int) -> str | None:
        """One entry per row: `Z[arange(N), lab]`."""
        found = self.ids(shape) if len(shape) == 1 else []
        if not found:
            return None
        labels = self.pick(found)
        rows = shape[0]
        classes = [
            s[1]
            for s in self.shapes()
            if len(s) == 2 and s[0] == rows and size(s[1]) >= ID_BOUND
        ]
        if self.fitting(depth) and not classes:
            return None
        column = self.pick(classes) if classes and self.fitting(depth) else None
        table = self.sub((rows, column or self.dim(ID_BOUND)), depth)
        if table is None:
            return None
        return f"{wrap(table)}[arange({rows}), {labels.name}]"

    def one_hot(self, shape: Shape, depth: int) -> str | None:
        found = [v for v in self.ids() if shape[:-1] == v.shape] if shape else []
        if not found or size(shape[-1]) < ID_BOUND or "-" in shape[-1]:
            return None
        ids = self.pick(found)
        return f"(one_hot({ids.name}, {shape[-1]}) * {self.expression(shape, depth)})"

    def condition(self, shape: Shape, depth: int) -> str:
        kind = self.choose(0, 6)
        if kind <= 3 or depth <= 0:
            left = self.expression(shape, depth - 1)
            if self.chance(30):
                right = self.pick(["0", "0.5", "-0.25"])
            else:
                right = self.expression(self.operand_shape(shape), depth - 1)
            if self.chance(50):
                left, right = right, left
            return f"({left} {self.pick(COMPARISONS)} {right})"
        if kind == 4:
            inner = self.expression(shape, depth - 1)
            low, high = self.pick(["<", "<="]), self.pick(["<", "<="])
            return f"(-0.5 {low} {inner} {high} 0.5)"
        if kind == 5:
            op = self.pick(["&", "|"])
            other = self.condition(self.operand_shape(shape), depth - 1)
            return f"({self.condition(shape, depth - 1)} {op} {other})"
        return f"~{self.condition(shape, depth - 1)}"

    def where(self, shape: Shape, depth: int) -> str:
        shapes = [shape, self.operand_shape(shape), self.operand_shape(shape)]
        first = self.choose(0, 2)
        shapes[0], shapes[first] = shapes[first], shapes[0]
        cond = self.condition(shapes[0], depth)
        a = self.expression(shapes[1], depth)
        b = self.expression(shapes[2], depth)
        return f"where({cond}, {a}, {b})"

    def masked(self, shape: Shape, depth: int) -> str:
        """A condition used as a number: 0 or 1."""
        mask = self.condition(self.operand_shape(shape), depth)
        return f"({mask} * {self.expression(shape, depth)})"

    def reduction(self, shape: Shape, depth: int) -> str | None:
        fn = self.pick(REDUCTIONS)
        if not shape and depth >= 0 and self.chance(40):  # every element
            inner = self.target()
            fn, operand = self.reduced(fn, inner, depth)
            return f"{fn}({operand}{', axis=None' * self.chance(20)})"
        fits = self.reducing_to(shape)
        ones = [i for i, d in enumerate(shape) if d == "1"]
        keep = ""
        if self.fitting(depth):  # of a variable's shape
            if not fits:
                return None
            inner, axes, keepdims = self.pick(fits)
            keep = ", keepdims=True" if keepdims else ""
        elif ones and self.chance(50):  # keepdims: the size-1 axes of `shape`
            axes = tuple(sorted({i for i in ones if self.chance(50)} or {ones[0]}))
            inner = tuple(self.dim() if i in axes else d for i, d in enumerate(shape))
            keep = ", keepdims=True"
        else:
            added = self.choose(1, 2)
            if len(shape) + added > MAX_RANK:
                return None
            marked = list(shape)
            for _ in range(added):
                marked.insert(self.choose(0, len(marked)), "+")
            axes = tuple(i for i, d in enumerate(marked) if d == "+")
            inner = tuple(self.dim() if d == "+" else d for d in marked)
        if count(inner) > 4 * MAX_ELEMENTS:
            return None
        if not keep and self.chance(15):
            keep = ", keepdims=False"
        made = self.reduced(fn, inner, depth)
        if made is None:
            return None
        fn, operand = made
        return f"{fn}({operand}, axis={self.axis_text(axes, len(inner))}{keep})"

    def axis_text(self, axes: Sequence[int], rank: int) -> str:
        """`axis=` as an int, a negative int or a tuple."""
        written = [str(a - rank) if self.chance(40) else str(a) for a in axes]
        if len(written) == 1 and self.chance(70):
            return written[0]
        return "(" + ", ".join(written) + ("," if len(written) == 1 else "") + ")"

    def reduced(self, fn: str, shape: Shape, depth: int) -> tuple[str, str] | None:
        """The operand of a reduction `fn`. std has a kink where the entries it
        reduces are equal (a broadcast constant, rounded): its operand is made to
        vary, times an input or a param, or it becomes var."""
        operand = self.sub(shape, depth)
        if operand is None:
            return None
        if fn != "std":
            return fn, operand
        varying = [v.name for v in self.variables if v.shape == shape]
        varying = [n for n in varying if n not in {v.name for v in self.ids()}]
        if varying:
            return fn, f"({operand} * {self.pick(varying)})"
        return "var", operand

    def reducing_to(self, shape: Shape) -> list[tuple[Shape, tuple[int, ...], bool]]:
        """The variables' shapes that a reduction along one or two axes makes
        `shape` of, with those axes and whether it keeps them."""
        fits = []
        for s in self.shapes():
            for k in (1, 2):
                if len(s) != len(shape) + k:
                    continue
                for axes in itertools.combinations(range(len(s)), k):
                    if _without(s, set(axes)) == shape:
                        fits.append((s, axes, False))
            if len(s) == len(shape) and s != shape:
                axes = tuple(
                    i for i, (a, b) in enumerate(zip(s, shape, strict=True)) if a != b
                )
                if all(shape[i] == "1" for i in axes) and len(axes) <= 2:
                    fits.append((s, axes, True))
        return fits

    def centered(self, shape: Shape, depth: int) -> str | None:
        """A statistic along some axes kept with `keepdims=True` and broadcast
        back: `x - mean(x, axis=1, keepdims=True)`, a layer normalisation."""
        if not shape:
            return None
        k = self.choose(1, min(2, len(shape)))
        axes = sorted(self.pick(list(itertools.combinations(range(len(shape)), k))))
        axis = self.axis_text(axes, len(shape))
        inner = self.expression(shape, depth)
        if self.chance(40):
            spread = f"var({inner}, axis={axis}, keepdims=True)"
            centred = f"({inner} - mean({inner}, axis={axis}, keepdims=True))"
            return f"({centred} / sqrt({spread} + 0.5))"
        fn = self.pick(["mean", "max", "min", "logsumexp", "sum"])
        return f"({inner} - {fn}({inner}, axis={axis}, keepdims=True))"

    def softmax(self, shape: Shape, depth: int) -> str | None:
        if not shape:
            return None
        fn = self.pick(["softmax", "log_softmax"])
        inner = self.expression(shape, depth)
        if self.chance(40):
            return f"{fn}({inner})"
        return f"{fn}({inner}, axis={self.choose(-len(shape), len(shape) - 1)})"

    def loss_function(self, shape: Shape, depth: int) -> str | None:
        """`cross_entropy` and the other named losses: scalars."""
        if shape:
            return None
        labels = self.ids(("N",))
        kind = self.choose(0, 5)
        if kind <= 1 and labels:
            lab = self.pick(labels).name
            classes = self.dim(ID_BOUND)
            if kind == 1:
                logits = self.expression((classes, "N"), depth)
                return f"cross_entropy({logits}, {lab}, axis=0)"
            return f"cross_entropy({self.expression(('N', classes), depth)}, {lab})"
        source = self.target()
        first = self.expression(source, depth)
        second = self.expression(source, depth)
        if kind == 2 and source:
            return f"cross_entropy({first}, softmax({second}))"
        if kind == 3:
            return f"mse({first}, {second})"
        if kind == 4:
            return f"huber({first}, {self.pick(['1.0', '0.5'])})"
        return f"binary_cross_entropy_with_logits({first}, sigmoid({second}))"

    def classifier(self, labels: str, depth: int) -> str:
        """A classifier's loss on integer labels [N]: cross-entropy, written with
        the named loss or by hand (a pick of log_softmax, a one-hot)."""
        classes = self.pick([d for d in self.shapes_dims() if size(d) >= ID_BOUND])
        logits = self.with_a_param(("N", classes), depth)
        kind = self.choose(0, 3)
        if kind == 0:
            return f"cross_entropy({logits}, {labels})"
        if kind == 1:
            return f"-mean(log_softmax({logits})[arange(N), {labels}])"
        if kind == 2:
            onehot = f"one_hot({labels}, {classes})"
            return f"-mean(sum({onehot} * log_softmax({logits}, axis=1), axis=1))"
        return f"cross_entropy({wrap(logits)}.T, {labels}, axis=0)"

    def shapes_dims(self) -> list[str]:
        """The dims of the variables' shapes, and the integer dims."""
        return sorted({*self.named, *INTEGER_DIMS})

    def matmul(self, shape: Shape, depth: int) -> str | None:
        inner = self.dim()
        fits = [s[-1] for s in self.shapes() if s and s[:-1] == shape[:-1]]
        fits += [s[0] for s in self.shapes() if len(s) == 2 and s[1:] == shape[-1:]]
        if fits and self.fitting(depth):
            inner = self.pick(fits)
        if not shape:
            left, right = (inner,), (inner,)
        elif len(shape) == 1:
            if self.chance(50):
                left, right = (shape[0], inner), (inner,)
            else:
                left, right = (inner,), (inner, shape[0])
        else:
            left = (*shape[:-1], inner)
            right = (inner, shape[-1])
            if len(shape) >= 3 and self.chance(40):  # a stack against a stack
                right = (*shape[:-2], inner, shape[-1])
        a, b = self.expression(left, depth), self.expression(right, depth)
        return f"({a} @ {b})"

    def transposed(self, shape: Shape, depth: int) -> str | None:
        if len(shape) < 2:
            return None
        inner = self.sub(tuple(reversed(shape)), depth)
        return None if inner is None else f"{wrap(inner)}.T"

    # -- a whole spec

    def model(self, name: str = "spec") -> Model:
        self.make_variables()
        model = Model(name, self.variables)
        for i in range(self.choose(0, 3)):
            shape = self.target(MAX_ELEMENTS)
            entry = f"h{i}"
            model.define[entry] = self.expression(shape, self.choose(1, 3))
            if self.depends(model.define[entry]):
                self.with_params.add(entry)
            self.floats.append((entry, shape))
        if self.chance(80):
            # weight decay: the loss depends on a param even where a constant
            # condition picks a branch without one
            decay = f"0.1 * sum(square({self.pick(self.params)}))"
            depth = self.choose(2, 4)
            labels = self.ids(("N",))
            if labels and self.chance(50):
                fit = self.classifier(labels[0].name, depth)
            else:
                fit = self.with_a_param((), depth)
            model.loss = f"{fit} + {decay}"
        for i in range(self.choose(0 if model.loss else 1, 2)):
            shape = self.target(24)
            while len(shape) > 3:
                shape = shape[1:]
            model.outputs[f"o{i}"] = self.with_a_param(shape, self.choose(1, 3))
        return model


def _without(shape: Shape, axes: set[int]) -> Shape:
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _replaced(shape: Shape, axis: int, dim: str) -> Shape:
    return (*shape[:axis], dim, *shape[axis + 1 :])


#: The constructs of the grammar, as they show in a spec's text.
CONSTRUCTS = {
    "a rank 5-6 input or param": r"^  \w+: \[\w+(, \w+){4,5}\]",
    "a repeated dim": r"\[(\w+), \1[,\]]",
    "declared integer ids": r"dtype: int",
    "an integer index": r"\[(\.\.\., |(:, )*)-?\d\]",
    "a dim-valued index": r"\[(\.\.\., |(:, )*)-?\w+ - \d\]",
    "a slice": r"\[(:, )*-?\w*:-?\w*\]",
    "None": r"None",
    "...": r"\.\.\.",
    "rows by ids": r"\[(ids|lab)[\],]",
    "one entry per row": r"\[arange\(",
    "one_hot": r"one_hot\(",
    "where": r"where\(",
    "a comparison": r" (<|<=|>|>=|==|!=) ",
    "& or |": r" [&|] ",
    "~": r"~",
    "keepdims=True": r"keepdims=True",
    "a tuple axis": r"axis=\(",
    "a negative axis": r"axis=\(?-",
    "softmax or log_softmax": r"softmax\(",
    "cross_entropy with labels": r"cross_entropy\([^\n]*, lab",
}


def constructs(texts: Iterable[str]) -> dict[str, int]:
    """How many of the spec texts show each construct."""
    found = dict.fromkeys(CONSTRUCTS, 0)
    for text in texts:
        for construct, pattern in CONSTRUCTS.items():
            found[construct] += bool(re.search(pattern, text, re.MULTILINE))
    return found


# --------------------------------------------------------------- one deliberate error


@dataclass(frozen=True)
class Broken:
    """A spec with one error: the line it must be reported on (1-based) and a piece
    of its message."""

    text: str
    line: int
    message: str
    kind: str


BROKEN_KINDS = (
    "index out of range",
    "dim index out of range",
    "float index",
    "where of a number",
    "keepdims on a non-reduction",
    "axis out of range",
    "rank 7",
    "ids as a number",
    "step slice",
    "too many indices",
    "repeated axis",
    "~ of a number",
)


def broken(g: Grammar, model: Model, kind: str | None = None) -> Broken:
    """`model` (drawn by `g`) with one error of `kind` (or of a random kind) added:
    a `define` entry of its own, or for a rank-7 input its declaration."""
    kind = kind or g.pick(BROKEN_KINDS)
    bad, message = _bad_expression(g, model, kind)
    if bad is None:  # a rank-7 input or param
        shape = ("2",) + ("1",) * 6
        g.variables.append(Variable("R7", shape, g.chance(50)))
        wanted = f"  R7: {yaml_shape(shape)}"
    else:
        model.define = {**model.define, "bad": bad}
        wanted = f'  bad: "{bad}"'
    lines = model.lines()
    return Broken("\n".join(lines) + "\n", lines.index(wanted) + 1, message, kind)


def _bad_expression(g: Grammar, model: Model, kind: str) -> tuple[str | None, str]:
    if kind == "dim index out of range" and g.named:
        dim = g.pick(g.named)
        shape = (dim, *g.shape(g.choose(0, 2)))
        at = g.pick([dim, f"{dim} + 1", f"-{dim} - 1", f"2 * {dim}"])
        return f"{wrap(g.expression(shape, 2))}[{at}]", "out of range for an axis"
    if kind in ("index out of range", "dim index out of range"):
        c = g.choose(1, 3)
        shape = (*g.shape(g.choose(0, 2)), str(c))
        at = g.pick([str(c), str(-c - 1), str(c + 2)])
        items = ["...", at] if g.chance(50) else [":"] * (len(shape) - 1) + [at]
        expression = g.expression(shape, 2)
        return f"{wrap(expression)}[{', '.join(items)}]", "out of range for an axis"
    if kind == "float index":
        shape = g.shape(g.choose(1, 3))
        at = g.pick(
            [
                "0.5",
                "1.0",
                "-1.5",
                f"mean({g.pick(g.params)})",
                f"{g.dim()} / 2",
                f"0 * {g.dim()} + 1.0",
            ]
        )
        if g.chance(30):
            return (
                f"{wrap(g.expression(shape, 2))}[{at}:]",
                "a slice bound is an integer",
            )
        return f"{wrap(g.expression(shape, 2))}[{at}]", "an index is an integer"
    if kind == "where of a number":
        shape = g.shape(g.choose(0, 3))
        cond = g.expression(shape, 2)
        return (
            f"where({cond}, {g.expression(shape, 1)}, {g.expression(shape, 1)})",
            "`where` needs a condition",
        )
    if kind == "keepdims on a non-reduction":
        shape = g.shape(g.choose(1, 3))
        inner = g.expression(shape, 2)
        fn = g.pick(["exp", "tanh", "softmax", "log_softmax", "relu", "square"])
        return f"{fn}({inner}, keepdims=True)", "no keyword argument `keepdims`"
    if kind == "axis out of range":
        shape = g.shape(g.choose(0, 4))
        r = len(shape)
        axis = g.pick([str(r), str(-r - 1), str(r + 3)])
        if r and g.chance(30):
            axis = f"(0, {axis})"
        fn = g.pick([*REDUCTIONS, "softmax", "log_softmax"])
        if fn in ("softmax", "log_softmax") and not r:
            fn = "sum"
        return f"{fn}({g.expression(shape, 2)}, axis={axis})", "out of range for"
    if kind == "rank 7":
        form = g.choose(0, 4)
        six = tuple(g.pick(["1", "2", "1", g.dim()]) for _ in range(6))
        if form == 0:
            return None, "rank 0 to 6"
        if form == 1:
            return f"ones({yaml_shape(('2', *six))})", "rank 0 to 6"
        if form == 2:
            expression = g.expression(six, 1)
            items = g.pick(["None", "..., None", ":, None"])
            return f"{wrap(expression)}[{items}]", "rank 0 to 6"
        if form == 3:
            expression = g.expression(six, 1)
            return f"stack([{expression}, {expression}])", "rank 0 to 6"
        ids = _an_id(g)
        rest = tuple(g.pick(["1", "2"]) for _ in range(6 - len(ids.shape)))
        table = g.expression((g.dim(ID_BOUND), *rest), 1)
        return f"{wrap(table)}[{ids.name}][:, None]", "rank 0 to 6"
    if kind == "ids as a number":
        name = _an_id(g).name
        table = g.expression((g.dim(ID_BOUND),), 1)
        number = g.pick(
            [
                f"sum({name})",
                f"mean({name} * 2)",
                f"sum(where({name} > 0, 1.0, 0.0))",
                f"sum(exp({name}))",
            ]
        )
        uses = [f"sum({wrap(table)}[{name}])", number]
        if g.chance(50):
            uses.reverse()
        return " + ".join(uses), "as a number"
    if kind == "step slice":
        shape = g.shape(g.choose(1, 3))
        return (
            f"{wrap(g.expression(shape, 2))}[{g.pick(['::2', '1::1', ':2:1'])}]",
            "step",
        )
    if kind == "too many indices":
        shape = g.shape(g.choose(0, 3))
        items = ", ".join(["0"] * (len(shape) + 1))
        return f"{wrap(g.expression(shape, 2))}[{items}]", "too many indices"
    if kind == "repeated axis":
        shape = g.shape(g.choose(1, 4))
        a = g.choose(0, len(shape) - 1)
        other = g.pick([str(a), str(a - len(shape))])
        fn = g.pick(REDUCTIONS)
        return f"{fn}({g.expression(shape, 2)}, axis=({a}, {other}))", "is repeated"
    assert kind == "~ of a number", kind
    shape = g.shape(g.choose(0, 3))
    return (
        f"where(~{wrap(g.expression(shape, 2))}, {g.expression(shape, 1)}, 0.0)",
        "needs a condition",
    )


def _an_id(g: Grammar) -> Variable:
    """An integer input of the model: one it has, or `ids: [N]`, added."""
    found = g.ids()
    if found:
        return found[g.choose(0, len(found) - 1)]
    added = Variable("ids", ("N",), False, True, g.chance(50))
    g.variables.append(added)  # the model's list too
    return added
