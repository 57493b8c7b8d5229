"""Unit tests of the rule table, the derivation and the printer: every operation's
derivative is checked against central finite differences through generated code,
in both modes (reverse: gradients; forward: Jacobians)."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sympy as sp
from conftest import generate_and_import

from gradgen import pipeline, scalar
from gradgen.graph import Node
from gradgen.ops import Ops
from gradgen.rules import (
    MUL,
    RULES,
    Rule,
    Spelling,
    broadcast_shape,
    diagonal,
    elementwise,
    functions,
    reduction,
    sum_jvp,
    sum_vjp,
)

# One expression per user-callable function (and operator), over a vector param x
# [n], a matrix param W [n, n], a scalar param s, inputs A [m, n] and v [n]; each
# keeps its function inside its domain at the test points (entries in +-[0.3, 1.3]).
CASES = {
    "exp": "exp(x)",
    "log": "log(square(x) + 1)",
    "sin": "sin(x)",
    "cos": "cos(x)",
    "tanh": "tanh(x)",
    "sigmoid": "sigmoid(x)",
    "relu": "relu(x)",
    "sqrt": "sqrt(square(x) + 1)",
    "abs": "abs(x)",
    "square": "square(x)",
    "softplus": "softplus(x)",
    "max": "max(x, v)",
    "min": "min(s, x)",
    "sum": "sum(A * x, axis=1)",
    "mean": "mean(W, axis=0) * x",
    "dot": "dot(x, v) * x",
    "add": "x + s",
    "sub": "s - x",
    "mul": "x * v * s",
    "div": "x / (square(s) + 1)",
    "neg": "-x",
    "powc": "x**3 + x**-2 + square(x) ** 0.5 + x**7",
    "pow": "(square(x) + 1) ** (s + 2)",
    "matmul_mv": "A @ x",
    "matmul_vm": "x @ W",
    "matmul_mm": "sum(A @ W, axis=1)",
    "transpose": "W.T @ x",
    "stack": "[s * s, sum(x), s]",
    "mean_all": "mean(W) + x",
    "logsumexp": "logsumexp(A * x, axis=1)",
    "logsumexp_all": "logsumexp(W) * x + logsumexp(x, axis=0)",
    "log1p": "log1p(square(x))",
    "expm1": "expm1(x)",
    "tan": "tan(x)",
    "arctan": "arctan(x)",
    "sinh": "sinh(x)",
    "cosh": "cosh(x)",
    "log_sigmoid": "log_sigmoid(x) + log_sigmoid(-3 * x)",
    "erf": "erf(x)",
    "gelu": "gelu(x)",
    "var": "var(A, axis=0) * x + var(x)",
    "std": "std(W, axis=1) * x + std(A * x, axis=(0, 1))",
    "norm": "norm(A, axis=0) * x + norm(x) + norm(W)",
    "max_reduce": "max(A * x, axis=0) + max(x) * s",
    "min_reduce": "min(W * x, axis=1, keepdims=True) * x",
    "softmax": "softmax(A * x) * sum(softmax(W * x, axis=0), axis=1)",
    "log_softmax": "log_softmax(A * x, axis=-1)",
    "log_of_softmax": "log(softmax(W * x, axis=0))",
    "clip": "clip(x, -0.5, s) + clip(x * v, s, 2)",
    "where": "where(x > 0, x * v, s * x) + where((x < s) & ~(v >= 0), 1, x)",
    "keepdims": "mean(A * x, axis=0, keepdims=True) * x + sum(W, axis=-1, keepdims=True)",
    "axis_tuple": "sum(W * x, axis=(0, 1)) * x + mean(A * x, axis=(-2, -1))",
    "constants": "x * pi + e * s",
    "mse": "mse(A @ x, y) + x",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits(A @ x, y) * x",
    "huber": "huber(A @ x - y, s * s + 0.5) + x",
    "cross_entropy": "cross_entropy(A * x, ids) + cross_entropy(W * x, softmax(W, axis=0), axis=0)",
    "one_hot": "one_hot(ids, n) @ (x * s)",
    "getitem": "W[0] * x + W[:, 1] + sum(x[1:] @ W[1:, :2]) * s + W[-1, None][0] * x[...]",
    "gather": "sum(W[ids], axis=0) * x + W[ids][0]",
    "take_along": "(A * x)[arange(m), ids] * s",
}


def test_every_user_function_has_a_case() -> None:
    assert set(functions()) <= set(CASES) | set(RANK_CASES)


def load(tmp_path: Path, expr: str) -> ModuleType:
    spec = tmp_path / "rule_case.yaml"
    spec.write_text(
        "gradgen: 1\n"
        "inputs: {A: [m, n], v: [n], y: [m], ids: {shape: [m], dtype: int}}\n"
        "params: {x: [n], W: [n, n], s: []}\n"
        f"define: {{f: '{expr}'}}\n"
        "loss: sum(f * f) / 2 + sum(y) * 0 + s * s\n"
        "outputs: {out: f}\n"
    )
    module, _ = generate_and_import(spec, tmp_path)
    return module


def point(rng: np.random.Generator) -> dict[str, object]:
    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(0.3, 1.3, size=shape) * rng.choice([-1.0, 1.0], size=shape)

    return {
        "A": draw(4, 3),
        "v": draw(3),
        "y": draw(4),
        "ids": rng.integers(0, 3, size=4),
        "x": draw(3),
        "W": draw(3, 3),
        "s": float(draw()),
    }


def central(fn, args: dict[str, object], name: str, h: float = 1e-6) -> np.ndarray:
    base = np.asarray(args[name], dtype=float)
    outs = []
    for i in range(base.size):
        plus, minus = base.copy().ravel(), base.copy().ravel()
        plus[i] += h
        minus[i] -= h
        hi = fn(**{**args, name: plus.reshape(base.shape)})
        lo = fn(**{**args, name: minus.reshape(base.shape)})
        outs.append((np.asarray(hi) - np.asarray(lo)) / (2 * h))
    stacked = np.stack(outs, axis=-1)
    return stacked.reshape(np.shape(fn(**args)) + base.shape)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_against_finite_differences(tmp_path: Path, case: str) -> None:
    module = load(tmp_path, CASES[case])
    for seed in range(3):
        args = point(np.random.default_rng(seed))
        grads = module.gradients(**args)
        for p in ("x", "W", "s"):
            expected = central(module.loss, args, p)
            assert np.allclose(getattr(grads, p), expected, rtol=1e-6, atol=1e-8), p
        fargs = {k: args[k] for k in inspect.signature(module.out).parameters}
        jac = module.jacobian_out(**fargs)
        for p in jac._fields:
            expected = central(module.out, fargs, p)
            assert getattr(jac, p).shape == expected.shape
            assert np.allclose(getattr(jac, p), expected, rtol=1e-6, atol=1e-8), p


@pytest.mark.parametrize(
    "name", [n for n, r in RULES.items() if r.elementwise is not None]
)
def test_elementwise_derivative_agrees_with_sympy(name: str) -> None:
    """The derivative the rule uses (possibly rewritten in terms of the output y,
    or given in a stable form) equals sympy's derivative of the definition."""
    definition, inverse, stable = RULES[name].elementwise  # type: ignore[misc]
    used = scalar.local_derivative(definition, inverse, stable)
    used = used.subs(scalar.Y, definition).replace(
        scalar.SIGMOID, lambda u: 1 / (1 + sp.exp(-u))
    )
    used = used.replace(sp.Heaviside, lambda u, *_: sp.Heaviside(u))
    for at in (-1.7, -0.4, 0.3, 1.9):
        truth = sp.diff(definition, scalar.X).subs(scalar.X, at)
        if not truth.is_real:
            continue  # outside the function's domain (sqrt, log of a negative)
        assert float(used.subs(scalar.X, at)) == pytest.approx(float(truth), rel=1e-12)


