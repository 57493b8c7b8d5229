"""Differential testing: random valid specs against autograd and finite differences.

A small typed expression generator (it tracks every subexpression's symbolic shape)
writes random specs that are valid by construction: inputs and params of rank 0..2,
dims from a small pool whose sizes mostly coincide (``D``, ``N`` and the integer dim
``3`` all have size 3, ``K`` and ``2`` size 2; in some specs they are distinct, in a
few ``D = N = 8``, where ``2 ** square(D)`` is past int64), square ``[D, D]`` shapes
and the same dim on several axes, ``[D, N] @ [N, D]``, element-wise functions, broadcasting, ``@``, ``.T``, reductions with and
without an axis, vector literals, powers, and dims used as numbers (``2 ** D``,
``2 ** -square(D)``, ``sum(x) / N``...). Each spec gets a scalar loss and/or 1-3
outputs of rank 0..2, each depending on a param.

For every spec the module is generated in-process (``pipeline.generate``), imported,
and evaluated at a seeded random point away from kinks (float64); then

* the loss and the outputs are compared with the spec evaluated independently
  (``conftest.evaluate`` with numpy and with ``autograd.numpy``);
* every gradient and every Jacobian, entry by entry, with autograd's ``grad`` and
  ``jacobian`` (relative tolerance 1e-8) and with central differences of the
  generated value functions;
* every returned array (outputs, gradient and Jacobian fields) must be a fresh float
  array: no two share memory, none shares memory with an argument, and the arguments
  are left unchanged.

One test runs every spec and reports all failures together (spec text and the first
wrong entry of each). ``GRADGEN_DIFF_SCALE=k`` multiplies the number of specs; the
``slow`` test runs five times as many, with other seeds. The explicit regression tests
at the end pin the specs of issue 7.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import (
    KINK_MARGIN,
    as_0d_arrays,
    call,
    central_difference,
    evaluate,
    import_file,
    random_value,
)

from gradgen import closedform, pipeline
from gradgen.derive import derive
from gradgen.explanation import Explanation
from gradgen.explanation import explain as explain_derivation
from gradgen.load import load_yaml_text, read_spec_bytes
from gradgen.lower import lower
from gradgen.model import build
from gradgen.printer import print_program
from gradgen.spec import validate

autograd = pytest.importorskip("autograd")
anp = pytest.importorskip("autograd.numpy")
getval = pytest.importorskip("autograd.tracer").getval

# GRADGEN_DIFF_SCALE=k runs k times as many specs; GRADGEN_DIFF_SEED=s starts at
# seed s instead of 0 (other specs, for hunting bugs by hand). A failing spec is
# named spec<seed>: random_spec(seed).text() reproduces it.
SCALE = int(os.environ.get("GRADGEN_DIFF_SCALE", "1"))
FIRST_SEED = int(os.environ.get("GRADGEN_DIFF_SEED", "0"))
CI_SPECS = 320 * SCALE
QUICK_SPECS = 4 * SCALE  # of those, in the fast subset (the rest: slow)
SLOW_SPECS = 1600 * SCALE

# Against autograd: relative 1e-8, plus an absolute 1e-9 scaled by the largest entry
# (rounding in a different but equally valid evaluation order).
AD_RTOL, AD_ATOL = 1e-8, 1e-9
# Against central differences (FD_STEPS, the better of the two counts).
FD_RTOL, FD_ATOL = 1e-5, 1e-6
FD_STEPS = (1e-6, 1e-5)
# A closed form against the generated code: the same math, evaluated another way,
# as loose as against autograd: `cos(((s @ s.T) @ (s @ s.T))**(3*D))` of a large
# argument, evaluated in another order, differs by 2.5e-8 (random spec 83, one
# machine of two).
CLOSED_RTOL, CLOSED_ATOL = 1e-7, 1e-9
MAX_SKIPPED_FRACTION = 0.05


# ------------------------------------------------------------------ dims and sizes


@dataclass(frozen=True)
class Profile:
    """Sizes of the named dims, and the integer dims a spec may use."""

    name: str
    sizes: Mapping[str, int]
    integers: tuple[str, ...]


COINCIDING = Profile("coinciding", {"D": 3, "N": 3, "K": 2}, ("3", "2"))
DISTINCT = Profile("distinct", {"D": 3, "N": 4, "K": 5}, ("2",))
# 2 ** square(D) is past int64 at D = 8: integer arithmetic on dims overflows.
LARGE = Profile("large", {"D": 8, "N": 8, "K": 2}, ("2",))
PROFILES = (COINCIDING, DISTINCT, LARGE)  # drawn 75%, 20%, 5% of the time

Shape = tuple[str, ...]  # dim tokens: a name ("D") or an integer ("3")

INPUT_NAMES = ("X", "y", "v", "c", "Z")
PARAM_NAMES = ("W", "w", "u", "b", "M", "s")


def size_of(token: str, profile: Profile) -> int:
    return int(token) if token.isdigit() else profile.sizes[token]


def yaml_shape(shape: Shape) -> str:
    return "[" + ", ".join(shape) + "]"


def declared(v: Var) -> str:
    """A variable's declaration in `inputs:` or `params:`."""
    if v.declared:
        return f"{{shape: {yaml_shape(v.shape)}, dtype: int}}"
    return yaml_shape(v.shape)


# ------------------------------------------------------------------ the generator


@dataclass
class Var:
    name: str
    shape: Shape
    param: bool
    integer: bool = False  # integer ids, drawn below the size of every dim
    declared: bool = False  # `dtype: int` in the spec (else inferred from use)


@dataclass
class RandomSpec:
    """A generated spec: its YAML text, and what the reference evaluator needs."""

    name: str
    profile: Profile
    variables: list[Var]
    define: dict[str, str] = field(default_factory=dict)
    loss: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    # The attributes conftest.evaluate reads.
    @property
    def dims(self) -> dict[str, float]:
        named = {t for v in self.variables for t in v.shape if not t.isdigit()}
        return {d: float(self.profile.sizes[d]) for d in sorted(named)}

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        return {v.name: self.concrete(v.shape) for v in self.variables if not v.param}

    @property
    def integers(self) -> set[str]:
        return {v.name for v in self.variables if v.integer}

    @property
    def params(self) -> dict[str, tuple[int, ...]]:
        return {v.name: self.concrete(v.shape) for v in self.variables if v.param}

    def concrete(self, shape: Shape) -> tuple[int, ...]:
        return tuple(size_of(t, self.profile) for t in shape)

    def text(self) -> str:
        lines = ["gradgen: 1", f"name: {self.name}"]
        for section, param in (("inputs", False), ("params", True)):
            chosen = [v for v in self.variables if v.param is param]
            if chosen:
                lines.append(f"{section}:")
                lines += [f"  {v.name}: {declared(v)}" for v in chosen]
        for section, entries in (("define", self.define), ("outputs", self.outputs)):
            if entries:
                lines.append(f"{section}:")
                lines += [f'  {k}: "{e}"' for k, e in entries.items()]
        if self.loss is not None:
            lines.append(f'loss: "{self.loss}"')
        return "\n".join(lines) + "\n"


NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
SMOOTH = ("sin", "cos", "tanh", "sigmoid", "softplus", "square", "exp", "-")
KINKED = ("relu", "abs")
# Always positive, and not tiny: a safe argument of log, sqrt, ** 0.5 and a divisor.
POSITIVE = (
    "(1 + square({}))",
    "(2 + sin({}))",
    "(1 + sigmoid({}))",
    "exp(tanh({}))",
    "(0.5 + softplus({}))",
    "(1 + exp({}))",
    "sqrt(1 + square({}))",
)


