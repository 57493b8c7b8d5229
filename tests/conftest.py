"""Shared helpers for the numerical tests of gradgen's generated modules.

Every spec in ``examples/*.yaml`` is discovered by glob, so a new example is covered by
every parametrized test automatically. The module generated from a spec lives in
``generated/<name>.py``, where ``<name>`` is the spec's ``name:`` key or, without one,
the file's stem; it is imported by file path, and a missing file is a test *failure*
with a message that says how to produce it (never a skip).

The specs are also read here, with ``yaml.safe_load``, for the shapes of the inputs
and params, and evaluated directly by a tiny reference evaluator (``evaluate``): the
expression strings are Python syntax, so they are ``eval``-ed in a namespace that maps
the grammar's functions to numpy (or ``autograd.numpy``). Using ``eval`` is acceptable
here because it only ever sees our own, trusted example files.

The suite is hermetic: it writes nothing into the checkout. No bytecode (here, nor in
the subprocesses the tests start, which inherit ``PYTHONDONTWRITEBYTECODE``), no
``.hypothesis/`` (its home is a temporary folder, its example database off), no
``.pytest_cache/`` (``-p no:cacheprovider`` in pyproject.toml), and the wheel is built
from a copy of the sources (``tests/test_wheel.py``).
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import functools
import gc
import importlib.util
import inspect
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# ----------------------------------------------------------------- hermeticity

sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # for every subprocess a test starts


def _forget_own_bytecode() -> None:
    """pytest compiled and cached this file before the lines above could stop it."""
    cache = Path(__file__).resolve().parent / "__pycache__"
    for pyc in cache.glob("conftest.*.pyc"):
        pyc.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cache.rmdir()  # only if empty


_forget_own_bytecode()

# One temporary folder per run for whatever the suite must write outside tmp_path.
SCRATCH = Path(tempfile.mkdtemp(prefix="gradgen-tests-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)

set_hypothesis_home_dir(SCRATCH / "hypothesis")  # not ./.hypothesis
settings.register_profile("hermetic", database=None)
settings.load_profile("hermetic")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
GENERATED_DIR = ROOT / "generated"

# Sizes for dim names; distinct values so that a transposed or mixed-up axis fails.
DIMS: dict[str, int] = {"N": 7, "n": 3, "h": 4, "k": 2}
# Dims not listed above get these, in order of first appearance in a spec.
SPARE_DIM_SIZES = (5, 6, 8, 9, 10, 11)

OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "beta": 0.9},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}

# Finite differences: central, float64. A point is used only if no kink (relu, abs,
# max, min) has its switching argument within KINK_MARGIN of zero; perturbing one
# coordinate by FD_STEP moves such an argument by about FD_STEP * |coefficient|, far
# less than the margin, so no FD stencil straddles a kink. A point is also redrawn
# unless every non-scalar switching argument has entries on both sides of its kink
# (so a ReLU is neither all dead, where every gradient is trivially zero, nor all
# alive, where the mask goes untested).
FD_STEP = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8
KINK_MARGIN = 1e-3
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- specs


class Example:
    """One example spec (``examples/<stem>.yaml``) and its generated module."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open(encoding="utf-8") as handle:
            self.spec: dict[str, Any] = yaml.safe_load(handle)

    def __repr__(self) -> str:
        return f"Example({self.path.name})"

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def name(self) -> str:
        """The module name: the spec's ``name:`` key, or the file's stem."""
        return str(self.spec.get("name") or self.path.stem)

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        """Input name -> concrete shape (dims resolved with ``self.dims``)."""
        return {
            k: self.shape(v["shape"] if isinstance(v, dict) else v)
            for k, v in (self.spec.get("inputs") or {}).items()
        }

    @property
    def integer_inputs(self) -> set[str]:
        """Inputs declared `dtype: int` (integer ids)."""
        return {
            k
            for k, v in (self.spec.get("inputs") or {}).items()
            if isinstance(v, dict) and v.get("dtype") == "int"
        }

    @property
    def params(self) -> dict[str, tuple[int, ...]]:
        """Param name -> concrete shape (dims resolved with ``self.dims``)."""
        return {k: self.shape(v) for k, v in (self.spec.get("params") or {}).items()}

    @property
    def arg_names(self) -> list[str]:
        """Inputs, then params, in spec order: the argument order of ``loss`` etc."""
        return [*self.inputs, *self.params]

    @property
    def define(self) -> dict[str, Any]:
        return dict(self.spec.get("define") or {})

    @property
    def loss(self) -> str | None:
        loss = self.spec.get("loss")
        return None if loss is None else str(loss)

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.spec.get("outputs") or {})

    @property
    def rule(self) -> str:
        optimizer = self.spec.get("optimizer") or {}
        if isinstance(optimizer, str):  # the shorthand `optimizer: adam`
            return optimizer
        return str(optimizer.get("rule", "sgd"))

    @property
    def hyperparameters(self) -> dict[str, float]:
        """The optimizer's hyperparameters: the spec's values over the rule's defaults."""
        optimizer = self.spec.get("optimizer") or {}
        given = dict(optimizer) if isinstance(optimizer, dict) else {}
        given.pop("rule", None)
        merged = dict(OPTIMIZER_DEFAULTS[self.rule])
        merged.update({k: float(v) for k, v in given.items()})
        return merged

    @functools.cached_property
    def dims(self) -> dict[str, int]:
        """Dim name -> size, for every dim name used in an input or param shape."""
        dims: dict[str, int] = {}
        spare = iter(SPARE_DIM_SIZES)
        for section in ("inputs", "params"):
            for declared in (self.spec.get(section) or {}).values():
                shape = declared["shape"] if isinstance(declared, dict) else declared
                for dim in shape or []:
                    if isinstance(dim, str) and dim not in dims:
                        dims[dim] = DIMS[dim] if dim in DIMS else next(spare)
        return dims

    def shape(self, dims: list[str | int] | None) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else self.dims[d] for d in dims or [])

    @functools.cached_property
    def module(self) -> ModuleType:
        return load_generated(self.name, spec_path=self.path)


