"""Differential testing at ranks 3 and 4: random specs against autograd and finite
differences, as `test_differential.py` does for ranks 0-2 (its checks, its reference).

A small typed generator over batched shapes (`[B, T, d]`, `[B, d, d]`, `[2, B, T, d]`
...) writes specs with batched `@` (a stack against a matrix, against a vector, two
stacks with a broadcast batch axis), `.T` of a stack, `transpose(x, perm)`, reshapes
there and back, `concat` and `stack` along any axis, `diag` and `trace` of stacks,
`ones`/`zeros`, reductions along an axis and broadcasting between ranks. Every spec has
a loss and an output of rank 2-4; 20 specs, about 5 s (200 more in the `slow` test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_differential import NAME, Profile, RandomSpec, Var, assert_all_pass

pytest.importorskip("autograd")

SCALE = int(os.environ.get("GRADGEN_DIFF_SCALE", "1"))
SPECS, SLOW_SPECS = 2 * SCALE, 200 * SCALE  # SPECS in the fast subset
MORE_SPECS = 18 * SCALE  # with the slow tests: the CI-sized 20
RANKS = Profile("ranks", {"B": 2, "T": 3, "d": 2, "e": 3}, ())
Shape = tuple[str, ...]
CANDIDATES = [
    Var("X", ("B", "T", "d"), False),
    Var("R", ("2", "B", "T", "d"), False),
    Var("P", ("B", "T", "d"), True),
    Var("Q", ("B", "d", "d"), True),
    Var("W", ("d", "e"), True),
    Var("v", ("d",), True),
    Var("s", (), True),
]
TARGETS: list[Shape] = [
    ("B", "T", "d"),
    ("B", "T", "e"),
    ("B", "d", "d"),
    ("2", "B", "T", "d"),
    ("B", "T"),
    ("T", "B", "d"),
]
SMOOTH = ("tanh", "sin", "sigmoid", "softplus", "cos")
DIMS = ("B", "T", "d", "e")
MAX_RANK = 4


class Ranks:
    def __init__(self, rng: np.random.Generator, variables: list[Var]) -> None:
        self.rng = rng
        self.variables = variables
        self.params = [v.name for v in variables if v.param]
        named = {d for v in variables for d in v.shape}
        self.dims = [d for d in DIMS if d in named]  # `e` is Euler's e otherwise
        self.targets = [t for t in TARGETS if set(t) <= named | {"2"}]

    def pick(self, options: Any) -> Any:
        options = list(options)
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def atom(self, shape: Shape) -> str:
        exact = [v.name for v in self.variables if v.shape == shape]
        if exact and self.chance(0.8):
            return self.pick(exact)
        if shape == ():
            return self.pick(["0.5", "1.5", f"sum({self.pick(self.params)})"])
        # broadcast a variable whose shape is a suffix of this one
        suffix = [
            v.name
            for v in self.variables
            if v.shape and shape[len(shape) - len(v.shape) :] == v.shape
        ]
        if suffix and self.chance(0.7):
            return f"(ones([{', '.join(shape)}]) * {self.pick(suffix)})"
        scalar = f"mean({self.pick(self.params)})"
        return f"(ones([{', '.join(shape)}]) * {scalar} + zeros([{', '.join(shape)}]))"

    def expression(self, shape: Shape, depth: int) -> str:
        assert len(shape) <= MAX_RANK, shape
        if depth <= 0 or self.chance(0.15):
            return self.atom(shape)
        productions = [
            self.unary,
            self.binary,
            self.binary,
            self.matmul,
            self.matmul,
            self.matmul,
            self.transposed,
            self.reshaped,
            self.reduced,
            self.joined,
            self.diagonal,
        ]
        for _ in range(8):
            made = self.pick(productions)(shape, depth - 1)
            if made is not None:
                return made
        return self.atom(shape)

    def unary(self, shape: Shape, depth: int) -> str:
        return f"{self.pick(SMOOTH)}({self.expression(shape, depth)})"

    def binary(self, shape: Shape, depth: int) -> str:
        k = int(self.rng.integers(len(shape) + 1))
        if len(shape) >= 2 and self.chance(0.25):  # a size-1 leading axis too
            right = f"{self.expression(shape[1:], depth)}[None]"
        else:
            right = self.expression(shape[k:], depth)  # a suffix broadcasts
        op = self.pick(["+", "-", "*", "*"])
        return f"({self.expression(shape, depth)} {op} {right})"

    def matmul(self, shape: Shape, depth: int) -> str | None:
        if len(shape) < 2:
            return None
        *batch, m, n = shape
        k = self.pick(self.dims)
        kind = int(self.rng.integers(4))
        if kind == 0:  # a stack against a matrix
            left = self.expression((*batch, m, k), depth)
            return f"({left} @ {self.expression((k, n), depth)})"
        if kind == 1 and batch:  # two stacks, the second one perhaps broadcast
            left = self.expression((*batch, m, k), depth)
            if self.chance(0.5):
                right = self.expression((*batch[1:], k, n), depth)
                return f"({left} @ {right}[None])"
            return f"({left} @ {self.expression((*batch, k, n), depth)})"
        if kind == 2 and len(shape) < MAX_RANK:  # a stack against a vector
            left = self.expression((*shape, k), depth)
            return f"({left} @ {self.expression((k,), depth)})"
        if batch:  # a matrix against a stack
            left = self.expression((m, k), depth)
            return f"({left} @ {self.expression((*batch, k, n), depth)})"
        return None

    def transposed(self, shape: Shape, depth: int) -> str | None:
        if len(shape) < 2:
            return None
        if self.chance(0.4):
            return f"({self.expression(tuple(reversed(shape)), depth)}).T"
        perm = [int(i) for i in self.rng.permutation(len(shape))]
        inner = [""] * len(shape)
        for position, axis in enumerate(perm):
            inner[axis] = shape[position]
        perm_text = "(" + ", ".join(str(p) for p in perm) + ")"
        return f"transpose({self.expression(tuple(inner), depth)}, {perm_text})"

    def reshaped(self, shape: Shape, depth: int) -> str | None:
        if len(shape) < 2:
            return None
        flat = f"[{shape[0]}, {' * '.join(shape[1:])}]" if self.chance(0.6) else "[-1]"
        inner = self.expression(shape, depth)
        fn = self.pick(SMOOTH)
        return f"reshape({fn}(reshape({inner}, {flat})), [{', '.join(shape)}])"

    def reduced(self, shape: Shape, depth: int) -> str | None:
        if len(shape) >= MAX_RANK:
            return None
        k = int(self.rng.integers(len(shape) + 1))
        inner = (*shape[:k], self.pick(self.dims), *shape[k:])
        fn = self.pick(["sum", "mean", "logsumexp"])
        return f"{fn}({self.expression(inner, depth)}, axis={k})"

    def joined(self, shape: Shape, depth: int) -> str | None:
        k = int(self.rng.integers(len(shape) + 1))
        if len(shape) < MAX_RANK and (self.chance(0.5) or not shape):
            items = [self.expression(shape, depth) for _ in range(2)]
            axis = k - len(shape) - 1 if self.chance(0.3) else k
            return f"sum(stack([{', '.join(items)}], axis={axis}), axis={k})"
        if not shape:
            return None
        k = min(k, len(shape) - 1)
        inner = (*shape[:k], self.pick(self.dims), *shape[k + 1 :])
        first, second = self.expression(inner, depth), self.expression(shape, depth)
        joined = f"concat([{first}, {second}], axis={k})"
        back = ", ".join([":"] * k + ["None"])
        return f"(logsumexp({joined}, axis={k})[{back}] * {second})"

    def diagonal(self, shape: Shape, depth: int) -> str | None:
        if len(shape) >= MAX_RANK - 1:
            return None
        if shape and shape[-1] in self.dims and self.chance(0.7):
            inner = (*shape, shape[-1])
            return f"diag({self.expression(inner, depth)})"
        inner = (*shape, "d", "d")
        return f"trace({self.expression(inner, depth)})"


def rank_spec(seed: int) -> RandomSpec:
    rng = np.random.default_rng(7_000_000 + seed)
    variables = [v for v in CANDIDATES if rng.random() < 0.7]
    if not any(v.param for v in variables):
        variables.append(CANDIDATES[2])
    if not any(v.shape == ("B", "T", "d") for v in variables):
        variables.append(CANDIDATES[2])
    gen = Ranks(rng, variables)
    spec = RandomSpec(f"ranks{seed}", RANKS, variables)

    def with_a_param(shape: Shape, depth: int) -> str:
        for _ in range(10):
            made = gen.expression(shape, depth)
            if set(NAME.findall(made)) & set(gen.params):
                return made
        return f"({made} + sum({gen.pick(gen.params)}))"

    spec.loss = f"sum(square({with_a_param(gen.pick(gen.targets), 3)}))"
    spec.outputs["o"] = with_a_param(gen.pick(gen.targets), 2)
    return spec


def test_random_rank_specs(tmp_path: Path) -> None:
    """Random specs of ranks 3 and 4, the same ones every run."""
    assert_all_pass(range(SPECS), tmp_path, make=rank_spec)


@pytest.mark.slow
def test_random_rank_specs_more(tmp_path: Path) -> None:
    assert_all_pass(range(SPECS, SPECS + MORE_SPECS), tmp_path, make=rank_spec)


@pytest.mark.slow
def test_random_rank_specs_long(tmp_path: Path) -> None:
    assert_all_pass(range(1000, 1000 + SLOW_SPECS), tmp_path, make=rank_spec)