class Generator:
    """Random well-typed expressions over a spec's variables.

    ``atoms`` maps each reachable shape to expressions of that shape of depth 0
    (variables, transposes, products and reductions of them, constants, dims used
    as numbers); every shape the recursion asks for is one of its keys.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        profile: Profile,
        *,
        square: bool = True,
        dim_powers: bool = True,
    ) -> None:
        self.rng = rng
        self.profile = profile
        self.square = square  # allow the same dim on both axes of a matrix
        self.dim_powers = dim_powers  # 2 ** D and friends
        self.atoms: dict[Shape, list[str]] = {}
        self.dims: list[str] = []
        self.numbers: list[str] = []  # scalars without variables: constants, dims
        self.params: set[str] = set()
        self.names: set[str] = set()  # inputs, params and define entries
        self.param_names: set[str] = set()  # params, and define entries using them

    # -- small helpers

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options: Any) -> Any:
        options = list(options)
        return options[int(self.rng.integers(len(options)))]

    def allowed(self, shape: Shape) -> bool:
        return self.square or len(shape) < 2 or shape[0] != shape[1]

    def add_atom(self, shape: Shape, expression: str, front: bool = False) -> None:
        if not self.allowed(shape):
            return
        atoms = self.atoms.setdefault(shape, [])
        if expression in atoms:
            return
        if front:
            atoms.insert(0, expression)
        elif len(atoms) < 6:
            atoms.append(expression)

    # -- the variables

    def variables(self) -> list[Var]:
        rng, p = self.rng, self.profile
        dims = ["D"]
        for dim, chance in (("N", 0.6), ("K", 0.3)):
            if rng.random() < chance:
                dims.append(dim)
        for dim in p.integers:
            if rng.random() < 0.3:
                dims.append(dim)
        variables: list[Var] = []
        if self.square and self.chance(0.4):
            variables += self.template()
        used = {v.name for v in variables}
        inputs = [n for n in INPUT_NAMES if n not in used]
        params = [n for n in PARAM_NAMES if n not in used]
        n_inputs = int(rng.integers(0, 3))
        n_params = int(rng.integers(0, 2)) if variables else int(rng.integers(1, 4))
        for names, count, param in (
            (inputs, n_inputs, False),
            (params, n_params, True),
        ):
            for name in rng.permutation(names)[:count]:
                shape = self.random_shape(dims)
                same = [v.shape for v in variables if v.param]
                if param and same and self.chance(0.3):  # w + b: issue 7's third bug
                    shape = self.pick(same)
                variables.append(Var(str(name), shape, param))
        self.dims = sorted({t for v in variables for t in v.shape})
        return variables

    def template(self) -> list[Var]:
        """The shapes of issue 7's first bug: the same dim on several axes."""
        kind = int(self.rng.integers(4))
        if kind == 0:
            return [Var("y", ("D", "D"), False), Var("w", ("D",), True)]
        if kind == 1:
            return [
                Var("y", ("D", "D"), False),
                Var("W", ("D", "D"), True),
                Var("v", ("D",), self.chance(0.5)),
            ]
        if kind == 2:
            return [
                Var("y", ("D", "N"), False),
                Var("W", ("N", "D"), True),
                Var("u", ("D",), True),
            ]
        return [
            Var("y", ("D", "3"), self.chance(0.5)),
            Var("W", ("3", "D"), True),
            Var("u", ("3",), True),
        ]

    def random_shape(self, dims: list[str]) -> Shape:
        rank = int(self.rng.choice(3, p=[0.2, 0.35, 0.45]))
        if rank == 0:
            return ()
        a = self.pick(dims)
        if rank == 1:
            return (a,)
        others = [d for d in dims if d != a]
        if self.square and (not others or self.chance(0.45)):
            return (a, a)
        if not others:
            return (a,)
        return (a, self.pick(others))

    # -- depth-0 expressions of every reachable shape

    def build_atoms(self, variables: list[Var]) -> None:
        for v in variables:
            self.add_atom(v.shape, v.name)
        params = [v for v in variables if v.param]
        for p, q in itertools.combinations(params, 2):
            if p.shape == q.shape:  # equal tangents: issue 7's third bug
                self.add_atom(p.shape, f"({p.name} + {q.name})")
        for constant in ("0.5", "2", "1.5", "3"):
            self.add_atom((), constant)
        named = [d for d in self.dims if not d.isdigit()]
        self.numbers = [n for d in named for n in self.dim_numbers(d, named)]
        self.numbers += ["0.5", "1.5", "3"]
        for _ in range(2):
            for shape, expressions in list(self.atoms.items()):
                e = expressions[0] if self.chance(0.6) else self.pick(expressions)
                if len(shape) == 2:
                    a, b = shape
                    self.add_atom((b, a), f"{e}.T")
                    self.add_atom((a,), f"sum({e}, axis=1)")
                    self.add_atom((b,), f"mean({e}, axis=0)")
                    for other, others in list(self.atoms.items()):
                        if len(other) == 2 and other[0] == b:
                            self.add_atom((a, other[1]), f"({e} @ {others[0]})")
                        if other == (b,):
                            self.add_atom((a,), f"({e} @ {others[0]})")
                        if other == (a,):
                            self.add_atom((b,), f"({others[0]} @ {e})")
                if len(shape) >= 1:
                    self.add_atom((), f"sum({e})")

    def dim_numbers(self, d: str, named: list[str]) -> list[str]:
        numbers = [d, f"({d} ** 2)", f"exp(-{d})", f"(1 / {d})", f"sqrt({d})"]
        numbers += [f"({n} / {d})" for n in named if n != d]
        if self.dim_powers:
            numbers += [
                f"(2 ** {d})",
                f"(2.0 ** {d})",
                f"(2 ** -{d})",
                f"({d} ** {d})",
                f"(2 ** -square({d}))",
                f"(2 ** square({d}))",
                f"(0.5 ** {d})",
            ]
        return numbers

    def atom(self, shape: Shape) -> str:
        if shape == () and self.chance(0.3):
            return self.pick(self.numbers)
        atoms = self.atoms[shape]
        with_params = [a for a in atoms if self.depends(a)]
        if with_params and self.chance(0.5):
            return self.pick(with_params)
        return atoms[0] if self.chance(0.3) else self.pick(atoms)

    def depends(self, expression: str) -> bool:
        """True if `expression` names a param, or a define entry that does."""
        return any(name in self.param_names for name in NAME.findall(expression))

    def with_a_param(self, shape: Shape, depth: int) -> str:
        """An expression of `shape` that depends on a param."""
        for _ in range(5):
            made = self.expression(shape, depth)
            if self.depends(made):
                return made
        atoms = [a for a in self.atoms[shape] if self.depends(a)]
        if atoms:
            return self.pick(atoms)
        return f"({made} + sum({self.pick(sorted(self.params))}))"

    def factored(self, shape: Shape, depth: int) -> str:
        """A param-dependent core times or over broadcast factors, often inside a
        function or a reduction: the forms whose forward-mode Jacobians become
        einsum products (issue 7's first bug: `y * w * w`, `v * (y @ W)`)."""
        if len(shape) < 2 and self.chance(0.7):
            sources = [
                s for s in self.atoms if len(s) == 2 and (not shape or shape[0] in s)
            ]
            if sources:
                source = self.pick(sources)
                inner = self.factored(source, depth)
                fn = self.pick(["sum", "mean", "logsumexp", "sum"])
                if not shape:
                    return f"{fn}({inner})"
                axes = [1 - source.index(shape[0])]
                if source[0] == source[1]:
                    axes = [0, 1]
                return f"{fn}({inner}, axis={self.pick(axes)})"
        core = self.with_a_param(shape, depth)
        if self.chance(0.5):
            core = f"{self.pick(SMOOTH[:-1])}({core})"
        for _ in range(int(self.rng.integers(1, 3))):
            if shape and self.chance(0.7):
                other_shape: Shape = (shape[-1],)
            else:
                other_shape = self.operand_shape(shape)
            if self.chance(0.6):
                other = self.with_a_param(other_shape, depth - 1)
            else:
                other = self.expression(other_shape, depth - 1)
            op = self.pick(["*", "*", "/", "+", "-"])
            if op == "/":
                core = f"({core} / {self.pick(POSITIVE).format(other)})"
            elif self.chance(0.5):
                core = f"({other} {op} {core})"
            else:
                core = f"({core} {op} {other})"
        return core

    # -- expressions

    def expression(self, shape: Shape, depth: int) -> str:
        if depth <= 0 or self.chance(0.2):
            return self.atom(shape)
        productions: list[Callable[[Shape, int], str | None]] = [
            self.unary,
            self.unary,
            self.binary,
            self.binary,
            self.binary,
            self.divide,
            self.power,
            self.log_or_root,
            self.extremum,
            self.matmul,
            self.matmul,
            self.transpose,
            self.reduction,
            self.reduction,
            self.literal,
            self.by_dim,
        ]
        for _ in range(10):
            made = self.pick(productions)(shape, depth - 1)
            if made is not None:
                return made
        return self.atom(shape)

    def positive(self, shape: Shape, depth: int) -> str:
        return self.pick(POSITIVE).format(self.expression(shape, depth))

    def unary(self, shape: Shape, depth: int) -> str:
        fn = self.pick(SMOOTH) if self.chance(0.85) else self.pick(KINKED)
        inner = self.expression(shape, depth)
        if fn == "-":
            return f"(-{inner})"
        if fn == "exp":  # keep magnitudes moderate
            return f"exp(0.5 * tanh({inner}))" if self.chance(0.3) else f"exp({inner})"
        return f"{fn}({inner})"

    def operand_shape(self, shape: Shape) -> Shape:
        """A shape that broadcasts with `shape` to `shape`."""
        options: list[Shape] = [shape, shape, ()]
        if len(shape) == 2:
            options += [(shape[1],), (shape[1],)]
        return self.pick(options)

    def binary(self, shape: Shape, depth: int) -> str:
        op = self.pick(["+", "-", "*", "*"])
        left = self.expression(shape, depth)
        right = self.expression(self.operand_shape(shape), depth)
        if self.chance(0.5):
            left, right = right, left
        return f"({left} {op} {right})"

    def divide(self, shape: Shape, depth: int) -> str:
        if self.chance(0.5):
            denominator = self.positive(self.operand_shape(shape), depth)
            return f"({self.expression(shape, depth)} / {denominator})"
        numerator = self.expression(self.operand_shape(shape), depth)
        return f"({numerator} / {self.positive(shape, depth)})"

    def power(self, shape: Shape, depth: int) -> str:
        kind = int(self.rng.integers(5))
        if kind == 0:
            return f"({self.expression(shape, depth)}) ** 2"
        if kind == 1:
            return f"({self.expression(shape, depth)}) ** 3"
        if kind == 2:
            exponent = self.pick(["0.5", "1.5", "-1", "-0.5", "2.5"])
            return f"{self.positive(shape, depth)} ** {exponent}"
        named = [d for d in self.dims if not d.isdigit()]
        if kind == 3 and named:
            base = self.expression(shape, depth)
            # not (2) ** D or (D ** 2) ** D when dim powers are off
            if self.dim_powers or self.names.intersection(NAME.findall(base)):
                return f"({base}) ** {self.pick(named)}"
        # a power of a scalar: a dim-valued or a literal base
        base = self.pick(self.numbers) if self.chance(0.5) else "2"
        return f"({self.expression(shape, depth)} * {base} ** -{self.pick(['1', '2'])})"

    def log_or_root(self, shape: Shape, depth: int) -> str:
        inner = self.expression(shape, depth)
        kind = int(self.rng.integers(5))
        if kind == 0:
            return f"log({self.pick(POSITIVE).format(inner)})"
        if kind == 1:
            return f"log(sigmoid({inner}))"  # rewritten to -softplus(-x)
        if kind == 2:
            return f"log(1 + exp({inner}))"  # rewritten to logaddexp
        if kind == 3:
            return f"sqrt({self.pick(POSITIVE).format(inner)})"
        return f"softplus({inner})"

    def extremum(self, shape: Shape, depth: int) -> str | None:
        fn = self.pick(["max", "min"])
        left = self.expression(shape, depth)
        right = self.pick(
            ["0", "0.5", self.expression(self.operand_shape(shape), depth)]
        )
        if left == right or not self.names.intersection(NAME.findall(left)):
            return None  # a tie everywhere (min(u, u), max(3, N)): always a kink
        if self.chance(0.5):
            left, right = right, left
        return f"{fn}({left}, {right})"

    def matmul(self, shape: Shape, depth: int) -> str | None:
        inner = [d for d in self.dims]
        self.rng.shuffle(inner)
        if len(shape) == 2:
            a, c = shape
            for b in inner:
                if (a, b) in self.atoms and (b, c) in self.atoms:
                    left = self.expression((a, b), depth)
                    return f"({left} @ {self.expression((b, c), depth)})"
            return None
        if len(shape) == 1:
            (a,) = shape
            for b in inner:
                if (a, b) in self.atoms and (b,) in self.atoms and self.chance(0.5):
                    left = self.expression((a, b), depth)
                    return f"({left} @ {self.expression((b,), depth)})"
                if (b, a) in self.atoms and (b,) in self.atoms:
                    left = self.expression((b,), depth)
                    return f"({left} @ {self.expression((b, a), depth)})"
            return None
        vectors = [s for s in self.atoms if len(s) == 1]
        if not vectors:
            return None
        v = self.pick(vectors)
        left, right = self.expression(v, depth), self.expression(v, depth)
        return f"dot({left}, {right})" if self.chance(0.3) else f"({left} @ {right})"

    def transpose(self, shape: Shape, depth: int) -> str | None:
        if len(shape) != 2 or shape[::-1] not in self.atoms:
            return None
        return f"({self.expression(shape[::-1], depth)}).T"

    def reduction(self, shape: Shape, depth: int) -> str | None:
        fn = self.pick(["sum", "mean", "logsumexp", "sum"])
        if len(shape) == 0:
            source = self.pick(list(self.atoms))
            if source == ():
                return None
            return f"{fn}({self.expression(source, depth)})"
        if len(shape) == 1:
            (a,) = shape
            sources = [(s, 1) for s in self.atoms if len(s) == 2 and s[0] == a]
            sources += [(s, 0) for s in self.atoms if len(s) == 2 and s[1] == a]
            if not sources:
                return None
            source, axis = self.pick(sources)
            inner = self.expression(source, depth)
            if self.chance(0.15):  # the textbook logsumexp, rewritten by gradgen
                return f"log(sum(exp({inner}), axis={axis}))"
            return f"{fn}({inner}, axis={axis})"
        return None

    def literal(self, shape: Shape, depth: int) -> str | None:
        if len(shape) != 1 or not shape[0].isdigit():
            return None
        items = [self.expression((), depth - 1) for _ in range(int(shape[0]))]
        return "[" + ", ".join(items) + "]"

    def by_dim(self, shape: Shape, depth: int) -> str | None:
        named = [d for d in self.dims if not d.isdigit()]
        if not named:
            return None
        d = self.pick(named)
        inner = self.expression(shape, depth)
        forms = [f"({inner} / {d})", f"({d} * {inner})", f"({inner} * exp(-{d}))"]
        if self.dim_powers:
            forms += [f"({inner} * 2 ** -square({d}))", f"({inner} * 2 ** -{d})"]
        return self.pick(forms)