def test_derivatives_reuse_the_forward_value() -> None:
    """sympy's derivative is rewritten in terms of y = f(x) where that is cheaper."""
    cases = {
        "exp": scalar.Y,
        "tanh": 1 - scalar.Y**2,
        "sigmoid": scalar.Y * (1 - scalar.Y),
    }
    for name, expected in cases.items():
        definition, inverse, stable = RULES[name].elementwise  # type: ignore[misc]
        assert (
            sp.simplify(scalar.local_derivative(definition, inverse, stable) - expected)
            == 0
        )


def test_relu_derivative_is_zero_at_the_kink(tmp_path: Path) -> None:
    module = load(tmp_path, "relu(x) + max(0, x) + max(x, 0)")
    args = point(np.random.default_rng(0))
    args["x"] = np.array([0.0, 1.0, -1.0])
    jac = module.jacobian_out(x=args["x"])
    assert np.array_equal(np.diag(jac.x), [0.0, 3.0, 0.0])


def test_total_derivative_sums_both_paths(tmp_path: Path) -> None:
    """x * x and x + x**2 reach x along two paths: the adjoints add up (docs/derivation.md)."""
    spec = tmp_path / "twice.yaml"
    spec.write_text("gradgen: 1\nparams: {x: []}\nloss: x * x + (x + x**2)\n")
    g = pipeline.generate(spec, tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(g.text, str(g.target), "exec"), namespace)  # our own generated code
    for x in (1.0, 2.0):
        assert namespace["gradients"](x).x == pytest.approx(2 * x + 1 + 2 * x)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a / (b * c)", "a / (b * c)"),
        ("-a**2", "-(a**2)"),
        ("(-a)**b", "(-a) ** b"),  # (-a)**2 is a**2: sympy simplifies it (regions.py)
        ("a ** (b ** c)", "a**b**c"),
        ("(a ** b) ** c", "(a**b) ** c"),
    ],
)
def test_printer_parenthesises_by_precedence(
    tmp_path: Path, expr: str, printed: str
) -> None:
    """Parentheses exactly where Python needs them (floating point is not associative)."""
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"gradgen: 1\nparams: {{a: [], b: [], c: []}}\noutputs: {{f: '{expr}'}}\n"
    )
    text = pipeline.generate(spec, tmp_path).text
    body = text.split("def f(")[1].split("def jacobian_f(")[0]
    assert f"return float({printed})" in body