def discover_examples() -> list[Example]:
    return [Example(path) for path in sorted(EXAMPLES_DIR.glob("*.yaml"))]


EXAMPLES: list[Example] = discover_examples()
EXAMPLES_BY_NAME: dict[str, Example] = {ex.name: ex for ex in EXAMPLES}
LOSS_EXAMPLES: list[Example] = [ex for ex in EXAMPLES if ex.loss is not None]
OUTPUT_CASES: list[tuple[Example, str]] = [
    (ex, out) for ex in EXAMPLES for out in ex.outputs
]


def example_id(example: Example) -> str:
    return example.stem


def output_case_id(case: tuple[Example, str]) -> str:
    return f"{case[0].stem}:{case[1]}"


def example(name: str) -> Example:
    """The example whose module is called ``name`` (fails clearly if there is none)."""
    if name not in EXAMPLES_BY_NAME:
        pytest.fail(f"no examples/*.yaml spec has module name {name!r}", pytrace=False)
    return EXAMPLES_BY_NAME[name]


# ------------------------------------------------------------------ generated code


@functools.cache
def load_generated(name: str, spec_path: Path | None = None) -> ModuleType:
    """Import ``generated/<name>.py`` by file path, from a byte-identical copy in a
    temporary folder (so that no process a test starts on the module's path, not even
    an isolated ``python -I`` that ignores PYTHONDONTWRITEBYTECODE, can put bytecode
    into ``generated/``).

    A missing file fails the calling test with a message saying how to generate it.
    """
    path = GENERATED_DIR / f"{name}.py"
    if not path.is_file():
        source = spec_path.relative_to(ROOT) if spec_path else f"examples/{name}.yaml"
        pytest.fail(
            f"generated module {path.relative_to(ROOT)} does not exist: "
            f"run `gradgen {source}` to generate it from its spec",
            pytrace=False,
        )
    copy = SCRATCH / "generated" / path.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, copy)
    return import_file(copy, f"gradgen_generated_{name}", keep=True)


def import_file(path: Path, name: str, *, keep: bool = False) -> ModuleType:
    """Import a module from its file path under `name`. It sits in sys.modules while
    it runs (NamedTuple looks its module up) and, unless `keep`, is removed after."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    if not keep:
        del sys.modules[name]
    return module


def generate_and_import(spec: Path, out: Path) -> tuple[ModuleType, str]:
    """Generate the module for `spec` into `out`, write it, and import it."""
    from gradgen import pipeline

    g = pipeline.generate(spec, out)
    g.target.write_text(g.text, encoding="utf-8")
    return import_file(g.target, f"gradgen_test_{out.name}_{g.name}"), g.text


def positional_names(fn: Callable[..., Any]) -> list[str]:
    """Names of ``fn``'s positional parameters, in order."""
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    return [
        p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds
    ]