def random_spec(
    seed: int,
    profile: Profile | None = None,
    *,
    square: bool = True,
    dim_powers: bool = True,
) -> RandomSpec:
    """The spec for `seed`: the same spec on every run."""
    rng = np.random.default_rng(seed)
    if profile is None:
        profile = PROFILES[int(rng.choice(3, p=[0.75, 0.2, 0.05]))]
    # Dims as exponents in some of the specs (one such power makes the
    # whole spec fail while they are refused; the other specs still test the rest).
    dim_powers = dim_powers and bool(rng.random() < 0.3)
    gen = Generator(rng, profile, square=square, dim_powers=dim_powers)
    variables = gen.variables()
    if not any(v.param for v in variables):
        variables.append(Var("s", (), True))
    gen.dims = sorted({t for v in variables for t in v.shape})
    gen.build_atoms(variables)
    spec = RandomSpec(f"spec{seed}", profile, variables)
    gen.params = {v.name for v in variables if v.param}
    gen.param_names = set(gen.params)
    gen.names = {v.name for v in variables}
    for i in range(int(rng.choice(3, p=[0.6, 0.3, 0.1]))):
        shape = gen.pick(list(gen.atoms))
        spec.define[f"h{i}"] = gen.expression(shape, 2)
        if gen.depends(spec.define[f"h{i}"]):
            gen.param_names.add(f"h{i}")
        gen.add_atom(shape, f"h{i}", front=True)
        gen.names.add(f"h{i}")

    def with_a_param(shape: Shape, depth: int) -> str:
        if gen.chance(0.5):
            return gen.factored(shape, depth)
        return gen.with_a_param(shape, depth)

    has_loss = rng.random() < 0.6
    if has_loss:
        spec.loss = with_a_param((), int(rng.integers(2, 5)))
    n_outputs = int(rng.integers(0 if has_loss else 1, 4))
    by_rank: dict[int, list[Shape]] = {}
    for shape in gen.atoms:
        by_rank.setdefault(len(shape), []).append(shape)
    for i in range(n_outputs):
        rank = gen.pick(sorted(by_rank))
        spec.outputs[f"o{i}"] = with_a_param(
            gen.pick(by_rank[rank]), int(rng.integers(1, 4))
        )
    return spec


