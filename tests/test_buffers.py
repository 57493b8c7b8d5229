"""Unit tests of `buffers`: dead temporaries' arrays reused, as an expert writes numpy.

The property: over random graphs of element-wise ops, views, reductions and matrix
products, the printed body (with its `out=` and augmented steps) gives the same
bits as every node evaluated on its own, and never writes into an argument. The
examples: the reuse the element-wise benchmark model needs, and the traps (a view
of a buffer read after it, a value read twice, a spec-named value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from gradgen import pipeline, printer
from gradgen.graph import Node, ancestors
from gradgen.ops import Ops
from gradgen.rules import ATOM

TEMPLATES = ROOT / "templates"
SIZES = {"n": 3, "m": 2}
SHAPES: dict[str, tuple[str, ...]] = {
    "x": ("n",),
    "y": ("n",),
    "A": ("m", "n"),
    "B": ("m", "n"),
    "c": (),
}


def run(
    results: Sequence[Node], names: Mapping[Node, str], values: Mapping[str, Any]
) -> tuple[printer.Body, list[Any]]:
    """Print `results` as one function body and run it on `values`."""
    sources = {d: (a, i) for a, s in SHAPES.items() for i, d in enumerate(s)}
    body = printer.print_body(list(results), dict(names), list(SHAPES), sources)
    namespace: dict[str, Any] = {"np": np}
    for helper in body.helpers:
        exec((TEMPLATES / f"helper_{helper}.py.jinja").read_text(), namespace)
    namespace.update(values)
    with np.errstate(all="ignore"):
        exec("\n".join(body.lines), namespace)
        return body, [eval(r, namespace) for r in body.results]


def one_by_one(results: Sequence[Node], values: Mapping[str, Any]) -> list[Any]:
    """Every node evaluated on its own, from its operands' values: no line shared,
    nothing in place."""
    found: dict[Node, Any] = {}
    namespace: dict[str, Any] = {"np": np}
    for helper in ("sigmoid",):
        exec((TEMPLATES / f"helper_{helper}.py.jinja").read_text(), namespace)
    with np.errstate(all="ignore"):
        for n in ancestors(list(results)):
            if n.op == "param":
                found[n] = values[n.name]
                continue
            text = {a: (f"v{a.id}", ATOM) for a in n.args}
            code = printer.spell(n, text)[0]
            local = {f"v{a.id}": found[a] for a in n.args}
            found[n] = eval(code, namespace, local)
    return [found[r] for r in results]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[Node], dict[Node, str]]:
    ops = Ops()
    pool = [ops.leaf("param", name, shape) for name, shape in SHAPES.items()]

    def pick(shape: tuple[str, ...] | None = None) -> Node:
        choices = [n for n in pool if shape is None or n.shape == shape]
        return draw(st.sampled_from(choices))

    for _ in range(draw(st.integers(3, 14))):
        kind = draw(
            st.sampled_from(
                [
                    "binary",
                    "binary",
                    "binary",
                    "unary",
                    "unary",
                    "view",
                    "sum",
                    "matmul",
                ]
            )
        )
        a = pick()
        if kind == "binary":
            # the same shape, a scalar, or a row broadcast over a matrix
            b = pick(a.shape) if draw(st.booleans()) else pick(())
            if a.shape == ("m", "n") and draw(st.booleans()):
                b = pick(("n",))
            op = draw(st.sampled_from(["add", "sub", "mul", "div"]))
            left, right = (a, b) if draw(st.booleans()) else (b, a)
            if op == "div":  # a denominator away from zero
                right = ops.add(ops.const(2.0), ops.mul(right, right))
            node = getattr(ops, op)(left, right)
        elif kind == "unary":
            name = draw(st.sampled_from(["exp", "sin", "tanh", "relu", "sigmoid"]))
            choice = draw(st.sampled_from(["call", "neg", "square"]))
            if choice == "neg":
                node = ops.neg(a)
            elif choice == "square":
                node = ops.powc(a, 2.0)
            else:
                node = ops.call(name, ops.call("tanh", a) if name == "exp" else a)
        elif kind == "view":
            if a.rank == 2:
                node = ops.transpose(a)
            elif a.rank == 1:
                node = ops.expand_dims(a, 0)
            else:
                continue
        elif kind == "sum":
            if a.rank == 0:
                continue
            node = ops.reduce("sum", a, draw(st.sampled_from([None, 0])))
        else:
            node = ops.matmul(pick(("m", "n")), pick(("n",)))
        pool.append(node)
    made = pool[len(SHAPES) :]
    if not made:
        made = [ops.add(pool[0], pool[1])]
    results = draw(st.lists(st.sampled_from(made), min_size=1, max_size=3))
    names = {n: f"v{i}" for i, n in enumerate(made) if draw(st.integers(0, 5)) == 0}
    return results, names


@settings(max_examples=300, deadline=None)
@given(graphs(), st.integers(0, 2**32 - 1))
def test_reuse_gives_the_same_bits_and_never_writes_an_argument(
    graph: tuple[list[Node], dict[Node, str]], seed: int
) -> None:
    results, names = graph
    rng = np.random.default_rng(seed)
    values = {
        name: rng.normal(size=tuple(SIZES[d] for d in shape)) if shape else 0.7
        for name, shape in SHAPES.items()
    }
    kept = {k: np.copy(v) for k, v in values.items()}
    body, got = run(results, names, values)
    for value, want in zip(got, one_by_one(results, kept), strict=True):
        np.testing.assert_array_equal(value, want, err_msg="\n".join(body.lines))
    for k, v in values.items():
        np.testing.assert_array_equal(v, kept[k], err_msg=f"{k} was written")


def test_the_element_wise_gradient_reuses_the_arrays_it_is_done_with(
    tmp_path: Path,
) -> None:
    """The benchmark's element-wise model, sum(log(1 + exp(sin(x)**2)) * cos(x)**3):
    its loss_and_gradients as the pipeline prints it."""
    text = pipeline.generate(
        ROOT / "examples" / "elementwise.yaml", tmp_path, dump="lowered"
    ).text
    body, returned = text.split("loss_and_gradients(x):\n")[1].split("\n    -> ")
    lines = [line.strip() for line in body.splitlines()]
    code = "\n".join(lines)
    # six arrays of the batch's size made (sin, its square, 1 + e, cos, cos^2, log)
    # and no more: every other value goes into one of them once it is dead
    made = [line for line in lines if " = " in line and "out=" not in line]
    assert len(made) == 6, code
    # the sigmoid into exp's array, which nothing reads after it; the gradient
    # built in that array under its own name
    assert "dL_dx = np.divide(t1, t2, out=t1)" in lines, code
    x = np.linspace(-3, 3, 7)
    namespace: dict[str, Any] = {"np": np, "x": x}
    exec(code, namespace)
    results = returned.splitlines()[0].split(", ")
    value, gradient = (eval(r, namespace) for r in results)
    s, c = np.sin(x), np.cos(x)
    want = s * c**2 * (2 * c**2 / (1 + np.exp(-(s**2))) - 3 * np.log1p(np.exp(s**2)))
    np.testing.assert_allclose(gradient, want, rtol=1e-13)
    np.testing.assert_allclose(value, np.sum(np.log1p(np.exp(s**2)) * c**3))


def test_a_view_keeps_its_array_from_reuse() -> None:
    """`v = t0.T` is t0's array: t0 is not free while v is read, though `late` is
    the last statement that reads t0 itself."""
    ops = Ops()
    A = ops.leaf("param", "A", ("m", "n"))
    B = ops.leaf("param", "B", ("m", "n"))
    t = ops.call("exp", A)
    v = ops.transpose(t)
    late = ops.mul(ops.add(t, B), B)
    results = [late, ops.mul(v, ops.const(3.0))]
    values = {"A": np.arange(6.0).reshape(2, 3) / 7, "B": np.ones((2, 3)) / 3}
    sources = {"m": ("A", 0), "n": ("A", 1)}
    body = printer.print_body(results, {v: "v", late: "late"}, ["A", "B"], sources)
    namespace: dict[str, Any] = {"np": np, **values}
    exec("\n".join(body.lines), namespace)
    got = [eval(r, namespace) for r in body.results]
    lines = "\n".join(body.lines)
    np.testing.assert_array_equal(got[1], 3.0 * np.exp(values["A"]).T, lines)


def test_spec_named_values_and_arguments_are_never_buffers() -> None:
    ops = Ops()
    x = ops.leaf("param", "x", ("n",))
    z = ops.call("exp", x)  # spec-named: `z` must keep meaning z
    late = ops.mul(ops.call("sin", z), ops.const(2.0))
    body = printer.print_body([late], {z: "z"}, ["x"], {"n": ("x", 0)})
    writes = ("out=z", "out=x", "z +=", "z -=", "z *=", "z /=", "x *=", "x +=")
    assert not any(w in line for w in writes for line in body.lines), body.lines


def _module(tmp_path: Path, text: str) -> Any:
    """The generated module of a spec, imported."""
    import importlib.util

    spec = tmp_path / "case.yaml"
    spec.write_text(text)
    generated = pipeline.generate(spec, tmp_path)
    generated.target.write_text(generated.text)
    loaded = importlib.util.spec_from_file_location(
        f"case_{id(text)}", generated.target
    )
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


# Found by review: each printed code that read an overwritten array, or crashed.
def test_a_view_of_a_view_keeps_its_array_from_reuse(tmp_path: Path) -> None:
    module = _module(
        tmp_path,
        """gradgen: 1