# ------------------------------------------ a new op is one entry in the table
# The README's claim, checked for each kind of op: an entry added to `RULES` (and
# nothing else) is callable from a spec, derived in both modes and printed.


def _log1p() -> Rule:
    # log1p' = 1 / (1 + x): sympy derives it from the definition
    return elementwise(sp.log(1 + scalar.X), "np.log1p({0})")


def _prod_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node:
    # d prod(x)/dx_j = prod(x) / x_j (x != 0), g and out put back along the axis
    x = out.args[0]
    return ops.mul(sum_vjp(ops, out, g, i), ops.div(sum_vjp(ops, out, out, i), x))


def _prod_jvp(ops: Ops, out: Node, ts: tuple[Node | None, ...], p: Node) -> Node | None:
    # the tangent of prod(x) is sum(prod(x) / x * t) along the axis
    x, t = out.args[0], ts[0]
    partial = ops.trail(ops.div(sum_vjp(ops, out, out, 0), x), p.rank)
    return None if t is None else sum_jvp(ops, out, (ops.mul(t, partial),), p)


def _mask_vjp(ops: Ops, out: Node, g: Node, i: int) -> Node | None:
    # d(x * [c > 0])/dx = diag([c > 0]); the condition c gets no derivative
    return ops.mul(g, ops.gt(out.args[1], ops.const(0.0))) if i == 0 else None


NEW_OPS = {
    "log1p": (_log1p, "log1p(square(x)) * s"),
    "prod": (
        lambda: reduction("np.prod", _prod_vjp, _prod_jvp),
        "prod(A * x, axis=0) + prod(W, axis=1) * x + prod(x) * s",
    ),
    "masked": (
        lambda: diagonal(
            2,
            broadcast_shape("masked"),
            Spelling("{0} * ({1} > 0)", MUL, (MUL, MUL + 1)),
            _mask_vjp,
            user=True,
        ),
        "masked(x * s, v - s) + masked(W @ x, x)",
    ),
}