# ------------------------------------------------------------------ the reference


def reference_namespace_additions(xp: Any) -> dict[str, Any]:
    """Grammar functions conftest's evaluator leaves out (or has unstable), from
    first principles."""

    def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        shift = np.max(getval(x), axis=axis, keepdims=True)  # a constant: no gradient
        total = xp.sum(xp.exp(x - shift), axis=axis, keepdims=keepdims)
        return xp.log(total) + (shift if keepdims else np.squeeze(shift, axis=axis))

    def sizes(shape: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in shape)

    def vector(items: Any) -> Any:  # a list of arrays is an argument, not a vector
        return xp.array(items) if all(np.ndim(i) == 0 for i in items) else list(items)

    def diag(x: Any) -> Any:
        return xp.diagonal(x, axis1=-1, axis2=-2)  # autograd: only these axes

    return {
        "__vector__": vector,
        "transpose": lambda x, perm=None: xp.transpose(x, perm),
        "reshape": lambda x, shape: xp.reshape(x, sizes(shape)),
        "concat": lambda items, axis=0: xp.concatenate(items, axis=axis),
        "stack": lambda items, axis=0: xp.stack(items, axis=axis),
        "ones": lambda shape: np.ones(sizes(shape)),
        "zeros": lambda shape: np.zeros(sizes(shape)),
        "diag": diag,
        "trace": lambda x: xp.sum(diag(x), axis=-1),
        "softplus": lambda z: xp.logaddexp(0.0, z),
        "logsumexp": logsumexp,
        # conftest's textbook 1 / (1 + exp(-z)) has a NaN derivative in autograd
        # where exp(-z) overflows; exp(-softplus(-z)) is accurate everywhere.
        "sigmoid": lambda z: xp.exp(-xp.logaddexp(0.0, -z)),
    }


def reference(
    spec: Any, values: Mapping[str, Any], xp: Any = np, kinks: list[Any] | None = None
) -> Any:
    """conftest.evaluate, with softplus and logsumexp added to its namespace (the
    values mapping is copied into the namespace, so they are passed with it)."""
    return evaluate(spec, {**values, **reference_namespace_additions(xp)}, xp, kinks)


# ------------------------------------------------------------------ checking one


class Skip(Exception):
    """The random point is unusable (not finite, or next to a kink)."""


@dataclass
class Outcome:
    spec: RandomSpec
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None


def generate_module(spec_text: str, name: str, folder: Path) -> ModuleType:
    path = folder / f"{name}.yaml"
    path.write_text(spec_text, encoding="utf-8")
    generated = pipeline.generate(path, folder)
    generated.target.write_text(generated.text, encoding="utf-8")
    return import_file(generated.target, f"gradgen_differential_{name}")


def explained(spec_text: str, name: str, folder: Path) -> Explanation:
    """The spec's explanation (its closed forms), as the pipeline builds it."""
    path = folder / f"{name}.yaml"
    path.write_text(spec_text, encoding="utf-8")
    shown = str(path)
    data = read_spec_bytes(path, shown)
    model = build(validate(load_yaml_text(data, shown), shown, name, None))
    derivatives = derive(model)
    program = lower(model, derivatives)
    return explain_derivation(
        model, derivatives, program, print_program(program), steps=False
    )


def closed_form_problems(
    spec: RandomSpec, module: ModuleType, values: dict[str, Any], folder: Path
) -> list[str]:
    """Every closed form the explanation prints (the docstrings' `dL/dw = ...`),
    evaluated on numpy (`closedform.evaluate`) at `values`, against the generated
    module's gradient or Jacobian there (itself checked against autograd and
    differences). A scalar closed form stands for an array of equal entries."""
    explanation = explained(spec.text(), spec.name, folder)
    point = {**values, **reference(spec, values).define}
    point.update({d: int(size) for d, size in spec.dims.items()})
    want: dict[str, Any] = {}
    if spec.loss is not None:
        for p, g in call(module.gradients, values)._asdict().items():
            want[f"dL/d{p}"] = g
    for out in spec.outputs:
        for p, j in call(getattr(module, f"jacobian_{out}"), values)._asdict().items():
            want[f"d{out}/d{p}"] = j
    problems: list[str] = []
    for r in [*explanation.gradients, *explanation.jacobians]:
        if r.closed is None:  # no closed form printed: nothing to check
            continue
        what = f"closed form {r.name} = {r.closed.text}"
        if r.name not in want:
            problems.append(f"{what}: the module has no such derivative")
            continue
        expected = np.asarray(want[r.name], dtype=float)
        try:
            got = np.asarray(closedform.evaluate(r.closed.expr, point), dtype=float)
            got = np.broadcast_to(got, expected.shape)
        except Exception as error:
            problems.append(
                f"{what}: evaluating raised {type(error).__name__}: {error}"
            )
            continue
        note = mismatch(got, expected, CLOSED_RTOL, CLOSED_ATOL)
        if note is not None:
            problems.append(f"{what}: {note}")
    return problems


def smooth_point(spec: RandomSpec, seed: int, limit: float = 1e8) -> dict[str, Any]:
    """A seeded random point where every value is finite and moderate and every
    relu/abs/max/min switch is further than KINK_MARGIN from its kink."""
    rng = np.random.default_rng(10_000_019 + seed)
    shapes = {**spec.inputs, **spec.params}
    reason = "no point"
    for _ in range(25):
        values = {
            name: (
                rng.integers(0, min(spec.profile.sizes.values()), size=shape)
                if name in spec.integers
                else random_value(shape, rng)
            )
            for name, shape in shapes.items()
        }
        kinks: list[Any] = []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluated = reference(spec, values, np, kinks)
        results = [evaluated.loss, *evaluated.outputs.values()]
        results = [np.asarray(r, dtype=float) for r in results if r is not None]
        if not all(np.all(np.isfinite(r)) for r in results):
            reason = "not finite"
            continue
        if max(np.max(np.abs(r), initial=0.0) for r in results) > limit:
            reason = "too large"
            continue
        if any(np.min(np.abs(k), initial=np.inf) <= KINK_MARGIN for k in kinks):
            reason = "at a kink"
            continue
        return values
    raise Skip(reason)