def call(fn: Callable[..., Any], values: Mapping[str, Any]) -> Any:
    """Call ``fn`` positionally with the values its signature names."""
    return fn(*(values[name] for name in positional_names(fn)))


def public_function(module: ModuleType, name: str) -> Callable[..., Any]:
    fn = getattr(module, name, None)
    if not callable(fn):
        pytest.fail(
            f"{module.__file__} has no function {name!r}; "
            f"it defines {sorted(n for n in vars(module) if not n.startswith('_'))}",
            pytrace=False,
        )
    return fn


# ------------------------------------------------------------------ random points


def random_value(shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    """Entries of magnitude in [0.3, 1.3] with random signs; scalars as Python floats.

    Keeping away from 0 keeps log(x**2) and log(sin(x**3)**2) finite; staying below
    1.3 keeps x**3 < pi so sin(x**3) has no zero in range.
    """
    magnitude = rng.uniform(0.3, 1.3, size=shape)
    value = magnitude * rng.choice([-1.0, 1.0], size=shape)
    return float(value) if shape == () else value


def random_point(example: Example, rng: np.random.Generator) -> dict[str, Any]:
    """Random inputs and params for ``example`` (name -> value), in spec order;
    integer ids below every dim's size, so that they index any axis."""
    shapes = {**example.inputs, **example.params}
    smallest = min(example.dims.values(), default=2)
    return {
        name: (
            rng.integers(0, smallest, size=shape)
            if name in example.integer_inputs
            else random_value(shape, rng)
        )
        for name, shape in shapes.items()
    }


def smooth_point(example: Example, seed: int) -> dict[str, Any]:
    """A seeded random point, away from kinks, with both sides of each kink in use."""
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        values = random_point(example, rng)
        if smooth_and_mixed(example, values):
            return values
    raise AssertionError(f"no kink-free point found for {example}")  # pragma: no cover


def as_0d_arrays(values: Mapping[str, Any]) -> dict[str, Any]:
    """The same point with every Python float scalar replaced by a 0-d array."""
    return {
        k: np.array(v, dtype=np.float64) if isinstance(v, float) else v
        for k, v in values.items()
    }


def copy_point(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in values.items()
    }


# ----------------------------------------------------------- reference evaluation


class _VectorLiterals(ast.NodeTransformer):
    """Rewrite each list literal ``[e1, e2]`` into ``__vector__([e1, e2])``, but for
    the lists that concat, stack and reshape take (arrays, or a shape); and each
    chained comparison ``a < x < b`` into ``(a < x) & (x < b)``, as the grammar
    reads it (Python's ``and`` refuses arrays); each ``~c`` into ``__not__(c)``, a
    logical not (``~True`` is -2 in Python); and each subscript ``x[i, :]`` into
    ``__index__(x, (i, slice(None)))``."""

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Invert):
            return node
        call = ast.Call(
            func=ast.Name(id="__not__", ctx=ast.Load()),
            args=[node.operand],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        written = [_slice_call(i) if isinstance(i, ast.Slice) else i for i in items]
        index = (
            ast.Tuple(elts=written, ctx=ast.Load())
            if isinstance(node.slice, ast.Tuple)
            else written[0]
        )
        call = ast.Call(
            func=ast.Name(id="__index__", ctx=ast.Load()),
            args=[node.value, index],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        operands = [node.left, *node.comparators]
        tests: list[ast.expr] = [
            ast.Compare(left=a, ops=[op], comparators=[b])
            for a, op, b in zip(operands, node.ops, operands[1:], strict=False)
        ]
        joined = tests[0]
        for test in tests[1:]:
            joined = ast.BinOp(left=joined, op=ast.BitAnd(), right=test)
        return ast.copy_location(joined, node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name) and node.func.id in (
            "concat",
            "stack",
            "reshape",
            "ones",
            "zeros",
        ):
            for i, arg in enumerate(node.args):
                if isinstance(arg, ast.List) and (i == 0) != (
                    node.func.id == "reshape"
                ):
                    arg.elts = [self.visit(e) for e in arg.elts]
                else:
                    node.args[i] = self.visit(arg)
            return node
        self.generic_visit(node)
        return node

    def visit_List(self, node: ast.List) -> ast.AST:
        self.generic_visit(node)
        call_node = ast.Call(
            func=ast.Name(id="__vector__", ctx=ast.Load()), args=[node], keywords=[]
        )
        return ast.copy_location(call_node, node)


def _slice_call(item: ast.Slice) -> ast.expr:
    none = ast.Constant(value=None)
    bounds = [b if b is not None else none for b in (item.lower, item.upper, item.step)]
    return ast.Call(func=ast.Name(id="slice", ctx=ast.Load()), args=bounds, keywords=[])


@functools.cache
def _compile(expression: str) -> Any:
    tree = ast.parse(expression.strip(), mode="eval")
    tree = ast.fix_missing_locations(_VectorLiterals().visit(tree))
    return compile(tree, f"<spec expression {expression!r}>", "eval")


def getval(x: Any) -> Any:
    """The plain value inside an autograd box (or `x` itself)."""
    while hasattr(x, "_value"):
        x = x._value
    return x


def grammar_namespace(xp: Any, kinks: list[Any] | None = None) -> dict[str, Any]:
    """The spec grammar's functions, implemented with the numpy-like module ``xp``.

    If ``kinks`` is a list, every non-smooth operation appends to it its switching
    argument (the kink is where that argument is zero).
    """

    def note(switch: Any) -> None:
        if kinks is not None:
            kinks.append(np.asarray(switch, dtype=np.float64))

    def relu(z: Any) -> Any:
        note(z)
        return xp.maximum(0.0, z)

    def abs_(z: Any) -> Any:
        note(z)
        return xp.abs(z)

    def maximum(a: Any, b: Any) -> Any:
        note(a - b)
        return xp.maximum(a, b)

    def minimum(a: Any, b: Any) -> Any:
        note(a - b)
        return xp.minimum(a, b)

    def sum_(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return xp.sum(x, axis=axis, keepdims=keepdims)

    def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return xp.mean(x, axis=axis, keepdims=keepdims)

    def extreme(pick: Any, pairwise: Any) -> Any:
        def f(a: Any, b: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
            if b is None:
                return pick(a, axis=axis, keepdims=keepdims)
            return pairwise(a, b)

        return f

    def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        m = np.max(getval(x), axis=axis, keepdims=True)
        out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else xp.squeeze(out, axis=axis)

    def log_softmax(x: Any, axis: int = -1) -> Any:
        return x - logsumexp(x, axis=axis, keepdims=True)

    def softplus(z: Any) -> Any:
        return xp.logaddexp(0.0, z)

    def index(x: Any, item: Any) -> Any:
        if np.ndim(getval(x)) == 0:  # autograd cannot add up the adjoints of
            return x * np.ones(np.zeros(())[item].shape)  # x[None] of a 0-d array
        return x[item]

    def erf(x: Any) -> Any:
        if xp is np:
            return np.vectorize(math.erf, otypes=[float])(x)
        from autograd.scipy.special import erf as autograd_erf  # xp is autograd's

        return autograd_erf(x)

    def where(c: Any, a: Any, b: Any) -> Any:
        # autograd's where gives a broadcast branch the adjoint of the whole result,
        # not summed back to the branch's shape: broadcast the branches first, by
        # `+` (whose adjoint is summed back)
        shape = np.broadcast_shapes(np.shape(c), np.shape(a), np.shape(b))
        return xp.where(c, a + np.zeros(shape), b + np.zeros(shape))

    def cross_entropy(z: Any, labels: Any, axis: int = -1) -> Any:
        log_p = log_softmax(z, axis=axis)
        if np.asarray(getval(labels)).dtype.kind in "iu":  # class ids: a one-hot
            onehot = np.moveaxis(np.eye(np.shape(getval(z))[axis])[labels], -1, axis)
            return -xp.mean(xp.sum(log_p * onehot, axis=axis))
        return -xp.mean(xp.sum(labels * log_p, axis=axis))

    return {
        "__builtins__": {},
        "__vector__": xp.array,
        "exp": xp.exp,
        "log": xp.log,
        "sin": xp.sin,
        "cos": xp.cos,
        "tanh": xp.tanh,
        "sqrt": xp.sqrt,
        "square": lambda z: z * z,
        "sigmoid": lambda z: 1.0 / (1.0 + xp.exp(-z)),
        "relu": relu,
        "abs": abs_,
        "max": extreme(xp.max, maximum),
        "min": extreme(xp.min, minimum),
        "sum": sum_,
        "mean": mean,
        "dot": xp.dot,
        "softplus": softplus,
        "logsumexp": logsumexp,
        "log_softmax": log_softmax,
        "softmax": lambda x, axis=-1: xp.exp(log_softmax(x, axis=axis)),
        "log_sigmoid": lambda z: -softplus(-z),
        "var": lambda x, axis=None, keepdims=False: xp.var(
            x, axis=axis, keepdims=keepdims
        ),
        "std": lambda x, axis=None, keepdims=False: xp.std(
            x, axis=axis, keepdims=keepdims
        ),
        "norm": lambda x, axis=None, keepdims=False: xp.sqrt(
            xp.sum(x * x, axis=axis, keepdims=keepdims)
        ),
        "clip": lambda x, lo, hi: xp.clip(x, lo, hi),
        "where": where,
        "__index__": index,
        "__not__": np.logical_not,
        "slice": slice,
        "arange": np.arange,
        "transpose": lambda x, axes=None: xp.transpose(x, axes),
        "reshape": lambda x, shape: xp.reshape(x, tuple(shape)),
        "concat": lambda xs, axis=0: xp.concatenate(xs, axis=axis),
        "stack": lambda xs, axis=0: xp.stack(xs, axis=axis),
        "ones": lambda shape: np.ones(shape),
        "zeros": lambda shape: np.zeros(shape),
        "diag": lambda x: xp.diagonal(x, axis1=-2, axis2=-1),
        "trace": lambda x: xp.sum(xp.diagonal(x, axis1=-2, axis2=-1), axis=-1),
        "one_hot": lambda y, k: np.eye(k)[y],
        "cross_entropy": cross_entropy,
        "binary_cross_entropy_with_logits": lambda z, y: xp.mean(softplus(z) - y * z),
        "mse": lambda a, y: xp.mean((a - y) ** 2),
        "huber": lambda r, d: xp.mean(
            xp.where(xp.abs(r) <= d, r * r / 2, d * (xp.abs(r) - d / 2))
        ),
        "log1p": xp.log1p,
        "expm1": xp.expm1,
        "tan": xp.tan,
        "arctan": xp.arctan,
        "sinh": xp.sinh,
        "cosh": xp.cosh,
        "erf": erf,
        "gelu": lambda x: x * (1 + erf(x / np.sqrt(2))) / 2,
        "pi": np.pi,
        "e": np.e,
    }


def _evaluate_expression(expression: Any, namespace: dict[str, Any], xp: Any) -> Any:
    if isinstance(expression, list):  # a YAML flow sequence is a vector literal
        return xp.array([_evaluate_expression(e, namespace, xp) for e in expression])
    return eval(_compile(str(expression)), namespace)


def evaluate(
    example: Example,
    values: Mapping[str, Any],
    xp: Any = np,
    kinks: list[Any] | None = None,
) -> SimpleNamespace:
    """Evaluate a spec directly: returns ``.define`` (name -> value), ``.loss``, ``.outputs``.

    Scalars are passed in as 0-d arrays so that ``.T`` works on them.
    """
    namespace = grammar_namespace(xp, kinks)
    namespace.update(example.dims)
    for name, value in values.items():
        namespace[name] = np.asarray(value) if isinstance(value, float) else value
    define = {}
    for name, expression in example.define.items():
        define[name] = namespace[name] = _evaluate_expression(expression, namespace, xp)
    loss = (
        None
        if example.loss is None
        else _evaluate_expression(example.loss, namespace, xp)
    )
    outputs = {
        name: _evaluate_expression(expression, namespace, xp)
        for name, expression in example.outputs.items()
    }
    return SimpleNamespace(define=define, loss=loss, outputs=outputs)


def smooth_and_mixed(example: Example, values: Mapping[str, Any]) -> bool:
    """True if every relu/abs/max/min switching argument is more than KINK_MARGIN from
    its kink, and each non-scalar one has entries on both sides of it."""
    switches: list[Any] = []
    evaluate(example, values, np, switches)
    for switch in switches:
        if np.min(np.abs(switch)) <= KINK_MARGIN:
            return False
        if switch.size > 1 and not (np.any(switch > 0) and np.any(switch < 0)):
            return False
    return True


# ------------------------------------------------------------- finite differences


def _perturbed(value: Any, index: tuple[int, ...], delta: float) -> Any:
    array = np.array(value, dtype=np.float64)  # always a copy
    array[index] += delta
    return float(array) if isinstance(value, float) else array


def central_difference(
    fn: Callable[[dict[str, Any]], Any],
    values: Mapping[str, Any],
    name: str,
    step: float = FD_STEP,
) -> np.ndarray:
    """d fn(values) / d values[name] by central differences: shape out + param shape."""
    shape = np.shape(values[name])
    columns = []
    for index in np.ndindex(*shape):
        plus = {**values, name: _perturbed(values[name], index, step)}
        minus = {**values, name: _perturbed(values[name], index, -step)}
        difference = np.asarray(fn(plus), dtype=np.float64) - np.asarray(
            fn(minus), dtype=np.float64
        )
        columns.append(difference / (2.0 * step))
    out_shape = np.shape(columns[0])
    stacked = np.stack(columns, axis=-1)  # out_shape + (param size,)
    return stacked.reshape(out_shape + shape)


def fd_atol(reference: Any) -> float:
    """Absolute FD tolerance, scaled with the size of the function's value."""
    return FD_ATOL * max(1.0, float(np.max(np.abs(reference), initial=0.0)))


# --- the fast subset ---------------------------------------------------------------
#: `pytest -m "not slow"` runs every test module (but the Dask cluster's and the
#: browser's, all slow), but its tests that repeat over every example (or every
#: rule-table case) only on these; plain `pytest`, and so CI, runs them all. A sample
#: that covers each kind: the article's chain, a neuron, an MLP, integer labels,
#: embedding lookups and batched tensors.
FAST_EXAMPLES = frozenset(
    {"nested_chain", "relu_neuron", "mlp", "softmax_labels", "skipgram", "attention"}
)
FAST_RULE_CASES = frozenset(
    {
        "exp",
        "relu",
        "max",
        "sum",
        "mean",
        "matmul_mm",
        "matmul_mv",
        "transpose",
        "stack",
        "logsumexp",
        "softmax",
        "where",
        "gather",
        "cross_entropy",
        "getitem",
        "keepdims",
        "matmul_batched_batched",
        "reduce_rank3",
    }
)


#: Array libraries that take seconds to import and call (tests/test_array_api.py):
#: the fast subset runs numpy and array-api-strict, the full run all four.
SLOW_LIBRARIES = frozenset({"torch", "dask"})


def _example_name(value: Any) -> str | None:
    if isinstance(value, Example):
        return value.name
    if isinstance(value, tuple) and value and isinstance(value[0], Example):
        return value[0].name  # an (example, output) case
    if isinstance(value, Path) and value.parent.name in ("examples", "generated"):
        return value.stem
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        names = {_example_name(v) for v in callspec.params.values()} - {None}
        case = callspec.params.get("case")
        library = callspec.params.get("library")
        if library in SLOW_LIBRARIES:
            item.add_marker(pytest.mark.slow)  # torch and dask: in the full run
        elif (names and not names & FAST_EXAMPLES) or (
            isinstance(case, str)
            and item.name.split("[")[0].endswith("against_finite_differences")
            and case not in FAST_RULE_CASES
        ):
            item.add_marker(pytest.mark.slow)


# --- garbage collection --------------------------------------------------------------
# After collection the process holds a few hundred thousand long-lived objects (sympy,
# numpy, hypothesis, the test modules), and sympy's caches fill up as the tests derive;
# with Python's default thresholds every full collection walked them all, about a third
# of the fast subset's time. The objects present after collection are frozen (never
# scanned again), and a full collection comes ten times less often; garbage the tests
# make is still collected.
gc.set_threshold(5_000, 10, 100)


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()