@pytest.mark.parametrize("op", sorted(NEW_OPS))
def test_a_new_op_is_one_table_entry(
    tmp_path: Path, op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, expr = NEW_OPS[op]
    monkeypatch.setitem(RULES, op, make())
    assert op in functions()
    module = load(tmp_path, expr)
    assert f"{op}(" in inspect.getsource(module)
    for seed in range(3):
        args = point(np.random.default_rng(seed))
        grads = module.gradients(**args)
        for p in ("x", "W", "s"):
            expected = central(module.loss, args, p)
            assert np.allclose(getattr(grads, p), expected, rtol=1e-6, atol=1e-8), p
        fargs = {k: args[k] for k in inspect.signature(module.out).parameters}
        jac = module.jacobian_out(**fargs)
        for p in jac._fields:
            expected = central(module.out, fargs, p)
            assert np.allclose(getattr(jac, p), expected, rtol=1e-6, atol=1e-8), p


# ------------------------------------------ ranks above 2: numpy semantics throughout
# Over params P [B, m, n], Q [B, n, n] (batched), W [n, n], x [n], s and inputs
# R [2, B, m, n], A [m, n]: broadcasting between ranks, batched `@`, `.T` reversing
# every axis, transpose, reshape, concat, stack, ones, zeros, diag, trace.
RANK_CASES = {
    "elementwise_rank3": "tanh(P * x + s) * sum(R, axis=0)",
    "broadcast_rank4": "sum(R * P + W[None, None, :1] * x, axis=(0, 3))",
    "reduce_rank3": "mean(P, axis=1, keepdims=True) * softmax(P, axis=1) + logsumexp(P, axis=(0, 2))[:, None]",
    "index_rank3": "P[:, 1:, None, 0] * Q[-1, None, :1] + P[..., 0][0, 1:, None]",
    # @ as numpy's matmul: stacks of matrices over broadcast leading axes
    "matmul_batched_2d": "P @ W + tanh(P) @ x[:, None]",
    "matmul_batched_batched": "(P @ Q) * (tanh(P) @ Q[:1])",
    "matmul_2d_batched": "(A @ Q)[:, :, :1] * sum(W @ Q[None] @ W, axis=(0, 2))[:, None]",
    "matmul_vectors": "(P @ x)[..., None] * (x @ Q)[:, None]",
    "matmul_broadcast_batch": "sum(R @ Q, axis=(0, 1)) + (P @ Q[:1])[0]",
    "matmul_param_both": "sum(Q @ Q, axis=1)[:, None] + P @ (W * s)",
    "T": "P.T * sum(R, axis=0).T + (Q.T[0] * s)[:, None]",
    "transpose_perm": "transpose(P, (1, 0, 2)) * transpose(R, (2, 1, 3, 0))[..., 0] + transpose(W)[0]",
    "reshape": "reshape(P, [B * m, n]) @ W + reshape(Q, [B, -1])[0, :1]",
    "reshape_back": "reshape(reshape(P * s, [B, m * n]) * x[:1], [B, m, n]) @ x",
    "concat": "sum(concat([P, Q * s], axis=1) @ x, axis=1)[:, None] + concat([x, x * s, W[0]])[:n]",
    "stack_axis": "stack([P, P * s, tanh(P)], axis=-1)[..., 1] + stack([x, W[0]])[1] * s",
    "ones": "ones([B, m, n]) * P + ones([n]) @ W",
    "zeros": "zeros([B, 2, n]) + Q[:, :2] * x + zeros([n]) * s",
    "diag": "diag(Q) * x + diag(W) * sum(diag(Q * s), axis=0)",
    "trace": "trace(Q) * s + trace(W @ W) + trace(Q @ Q.T.T)",
}


def load_ranks(tmp_path: Path, expr: str) -> ModuleType:
    spec = tmp_path / "rank_case.yaml"
    spec.write_text(
        "gradgen: 1\n"
        "inputs: {R: [2, B, m, n], A: [m, n]}\n"
        "params: {P: [B, m, n], Q: [B, n, n], W: [n, n], x: [n], s: []}\n"
        f"define: {{f: '{expr}'}}\n"
        "loss: sum(f * f) / 2 + s * s\n"
        "outputs: {out: f}\n"
    )
    module, _ = generate_and_import(spec, tmp_path)
    return module


def rank_point(rng: np.random.Generator) -> dict[str, object]:
    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(0.3, 1.3, size=shape) * rng.choice([-1.0, 1.0], size=shape)

    return {
        "R": draw(2, 2, 4, 3),
        "A": draw(4, 3),
        "P": draw(2, 4, 3),
        "Q": draw(2, 3, 3),
        "W": draw(3, 3),
        "x": draw(3),
        "s": float(draw()),
    }


def check_both_modes(module: ModuleType, args: dict[str, object]) -> None:
    """Gradients of the loss and Jacobians of `out` against central differences."""
    largs = {k: args[k] for k in inspect.signature(module.loss).parameters}
    grads = module.gradients(**largs)
    for p in grads._fields:
        expected = central(module.loss, largs, p)
        assert np.shape(getattr(grads, p)) == expected.shape, p
        assert np.allclose(getattr(grads, p), expected, rtol=1e-6, atol=1e-8), p
    fargs = {k: args[k] for k in inspect.signature(module.out).parameters}
    jac = module.jacobian_out(**fargs)
    for p in jac._fields:
        expected = central(module.out, fargs, p)
        assert getattr(jac, p).shape == expected.shape, p
        assert np.allclose(getattr(jac, p), expected, rtol=1e-6, atol=1e-8), p


@pytest.mark.parametrize("case", sorted(RANK_CASES))
def test_rank_rule_against_finite_differences(tmp_path: Path, case: str) -> None:
    module = load_ranks(tmp_path, RANK_CASES[case])
    for seed in range(2):
        check_both_modes(module, rank_point(np.random.default_rng(seed)))