def mismatch(
    actual: Any, expected: Any, rtol: float, atol: float, scale: float = 1.0
) -> str | None:
    """None if close; else the worst entry, as text."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    if actual.size == 0:
        return None
    scale = max(scale, 1.0, float(np.max(np.abs(expected))))
    excess = np.abs(actual - expected) - (rtol * np.abs(expected) + atol * scale)
    bad = ~(excess <= 0)  # NaN is bad too
    if not np.any(bad):
        return None
    worst = np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf)
    index = np.unravel_index(int(np.argmax(worst)), actual.shape)
    return (
        f"entry {tuple(int(i) for i in index)} is {actual[index]!r}, "
        f"expected {expected[index]!r}"
    )


def fd_mismatch(
    fn: Callable[[dict[str, Any]], Any],
    values: dict[str, Any],
    name: str,
    analytic: Any,
    value: Any,
) -> str | None:
    """Compare with central differences at two step sizes: a match at either one
    passes. If the two estimates disagree with each other as well, differences say
    nothing here (a function too steep or too curved at this point; autograd still
    checks it): no verdict."""
    estimates, found = [], None
    for step in FD_STEPS:
        with np.errstate(all="ignore"):
            numeric = central_difference(fn, values, name, step)
        scale = max(
            float(np.max(np.abs(value), initial=0.0)),
            float(np.max(np.abs(numeric), initial=0.0)),
        )
        found = mismatch(analytic, numeric, FD_RTOL, FD_ATOL, scale)
        if found is None:
            return None
        estimates.append((numeric, scale))
    (first, scale), (second, _) = estimates
    if mismatch(first, second, FD_RTOL, FD_ATOL, scale) is not None:
        return None
    return found


def as_function_of(
    spec: RandomSpec, values: dict[str, Any], name: str, pick: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def fn(x: Any) -> Any:
        return pick(reference(spec, {**values, name: x}, anp))

    return fn


def autograd_derivative(
    spec: RandomSpec, values: dict[str, Any], name: str, pick: Callable[[Any], Any]
) -> np.ndarray:
    fn = as_function_of(spec, values, name, pick)
    x = np.asarray(values[name], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "output seems independent of input"
        return np.asarray(autograd.jacobian(fn)(x), dtype=float)


def freshness_problems(
    arguments: Mapping[str, Any], results: list[tuple[str, Any]]
) -> list[str]:
    """Every returned array is a float array of its own: shares memory with no
    other result and no argument."""
    problems = []
    arrays = [(w, r) for w, r in results if isinstance(r, np.ndarray)]
    for what, array in arrays:
        if array.dtype != np.float64:
            problems.append(f"{what} has dtype {array.dtype}, not float64")
    for (what, a), (other, b) in itertools.combinations(arrays, 2):
        if np.shares_memory(a, b):
            problems.append(f"{what} and {other} share memory")
    for what, array in arrays:
        for name, argument in arguments.items():
            if isinstance(argument, np.ndarray) and np.shares_memory(array, argument):
                problems.append(f"{what} shares memory with the argument {name}")
    return problems


def check_module(
    spec: RandomSpec,
    module: ModuleType,
    values: dict[str, Any],
    unchecked: list[str] | None = None,
) -> list[str]:
    """Every value, gradient and Jacobian of `module` at `values`, against the
    reference (numpy and autograd) and central differences; and freshness.

    Returns the problems found. A derivative autograd finds not finite (the
    reference overflowing where the generated code does not) is not compared; its
    name is appended to `unchecked`."""
    problems: list[str] = []
    unchecked = [] if unchecked is None else unchecked
    saved = {k: np.copy(v) for k, v in values.items()}
    expected = reference(spec, values, np)
    results: list[tuple[str, Any]] = []
    params = spec.params

    def note(what: str, found: str | None) -> None:
        if found is not None:
            problems.append(f"{what}: {found}")

    def against_autograd(what: str, actual: Any, truth: np.ndarray) -> None:
        if np.all(np.isfinite(truth)):
            note(what, mismatch(actual, truth, AD_RTOL, AD_ATOL))
        else:
            unchecked.append(what)

    if spec.loss is not None:
        loss = call(module.loss, values)
        note("loss", mismatch(loss, expected.loss, AD_RTOL, AD_ATOL))
        loss2, grads2 = call(module.loss_and_gradients, values)
        note(
            "loss_and_gradients()[0]", mismatch(loss2, expected.loss, AD_RTOL, AD_ATOL)
        )
        grads = call(module.gradients, values)
        for name in params:
            g = getattr(grads, name)
            results.append((f"gradients().{name}", g))
            results.append((f"loss_and_gradients()[1].{name}", getattr(grads2, name)))
            truth = autograd_derivative(spec, values, name, lambda r: r.loss)
            against_autograd(f"dloss/d{name} vs autograd", g, truth)
            against_autograd(
                f"dloss/d{name} from loss_and_gradients vs autograd",
                getattr(grads2, name),
                truth,
            )
            note(
                f"dloss/d{name} vs central differences",
                fd_mismatch(
                    lambda v: call(module.loss, v), values, name, g, expected.loss
                ),
            )
    for out in spec.outputs:
        value_fn = getattr(module, out)
        value = call(value_fn, values)
        results.append((f"{out}()", value))
        note(f"{out}", mismatch(value, expected.outputs[out], AD_RTOL, AD_ATOL))
        jacobian = call(getattr(module, f"jacobian_{out}"), values)
        for name in params:
            truth = autograd_derivative(
                spec, values, name, lambda r, o=out: r.outputs[o]
            )
            if name not in jacobian._fields:
                if np.any(truth != 0) and np.all(np.isfinite(truth)):
                    problems.append(
                        f"jacobian_{out} has no field {name}, but d{out}/d{name} "
                        f"is not zero"
                    )
                continue
            j = getattr(jacobian, name)
            results.append((f"jacobian_{out}().{name}", j))
            against_autograd(f"d{out}/d{name} vs autograd", j, truth)
            note(
                f"d{out}/d{name} vs central differences",
                fd_mismatch(
                    lambda v, f=value_fn: call(f, v),
                    values,
                    name,
                    j,
                    expected.outputs[out],
                ),
            )
    problems += freshness_problems(values, results)
    for name, before in saved.items():
        if not np.array_equal(np.asarray(values[name]), before):
            problems.append(f"the argument {name} was modified")
    return problems


def every_result(module: ModuleType, values: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the module returns at `values`: loss, gradients, outputs and
    Jacobians, each field on its own."""
    results: dict[str, Any] = {}
    if hasattr(module, "loss_and_gradients"):
        results["loss()"] = call(module.loss, values)
        value, grads = call(module.loss_and_gradients, values)
        results["loss_and_gradients()[0]"] = value
        for name, g in grads._asdict().items():
            results[f"loss_and_gradients()[1].{name}"] = g
        for name, g in call(module.gradients, values)._asdict().items():
            results[f"gradients().{name}"] = g
    for name, fn in vars(module).items():
        if name.startswith("jacobian_"):
            out = name.removeprefix("jacobian_")
            results[f"{out}()"] = call(getattr(module, out), values)
            for field_name, j in call(fn, values)._asdict().items():
                results[f"{name}().{field_name}"] = j
    return results


def zero_d_problems(module: ModuleType, values: dict[str, Any]) -> list[str]:
    """Scalars passed as 0-d arrays: the same results, and still fresh (a scalar
    output `s` must not be the caller's 0-d array)."""
    arrays = as_0d_arrays(values)
    if all(arrays[k] is v for k, v in values.items()):
        return []
    problems = []
    with_floats = every_result(module, values)
    with_arrays = every_result(module, arrays)
    for what, result in with_arrays.items():
        found = mismatch(result, with_floats[what], 1e-13, 1e-13)
        if found is not None:
            problems.append(f"{what} with 0-d arrays for scalars: {found}")
    problems += [
        f"{p} (0-d arrays for scalars)"
        for p in freshness_problems(arrays, list(with_arrays.items()))
    ]
    return problems


def check_spec(spec: RandomSpec, seed: int, folder: Path) -> Outcome:
    outcome = Outcome(spec)
    try:
        values = smooth_point(spec, seed)
    except Skip as skip:
        outcome.skipped = str(skip)
        return outcome
    try:
        module = generate_module(spec.text(), spec.name, folder)
    except Exception as error:  # a SpecError for a valid spec, or a crash
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        outcome.problems.append(f"generation failed: {type(error).__name__}: {first}")
        return outcome
    unchecked: list[str] = []
    try:
        with np.errstate(all="ignore"):
            outcome.problems += check_module(spec, module, values, unchecked)
            outcome.problems += zero_d_problems(module, values)
            outcome.problems += closed_form_problems(spec, module, values, folder)
    except Exception as error:
        outcome.problems.append(
            f"running the module raised {type(error).__name__}: {error}"
        )
    if unchecked and not outcome.problems:
        outcome.skipped = "reference derivative not finite"
    return outcome