name: vv
params: {A: [m, n], B: [m, n]}
define:
  v: sum(tanh(B) * cos(tanh(B)), axis=1)
  r: exp(A).T
  r2: r[None]
outputs:
  o: sum(r2) + v[:, None] * cos(B)
""",
    )
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    v = np.sum(np.tanh(B) * np.cos(np.tanh(B)), axis=1)
    want = np.sum(np.exp(A)) + v[:, None] * np.cos(B)
    np.testing.assert_allclose(module.o(A, B), want, rtol=1e-14)


def test_relu_of_a_buffered_region(tmp_path: Path) -> None:
    module = _module(
        tmp_path,
        """gradgen: 1
name: relu_region
params: {A: [m, n], B: [m, n]}
define:
  v: sum(tanh(B) * cos(tanh(B)), axis=1)
  r: relu(exp(A * B))
outputs:
  o: r * v[:, None]
""",
    )
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    v = np.sum(np.tanh(B) * np.cos(np.tanh(B)), axis=1)
    want = np.maximum(np.exp(A * B), 0) * v[:, None]
    np.testing.assert_allclose(module.o(A, B), want, rtol=1e-14)


def test_a_worker_never_returns_a_scratch_array(tmp_path: Path) -> None:
    """mean(., axis=0) of a [N, N] value has N entries, though N is the batch dim:
    not the chunk's rows, so no scratch array (which the next chunk overwrites)."""
    module = _module(
        tmp_path,
        """gradgen: 1
name: square_batch
threads: true
inputs: {K: [N, N]}
params: {w: [N]}
loss: sum(log(mean(exp(K * w), axis=0)))
""",
    )
    rng = np.random.default_rng(0)
    N = 30
    K, w = rng.normal(size=(N, N)), rng.normal(size=N)
    E = np.exp(K * w)
    M = E.mean(0)
    value, grads = module.loss_and_gradients(K, w)
    np.testing.assert_allclose(value, np.log(M).sum(), rtol=1e-13)
    np.testing.assert_allclose(grads.w, ((K * E) / M).sum(0) / N, rtol=1e-12)