def run_specs(
    seeds: range,
    folder: Path,
    make: Callable[..., RandomSpec] | None = None,
    **options: Any,
) -> tuple[list[Outcome], Counter[str]]:
    outcomes = []
    for seed in seeds:
        spec = (make or random_spec)(seed, **options)
        outcomes.append(check_spec(spec, seed, folder))
    skips = Counter(o.skipped for o in outcomes if o.skipped)
    return outcomes, skips


def report(outcomes: list[Outcome], skips: Counter[str], seconds: float) -> str:
    failed = [o for o in outcomes if o.problems]
    lines = [
        f"{len(failed)} of {len(outcomes)} random specs fail "
        f"({sum(skips.values())} skipped: {dict(skips)}; {seconds:.1f} s)",
    ]
    kinds = Counter(
        re.sub(r"\d", "#", p.split(":")[0]) for o in failed for p in o.problems
    )
    lines.append(f"problems by kind: {dict(kinds.most_common())}")
    for o in failed[:8]:
        lines.append("")
        lines.append(o.spec.text().rstrip())
        lines += [f"  -> {p}" for p in o.problems[:6]]
    return "\n".join(lines)


def assert_all_pass(seeds: range, folder: Path, **options: Any) -> None:
    start = time.perf_counter()
    outcomes, skips = run_specs(seeds, folder, **options)
    seconds = time.perf_counter() - start
    text = report(outcomes, skips, seconds)
    print(text)
    assert not any(o.problems for o in outcomes), text
    assert sum(skips.values()) <= MAX_SKIPPED_FRACTION * len(outcomes), text


# ------------------------------------------------------------------ random specs


def test_random_specs_quick(tmp_path: Path) -> None:
    """The first QUICK_SPECS of the CI-sized run, for `pytest -m "not slow"`."""
    assert_all_pass(range(FIRST_SEED, FIRST_SEED + QUICK_SPECS), tmp_path)


@pytest.mark.slow
def test_random_specs(tmp_path: Path) -> None:
    """CI-sized: the rest of CI_SPECS random specs, the same ones every run."""
    assert_all_pass(range(FIRST_SEED + QUICK_SPECS, FIRST_SEED + CI_SPECS), tmp_path)


@pytest.mark.slow
def test_random_specs_long(tmp_path: Path) -> None:
    """Five times as many, other seeds: about two minutes."""
    first = 1_000_000 + FIRST_SEED
    assert_all_pass(range(first, first + SLOW_SPECS), tmp_path)


def test_the_generator_makes_what_found_issue_7() -> None:
    """The random specs really contain the shapes and forms that found issue 7."""
    specs = [random_spec(seed) for seed in range(CI_SPECS)]
    texts = [s.text() for s in specs]
    count: Counter[str] = Counter()
    for spec, text in zip(specs, texts, strict=True):
        shapes = [v.shape for v in spec.variables]
        expressions = [*spec.define.values(), *spec.outputs.values()]
        expressions += [spec.loss] if spec.loss else []
        count["square [A, A]"] += any(len(s) == 2 and s[0] == s[1] for s in shapes)
        count["y: [D, D] with w: [D]"] += ("D", "D") in shapes and ("D",) in shapes
        count["[D, N] and [N, D]"] += ("D", "N") in shapes and ("N", "D") in shapes
        count["coinciding sizes"] += spec.profile is COINCIDING and len(
            {d for s in shapes for d in s}
        ) > len({spec.concrete((d,)) for s in shapes for d in s})
        count["@"] += any("@" in e for e in expressions)
        count["2 ** dim"] += bool(re.search(r"\*\* -?(square\()?[DNK]\b", text))
        count["vector literal"] += any("[" in e for e in expressions)
        for out in spec.outputs.values():
            count[f"rank-{len(output_shape(spec, out))} output"] += 1
    assert count["square [A, A]"] >= 0.3 * len(specs), count
    assert count["y: [D, D] with w: [D]"] >= 0.1 * len(specs), count
    assert count["[D, N] and [N, D]"] >= 0.05 * len(specs), count
    assert count["coinciding sizes"] >= 0.3 * len(specs), count
    assert count["@"] >= 0.3 * len(specs), count
    assert count["2 ** dim"] >= 0.1 * len(specs), count
    assert count["vector literal"] >= 0.02 * len(specs), count
    for rank in range(3):
        assert count[f"rank-{rank} output"] >= 0.1 * len(specs), count


def output_shape(spec: RandomSpec, expression: str) -> tuple[int, ...]:
    values = {
        name: np.ones(shape) for name, shape in {**spec.inputs, **spec.params}.items()
    }
    with np.errstate(all="ignore"):
        return np.shape(
            reference(
                RandomSpec(
                    spec.name,
                    spec.profile,
                    spec.variables,
                    spec.define,
                    None,
                    {"o": expression},
                ),
                values,
            ).outputs["o"]
        )


# ------------------------------------------------------------------ issue 7, exactly


def explicit_spec(
    name: str,
    inputs: Mapping[str, Shape],
    params: Mapping[str, Shape],
    *,
    loss: str | None = None,
    outputs: Mapping[str, str] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> RandomSpec:
    profile = Profile("explicit", dict(sizes or {"D": 3, "N": 3, "n": 3}), ())
    variables = [Var(k, tuple(v), False) for k, v in inputs.items()]
    variables += [Var(k, tuple(v), True) for k, v in params.items()]
    return RandomSpec(name, profile, variables, {}, loss, dict(outputs or {}))


def check_explicit(spec: RandomSpec, folder: Path, seed: int = 0) -> None:
    values = smooth_point(spec, seed, limit=np.inf)
    module = generate_module(spec.text(), spec.name, folder)
    with np.errstate(all="ignore"):
        problems = check_module(spec, module, values)
        problems += closed_form_problems(spec, module, values, folder)
    assert not problems, spec.text() + "\n".join(problems)


SQUARE = {"y": ("D", "D"), "W": ("D", "D")}
RECTANGULAR = {"y": ("D", "N"), "W": ("N", "D")}
BUG_1_VARIANTS = [
    ("v * (y @ W)", "v"),
    ("sin(y @ W) * v", "v"),
    ("(y @ W) / (1 + square(u))", "u"),
    ("logsumexp(sin(y @ W) * u, axis=1)", "u"),
]


def test_bug_1_the_jacobian_of_y_times_w_times_w(tmp_path: Path) -> None:
    spec = explicit_spec(
        "bug1", {"y": ("D", "D")}, {"w": ("D",)}, outputs={"res": "y * w * w"}
    )
    check_explicit(spec, tmp_path)


@pytest.mark.parametrize("shapes", [SQUARE, RECTANGULAR], ids=["DxD", "DxN"])
@pytest.mark.parametrize("expression,vector", BUG_1_VARIANTS)
@pytest.mark.parametrize(
    "sizes", [{"D": 3, "N": 3}, {"D": 3, "N": 4}], ids=["N=D", "N!=D"]
)
def test_bug_1_variants(
    tmp_path: Path,
    shapes: dict[str, Shape],
    expression: str,
    vector: str,
    sizes: dict[str, int],
) -> None:
    """y an input; W and the vector are params: both Jacobians are checked."""
    spec = explicit_spec(
        "bug1v",
        {"y": shapes["y"]},
        {"W": shapes["W"], vector: ("D",)},
        outputs={"res": expression},
        sizes=sizes,
    )
    check_explicit(spec, tmp_path)


@pytest.mark.parametrize("expression,vector", BUG_1_VARIANTS)
def test_bug_1_variants_with_a_vector_input(
    tmp_path: Path, expression: str, vector: str
) -> None:
    spec = explicit_spec(
        "bug1i",
        {"y": ("D", "D"), vector: ("D",)},
        {"W": ("D", "D")},
        outputs={"res": expression},
    )
    check_explicit(spec, tmp_path)


DIM_NUMBERS = {
    "2 ** D": lambda d: 2.0**d,
    "2.0 ** D": lambda d: 2.0**d,
    "D ** D": lambda d: float(d) ** d,
    "2 ** -D": lambda d: 2.0**-d,
    "2 ** -square(D)": lambda d: 2.0 ** -(d * d),
    "2 ** square(D)": lambda d: 2.0 ** (d * d),
    # accepted before issue 7; dims inside functions and constant powers
    "D ** 2": lambda d: float(d) ** 2,
    "exp(-D)": lambda d: float(np.exp(-d)),
    "sqrt(D)": lambda d: float(np.sqrt(d)),
    "sin(D)": lambda d: float(np.sin(d)),
}


@pytest.mark.parametrize("d", [3, 8])
@pytest.mark.parametrize("number", list(DIM_NUMBERS))
def test_bug_2_dims_are_floats_in_powers(tmp_path: Path, number: str, d: int) -> None:
    """loss: sum(w) * <number>, and an output w * <number>: values, the gradient,
    the Jacobian, exactly as float arithmetic gives them."""
    factor = DIM_NUMBERS[number](d)
    spec = explicit_spec(
        "bug2",
        {},
        {"w": ("D",)},
        loss=f"sum(w) * {number}",
        outputs={"o": f"w * {number}"},
        sizes={"D": d},
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    w = np.linspace(0.5, 1.5, d)
    assert module.loss(w) == pytest.approx(np.sum(w) * factor, rel=1e-12)
    np.testing.assert_allclose(module.gradients(w).w, np.full(d, factor), rtol=1e-12)
    np.testing.assert_allclose(module.o(w), w * factor, rtol=1e-12)
    np.testing.assert_allclose(module.jacobian_o(w).w, factor * np.eye(d), rtol=1e-12)
    check_explicit(spec, tmp_path)


@pytest.mark.parametrize("number", ["2 ** D", "2.0 ** D", "D ** D", "2 ** -D"])
def test_bug_2_large_dims_do_not_overflow(tmp_path: Path, number: str) -> None:
    """With D = 70, 2 ** D is past int64: the value must still be right."""
    d = 70
    factor = DIM_NUMBERS[number](d)
    spec = explicit_spec(
        "bug2big", {}, {"w": ("D",)}, loss=f"sum(w) * {number}", sizes={"D": d}
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    w = np.linspace(0.5, 1.5, d)
    assert module.loss(w) == pytest.approx(np.sum(w) * factor, rel=1e-12)
    np.testing.assert_allclose(module.gradients(w).w, np.full(d, factor), rtol=1e-12)


def test_bug_2_two_to_the_square_of_8_does_not_overflow(tmp_path: Path) -> None:
    """sum(w) * 2 ** square(D) at D = 8 is 2**64 * sum(w) = 1.8e19 * sum(w), not 0."""
    spec = explicit_spec(
        "bug2sq", {}, {"w": ("D",)}, loss="sum(w) * 2 ** square(D)", sizes={"D": 8}
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    w = np.full(8, 0.25)  # sum(w) = 2: the loss is 2**65, about 3.7e19
    assert module.loss(w) == pytest.approx(3.6893488147419103e19, rel=1e-12)
    np.testing.assert_allclose(module.gradients(w).w, np.full(8, 2.0**64), rtol=1e-12)


def test_bug_2_two_to_the_minus_square_runs(tmp_path: Path) -> None:
    """2 ** -square(D) is 2.0 ** -9, not a ValueError (integers to negative powers)."""
    spec = explicit_spec(
        "bug2neg", {}, {"w": ("D",)}, loss="sum(w) * 2 ** -square(D)", sizes={"D": 3}
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    w = np.array([0.5, 1.0, 1.5])
    assert module.loss(w) == pytest.approx(3.0 / 512, rel=1e-12)
    np.testing.assert_allclose(module.gradients(w).w, np.full(3, 1 / 512), rtol=1e-12)


FRESHNESS_SPECS = {
    "w + b": ({}, "w + b"),
    "b + w": ({}, "b + w"),
    "w - b": ({}, "w - b"),
    "2 * w + 2 * b": ({}, "2 * w + 2 * b"),
    "X @ w + X @ b": ({"X": ("N", "n")}, "X @ w + X @ b"),
    "sum(w) + sum(b)": ({}, "sum(w) + sum(b)"),
}


@pytest.mark.parametrize("case", list(FRESHNESS_SPECS))
def test_bug_3_jacobian_fields_are_separate_arrays(tmp_path: Path, case: str) -> None:
    inputs, expression = FRESHNESS_SPECS[case]
    spec = explicit_spec(
        "bug3",
        inputs,
        {"w": ("n",), "b": ("n",)},
        outputs={"o": expression},
        sizes={"n": 3, "N": 4},
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    values = smooth_point(spec, 0)
    jacobian = call(module.jacobian_o, values)
    assert jacobian.w is not jacobian.b
    assert not np.shares_memory(jacobian.w, jacobian.b)
    check_explicit(spec, tmp_path)


def test_bug_3_the_exact_spec(tmp_path: Path) -> None:
    spec = explicit_spec(
        "bug3exact", {}, {"w": ("n",), "b": ("n",)}, outputs={"o": "w + b"}
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    w, b = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.25, 0.125])
    jacobian = module.jacobian_o(w, b)
    np.testing.assert_array_equal(jacobian.w, np.eye(3))
    np.testing.assert_array_equal(jacobian.b, np.eye(3))
    assert jacobian.w is not jacobian.b
    assert not np.shares_memory(jacobian.w, jacobian.b)
    jacobian.w[0, 0] = 7.0  # writing one field leaves the other alone
    assert jacobian.b[0, 0] == 1.0


@pytest.mark.parametrize(
    "expression,expected",
    [
        ("sum(X, axis=0)", lambda X, w: np.sum(X, axis=0)),
        ("w ** 0", lambda X, w: np.ones_like(w)),
    ],
    ids=["sum(X, axis=0)", "w ** 0"],
)
def test_an_output_that_depends_on_no_param_is_valid(
    tmp_path: Path, expression: str, expected: Callable[..., Any]
) -> None:
    """Generation succeeds and the value function is right (what its Jacobian
    function returns is not decided here)."""
    spec = explicit_spec(
        "noparam",
        {"X": ("N", "n")},
        {"w": ("n",)},
        outputs={"o": expression},
        sizes={"N": 4, "n": 3},
    )
    module = generate_module(spec.text(), spec.name, tmp_path)
    rng = np.random.default_rng(0)
    values = {"X": rng.normal(size=(4, 3)), "w": rng.normal(size=3)}
    value = call(module.o, values)
    np.testing.assert_allclose(value, expected(**values), rtol=1e-12)
    assert np.asarray(value).dtype == np.float64
    assert not any(np.shares_memory(value, v) for v in values.values())


# ------------------------------------------------------------------ found by it


FLOAT_CASES = {
    # a relu/min mask of a vector broadcast over rows, summed: an int64 gradient
    "sum(W + relu(v))": ({}, {"W": ("D", "D"), "v": ("D",)}, "sum(W + relu(v))", {}),
    "sum(W - min(0.5, v))": (
        {},
        {"W": ("D", "D"), "v": ("D",)},
        "sum(W - min(0.5, v))",
        {},
    ),
    "sum(y + relu(w))": ({"y": ("D", "D")}, {"w": ("D",)}, "sum(y + relu(w))", {}),
    # a scalar broadcast over a matrix and summed along an axis: an int64 Jacobian
    "sum(y + s, axis=1)": (
        {"y": ("D", "D")},
        {"s": ()},
        None,
        {"o": "sum(y + s, axis=1)"},
    ),
    # a vector literal's Jacobian: an int64 array
    "[s, s]": ({}, {"s": ()}, None, {"o": "[s, s]"}),
    "[s, 2 * s]": ({}, {"s": ()}, None, {"o": "[s, 2 * s]"}),
}


@pytest.mark.parametrize("case", list(FLOAT_CASES))
def test_returned_arrays_are_float(tmp_path: Path, case: str) -> None:
    """Found by the random specs: integer gradients and Jacobians (the values are
    right, the dtype is int64). The README promises float arrays."""
    inputs, params, loss, outputs = FLOAT_CASES[case]
    spec = explicit_spec("floats", inputs, params, loss=loss, outputs=outputs)
    check_explicit(spec, tmp_path)


# ------------------------------------------------------------------ the harness


def test_the_reference_evaluator_agrees_with_hand_written_numpy() -> None:
    """The reference (conftest.evaluate plus softplus and logsumexp) on a few
    expressions, against numpy written by hand: first principles for the checks."""
    spec = explicit_spec(
        "ref",
        {"y": ("D", "N"), "v": ("D",)},
        {"W": ("N", "D"), "s": ()},
        outputs={
            "a": "logsumexp(sin(y @ W) * v, axis=1)",
            "c": "sum(W) * 2 ** -square(D) + s * D ** D + [s, 1, 2] @ W @ v",
        },
        sizes={"D": 3, "N": 3},
    )
    rng = np.random.default_rng(1)
    y, v, W, s = (
        rng.normal(size=(3, 3)),
        rng.normal(size=3),
        rng.normal(size=(3, 3)),
        0.7,
    )
    got = reference(spec, {"y": y, "v": v, "W": W, "s": s})
    z = np.sin(y @ W) * v
    np.testing.assert_allclose(
        got.outputs["a"], np.log(np.exp(z).sum(axis=1)), rtol=1e-13
    )
    c = W.sum() * 2.0**-9 + s * 27.0 + np.array([s, 1, 2]) @ W @ v
    np.testing.assert_allclose(got.outputs["c"], c, rtol=1e-13)
    softplus = reference_namespace_additions(np)["softplus"]
    x = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(softplus(x), np.logaddexp(0.0, x), rtol=1e-15)


def test_a_wrong_jacobian_is_caught(tmp_path: Path) -> None:
    """The checks are not vacuous: a module whose Jacobian mixes up the axes of a
    square matrix (issue 7's first bug, by hand) fails them."""
    spec = explicit_spec(
        "planted", {"y": ("D", "D")}, {"w": ("D",)}, outputs={"res": "y * w * w"}
    )
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import NamedTuple\n"
        "import numpy as np\n"
        "class ResJacobian(NamedTuple):\n"
        "    w: np.ndarray\n"
        "def res(y, w):\n"
        "    return y * w * w\n"
        "def jacobian_res(y, w):\n"
        "    e = np.eye(len(w))\n"
        "    return ResJacobian(w=np.einsum('jk,ij->ijk', e, 2 * y * w[:, None]))\n",
        encoding="utf-8",
    )
    module = import_file(planted, "gradgen_differential_planted")
    problems = check_module(spec, module, smooth_point(spec, 0))
    assert any("dres/dw vs autograd" in p for p in problems), problems
    assert any("dres/dw vs central differences" in p for p in problems), problems


def test_shared_memory_is_caught() -> None:
    x = np.ones(3)
    problems = freshness_problems({"x": x}, [("a", x[:2]), ("b", np.ones(2)), ("c", x)])
    assert any("a and c share memory" in p for p in problems), problems
    assert any("a shares memory with the argument x" in p for p in problems)
    assert not any(p.startswith("b") for p in problems)


# ------------------------------------------------------------------ closed forms

# Found by checking every closed form of the random specs against the generated
# code (`closed_form_problems`): closed forms that printed a wrong derivative.
CLOSED_FORM_CASES = {
    # a scalar adjoint filled over [D, D, D] (tfill) then summed over two axes:
    # the sum did not count the filled axis (1/D**2 instead of 1/D)
    "sum of a filled tensor": (
        {"Z": ("D", "D")},
        {"u": ("D",)},
        "mean(Z - exp(u))",
        {"o": "mean(Z - exp(u))"},
    ),
    # u broadcast over the rows of [D, 3] and summed: the closed form summed the
    # identity's rows as if unbroadcast (1 for 3)
    "sum of a broadcast vector": (
        {},
        {"u": ("3",), "w": ("D", "3")},
        None,
        {"o": "sum(u + 3 - w)"},
    ),
    # a scalar added to every entry, summed: the Jacobian is D * D, printed as 1
    "sum of a broadcast scalar": (
        {"Z": ("D", "D")},
        {"u": ()},
        None,
        {"o": "sum(Z + sum(u))"},
    ),
    # einsum with '...' given a scalar standing for a vector (the tangent of s**2
    # filled over [D]): the subscripts had the wrong rank for it
    "einsum of a filled scalar": (
        {"v": ("D",)},
        {"s": ()},
        None,
        {"o": "(s ** 2 + v) @ v"},
    ),
    # sympy simplifies u - u to 0: the [D] array it stood in was a scalar in the
    # matrix product's einsum
    "einsum of an array simplified to 0": (
        {},
        {"W": (), "u": ("D",)},
        None,
        {"o": "u @ (W - (u - u))"},
    ),
    # max(y @ w, y - y): y - y is 0, and the mask max(...) == y @ w a vector, not
    # the [D, D] matrix the sum over axis 0 needs
    "a mask whose shape sympy simplified away": (
        {"y": ("D", "D")},
        {"w": ("D",)},
        "mean(max(y @ w, y - y))",
        {},
    ),
    # the adjoint of a new axis (u[:, None]) is the gradient with that axis
    # dropped; of a scalar gradient (the sum's 1, a constant 2) it was printed
    # 1[:, 0], which no array can be indexed as
    "a new axis given a scalar gradient": (
        {},
        {"u": ("D",)},
        "sum(u[:, None])",
        {"o": "u[:, None]"},
    ),
    "a leading new axis given a scalar gradient": (
        {},
        {"u": ("D",)},
        "sum(exp(u)[None, :] * 2)",
        {},
    ),
    # the forward-mode product of three or more factors is one einsum: a factor
    # simplified to 0 (sum(s) - sum(s)) past the first two was a scalar operand
    "einsum with a third factor simplified to 0": (
        {},
        {"b": ("D", "N"), "s": ("D", "N"), "u": ("D",)},
        None,
        {"o": "cos(u @ s) * (sum(s) - sum(s)) * log(1 + square(s.T @ b))"},
    ),
    # max over the axis of w - w, which sympy makes 0: a max of a scalar 0 over
    # axis 0 could not be evaluated (logsumexp of zeros is not even 0)
    "a reduction of an array simplified to 0": (
        {},
        {"w": ("D",)},
        "sum(w * ((w - w) - max(w - w, axis=0, keepdims=True)))"
        " + sum(w * logsumexp(w - w, axis=0, keepdims=True))",
        {},
    ),
    "a new axis broadcast": (
        {"Z": ("D", "D")},
        {"u": ("D",)},
        "sum(u[:, None] + Z)",
        {"o": "sum(u[:, None] + Z, axis=0)"},
    ),
}


# found by the closed-form check in tests/test_differential_ranks.py: dims in
# arithmetic (T * T * e) in the shape of a reshape or a filled array were read
# as names ("T * T * e" split at *), and sizes in them (T * 2 * d) as names too
RESHAPE_CASES = {
    "T * T * e": "reshape(tanh(reshape(ones([B, T, T, e]) * mean(W), [B, T * T * e])),"
    " [B, T, T, e])",
    "T * 2 * e": "reshape(sigmoid(reshape(ones([B, T, 2, e]) * mean(W), [B, T * 2 * e])),"
    " [B, T, 2, e])",
}


@pytest.mark.parametrize("case", list(RESHAPE_CASES))
def test_bug_closed_forms_of_reshapes(tmp_path: Path, case: str) -> None:
    spec = explicit_spec(
        "reshapes",
        {"X": ("B", "T", "d")},
        {"W": ("d", "e")},
        outputs={"o": RESHAPE_CASES[case]},
        sizes={"B": 2, "T": 3, "d": 2, "e": 3},
    )
    check_explicit(spec, tmp_path)


@pytest.mark.parametrize("case", list(CLOSED_FORM_CASES))
def test_bug_closed_forms(tmp_path: Path, case: str) -> None:
    inputs, params, loss, outputs = CLOSED_FORM_CASES[case]
    spec = explicit_spec("closed", inputs, params, loss=loss, outputs=outputs)
    check_explicit(spec, tmp_path)
