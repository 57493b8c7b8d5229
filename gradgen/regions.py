"""Element-wise regions of a kernel, rewritten as an expert writes them.

A lowering step, after differentiation: the derivation builds gradients one local
derivative at a time (`t4 * sig * (2 * t0) * t3 - t2 * (3 * t3**2) * t0`), where
an expert factors them (`t0 * c2 * (2 * c2 * sig - 3 * t2)` with `c2 = t3 * t3`
shared with the forward `c2 * t3`). Two rewrites:

* `simplify`: the element-wise regions of a kernel (arithmetic and element-wise
  functions, up to the values something else needs: a sum, a matrix product, a
  result, a variable the spec names) as sympy expressions, with every function
  opaque (sympy never rewrites `exp` or `log`, so no stable form is undone) and
  the values around them as symbols. sympy's own canonical form combines powers
  and cancels (`2 * t1 / t1**2` is `2 / t1`), `factor_terms` takes common factors
  out, and the regions are rebuilt together, so that a factor two of them share
  is computed once. A rewrite is kept only if the kernel then costs less: its
  array operations counted, each weighted by its size, transcendental functions
  ten times (so a rewrite never buys a multiplication with an `exp`).
* `stabilise`: softplus, sigmoid and log-sigmoid of one argument `t` (and of `-t`)
  share one exponential, written out in the stable forms that cost one
  transcendental (alone, each is its helper, of the same form: the helper's
  temporaries are freed when it returns):
  `e = exp(-|t|)`, `softplus(t) = max(t, 0) + log1p(e)`, `sigmoid(t) = max(t >= 0,
  e) / (1 + e)` (`where(t >= 0, 1, e) / (1 + e)` without numpy's slow `where`),
  `log_sigmoid(t) = min(t, 0) - log1p(e)`; no exp overflows,
  and `np.logaddexp` (a scalar loop in some numpy builds) is never called. Where
  the sign of `t` is known (`sin(x)**2 >= 0`) the branches go: `e = exp(-t)`,
  `softplus(t) = t + log1p(e)`, `sigmoid(t) = 1 / (1 + e)`.

Both return old node -> new node for every node the results need; nodes are built
in the kernel's graph (hash-consed, so equal subexpressions are one node).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from typing import Any

import sympy as sp
from sympy.calculus.util import function_range

from .graph import LEAVES, Exponent, Node, ancestors, attr
from .ops import Ops
from .rules import RULES
from .simplify import MASKS, VIEWS

# --- what a region is ------------------------------------------------------------------

_ARITHMETIC = frozenset({"add", "sub", "mul", "div", "neg", "powc"})
#: Element-wise functions that are cheap (a pass of arithmetic, not a series).
_CHEAP = frozenset({"abs", "square", "relu", "neg"})
#: Functions the stable lowering expands (each costs an exp and a few passes).
_LOGISTIC = frozenset({"softplus", "sigmoid", "log_sigmoid"})
#: Known to be >= 0 whatever the argument.
_NONNEGATIVE = frozenset(
    {"exp", "sigmoid", "softplus", "cosh", "sqrt", "abs", "relu", "square"}
)
#: Regions reaching more nodes than this are left as they are (generation time).
REGION_LIMIT = 60
#: Above this many operations, an expression is not put over a common denominator.
CANCEL_LIMIT = 24


def _function(op: str) -> bool:
    rule = RULES.get(op)
    return rule is not None and rule.elementwise is not None


def in_region(node: Node) -> bool:
    """An element-wise operation sympy may rearrange: arithmetic and functions of
    one operand (exp, sin, softplus...)."""
    return node.op in _ARITHMETIC or _function(node.op)


# --- cost ----------------------------------------------------------------------------

_LARGE = 1000.0  # the size of a symbolic dim, for comparing costs


def size(node: Node) -> float:
    """How many elements the node has, with every named dim counted as large."""
    total = 1.0
    for d in node.shape:
        total *= d if isinstance(d, int) else _LARGE
    return total


def weight(node: Node) -> float:
    """The cost of computing the node from its operands, per element."""
    if node.op in LEAVES or node.op in VIEWS or node.op == "shape":
        return 0.0
    if node.op in _LOGISTIC:
        return 15.0  # an exp, a log1p or a division, and a few passes
    if _function(node.op) and node.op not in _CHEAP:
        return 10.0
    return 1.0


def cost(roots: Iterable[Node], size_of: Callable[[Node], float] = size) -> float:
    """The kernel's cost: every operation its results need, weighted, each of
    `size_of` elements."""
    return sum(weight(n) * size_of(n) for n in ancestors(roots))


# --- substitution --------------------------------------------------------------------


def substitute(
    ops: Ops, roots: Iterable[Node], replace: Mapping[Node, Node]
) -> dict[Node, Node]:
    """Old node -> new node for everything the roots need, with `replace[n]` (built
    over the old nodes below n) standing for n; other nodes are rebuilt as they
    were over their new operands, not folded again (they were folded when first
    built), except that a product with a reciprocal is a division, `x * (1 / d)`
    is `x / d`."""
    new: dict[Node, Node] = {}

    def rebuild(node: Node) -> Node:
        args = tuple(new[a] for a in node.args)
        if args == node.args:
            return node
        if node.op == "mul" and any(_reciprocal(a) for a in args):
            ratio, other = args if _reciprocal(args[0]) else args[::-1]
            return ops.graph.node("div", (other, ratio.args[1]), node.shape)
        return ops.graph.node(node.op, args, node.shape, node.attrs)

    # in the old topological order, so that the new nodes keep it
    for node in ancestors(roots):
        source = replace.get(node)
        if source is None:
            new[node] = rebuild(node)
            continue
        for n in ancestors([source]):  # over nodes below `node`: mapped already
            if n not in new:
                new[n] = rebuild(n)
        new[node] = new[source]
    return new


def _reciprocal(node: Node) -> bool:
    return node.op == "div" and node.args[0].is_const and node.args[0].value == 1


# --- graph -> sympy ------------------------------------------------------------------


@cache
def _sympy_function(op: str) -> Any:
    """An opaque real function: sympy knows its sign where it is known, nothing
    else (so it never rewrites exp(a) * exp(b), nor log(exp(x)))."""
    if op in _NONNEGATIVE:
        return sp.Function(f"{op}_", nonnegative=True)
    return sp.Function(f"{op}_", real=True)


class _Region:
    """The element-wise regions of one kernel, as sympy expressions."""

    def __init__(self, ops: Ops, results: list[Node], keep: Iterable[Node]) -> None:
        self.ops = ops
        self.results = results
        nodes = ancestors(results)
        self.nodes = set(nodes)
        keep = set(keep)
        users: dict[Node, list[Node]] = {}
        for n in nodes:
            for a in n.args:
                users.setdefault(a, []).append(n)
        result_set = set(results)
        self.interior = {n for n in nodes if in_region(n) and n not in keep}
        #: region nodes whose value something outside the region needs
        self.roots = [
            n
            for n in nodes
            if in_region(n)
            and (
                n in result_set
                or n in keep
                or any(not in_region(u) or u in keep for u in users.get(n, ()))
            )
        ]
        self.symbols: dict[sp.Symbol, Node] = {}
        self._leaves: dict[Node, Any] = {}

    def leaf(self, node: Node) -> Any:
        found = self._leaves.get(node)
        if found is not None:
            return found
        if node.is_const and math.isfinite(node.value):
            found = _number(node.value)
        else:
            name = f"_n{node.id:06d}"  # sorts in creation (topological) order
            if node.op == "dim":
                found = sp.Symbol(name, positive=True, integer=True)
            else:
                found = sp.Symbol(name, real=True)
            self.symbols[found] = node
        self._leaves[node] = found
        return found

    def expr(self, root: Node) -> Any | None:
        """`root` as sympy down to the region's leaves; None if it is too large."""
        memo: dict[Node, Any] = {}
        reached = 0
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if node is not root and node not in self.interior:
                memo[node] = self.leaf(node)
                continue
            if not ready:
                reached += 1
                if reached > REGION_LIMIT:
                    return None
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in memo)
                continue
            memo[node] = _convert(node, [memo[a] for a in node.args])
        return memo[root]


def _number(value: float) -> Any:
    """A float as an exact sympy number: 0.1 -> 1/10."""
    return sp.Integer(int(value)) if value.is_integer() else sp.Rational(repr(value))


def _convert(node: Node, args: list[Any]) -> Any:
    op = node.op
    if op == "add":
        return args[0] + args[1]
    if op == "sub":
        return args[0] - args[1]
    if op == "mul":
        return args[0] * args[1]
    if op == "div":
        return args[0] / args[1]
    if op == "neg":
        return -args[0]
    if op == "powc":
        return args[0] ** _number(attr(node, Exponent).k)
    if op == "square":
        return args[0] ** 2
    return _sympy_function(op)(args[0])


# --- sympy -> graph ------------------------------------------------------------------


class _Builder:
    """sympy expressions back into graph nodes, through `Ops` (so the stable
    rewrites of `simplify.py` apply): scalars combined before they touch an array,
    integer powers as products with their squares shared, a minus sign as a
    subtraction."""

    def __init__(self, region: _Region) -> None:
        self.ops = region.ops
        self.region = region
        self.functions = {_sympy_function(op): op for op in RULES if _function(op)}
        self.memo: dict[Any, Node] = {}

    def build(self, expr: Any) -> Node:
        found = self.memo.get(expr)
        if found is None:
            found = self._build(expr)
            self.memo[expr] = found
        return found

    def _build(self, expr: Any) -> Node:
        ops = self.ops
        if isinstance(expr, sp.Symbol):
            return self.region.symbols[expr]
        if expr.is_Number:
            return ops.const(float(expr))
        if expr.is_Add:
            return self._sum(expr)
        if expr.is_Mul:
            return self._product(expr)
        if expr.is_Pow:
            base, k = expr.args
            if k.is_Integer and k < 0:
                return ops.div(ops.const(1.0), self.build(base ** (-k)))
            if k.is_Integer and k >= 2:
                return self._power(self.build(base), int(k))
            return ops.powc(self.build(base), float(k))
        if isinstance(expr, sp.Abs):
            return ops.call("abs", self.build(expr.args[0]))
        op = self.functions.get(expr.func)
        if op is not None:
            return ops.call(op, self.build(expr.args[0]))
        raise NotImplementedError(f"cannot rebuild {expr}")

    def _sum(self, expr: Any) -> Node:
        plus: list[Node] = []
        minus: list[Node] = []
        for term in sp.Add.make_args(expr):
            coeff, rest = term.as_coeff_Mul()
            if coeff < 0:
                minus.append(self._number(-coeff * rest))
            else:
                plus.append(self._number(term))
        out: Node | None = None
        for t in _scalars_first(plus):
            out = t if out is None else self.ops.add(out, t)
        for t in _scalars_first(minus):
            out = self.ops.neg(t) if out is None else self.ops.sub(out, t)
        assert out is not None
        return out

    def _product(self, expr: Any) -> Node:
        coeff, factors = expr.as_coeff_mul()
        if coeff < 0:
            return self.ops.neg(self._number(-expr))
        numer: list[Node] = []
        denom: list[Node] = []
        for f in factors:
            if f.is_Pow and f.exp.is_Integer and f.exp < 0:
                denom.append(self.build(f.base ** (-f.exp)))
            else:
                numer.append(self.build(f))
        top = None if coeff == 1 and numer else self.ops.const(float(coeff))
        for f in _scalars_first(numer):
            top = f if top is None else self.ops.mul(top, f)
        bottom: Node | None = None
        for f in _scalars_first(denom):
            bottom = f if bottom is None else self.ops.mul(bottom, f)
        assert top is not None
        return top if bottom is None else self.ops.div(top, bottom)

    def _number(self, expr: Any) -> Node:
        """`expr` as numbers, never booleans: numpy adds two masks as a logical
        or, and refuses to subtract or negate them."""
        node = self.build(expr)
        if boolean(node):
            return self.ops.make("as_float", node, shape=node.shape)
        return node

    def _power(self, a: Node, k: int) -> Node:
        """a**k as products by squaring; a square as the node the kernel already
        has (`a * a` or `a**2`), else `a**2` alone or `a * a` inside a product."""
        square = self._square(a, alone=k == 2)
        if k == 2:
            return square
        result: Node | None = a if k & 1 else None
        k >>= 1
        while True:
            if k & 1:
                result = square if result is None else self.ops.mul(square, result)
            k >>= 1
            if not k:
                assert result is not None
                return result
            square = self._square(square, alone=False)

    def _square(self, a: Node, alone: bool) -> Node:
        graph = self.ops.graph
        for op, args, attrs in (
            ("mul", (a, a), None),
            ("powc", (a,), Exponent(2.0)),
        ):
            found = graph.find(op, args, attrs)
            if found is not None and found in self.region.nodes:
                return found
        return self.ops.powc(a, 2) if alone else self.ops.mul(a, a)


def _scalars_first(nodes: list[Node]) -> list[Node]:
    """Scalars before arrays (they combine before touching an array), smaller
    arrays before larger ones; otherwise in sympy's order."""
    return sorted(nodes, key=lambda n: (n.rank > 0, size(n)))


@lru_cache(maxsize=4096)
def _candidates(expr: Any) -> tuple[Any, ...]:
    """A few cheap rewritings (sympy's full `simplify` takes seconds). A function of
    `expr` alone, remembered: a module's kernels (`loss_and_gradients`, `step`, the
    Jacobians) meet the same regions again."""
    found = [expr]
    factored = sp.factor_terms(expr)
    if factored != expr:
        found.append(factored)
    if sp.count_ops(expr) <= CANCEL_LIMIT:
        cancelled = sp.factor_terms(sp.cancel(expr))
        if cancelled not in found:
            found.append(cancelled)
    return tuple(found)


def simplify(ops: Ops, results: list[Node], keep: Iterable[Node]) -> dict[Node, Node]:
    """The kernel's element-wise regions rewritten where that makes it cheaper.

    `keep`: nodes to compute as they are (the spec's named variables): they bound
    the regions around them. Returns old node -> new node, for every node the
    results need."""
    region = _Region(ops, results, keep)
    builder = _Builder(region)
    chosen: dict[Node, Node] = {}
    best = cost(results)
    for root in region.roots:
        expr = region.expr(root)
        if expr is None:
            continue
        for candidate in _candidates(expr):
            if candidate.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
                continue  # sympy's x/0: the graph's division stays
            try:
                new = builder.build(candidate)
            except NotImplementedError:
                continue
            if new is root or new.shape != root.shape or boolean(new):
                continue
            trial = {**chosen, root: new}
            mapped = substitute(ops, results, trial)
            found = cost(mapped[r] for r in results)
            if found < best:
                best, chosen = found, trial
    return substitute(ops, results, chosen)


def boolean(node: Node) -> bool:
    """A mask, or a product of masks (numpy would compute it as booleans)."""
    if node.op in MASKS:
        return True
    return node.op == "mul" and all(boolean(a) for a in node.args)


# --- softplus, sigmoid and log-sigmoid sharing one exp -----------------------------------


Interval = tuple[float, float]
_ANY: Interval = (-math.inf, math.inf)


def bounds(nodes: Iterable[Node]) -> dict[Node, Interval]:
    """For each node (and what it needs): an interval [lo, hi] holding every value
    it takes wherever it is defined (-inf and inf where nothing is known). Interval
    arithmetic for `+ - * /`, negation and constant powers (`x * x` and even powers
    are >= 0 whatever x); for an element-wise function f the image of its operand's
    interval under its rule's definition (sympy's `function_range`, so a new
    function in the rule table needs nothing here): `sin(x)**2` is in [0, 1],
    `exp(sin(x)**2)` in [1, e]."""
    found: dict[Node, Interval] = {}
    for n in ancestors(nodes):
        b = [found[a] for a in n.args]
        op = n.op
        if n.is_const:
            found[n] = (float(n.value), float(n.value))
        elif op == "dim":
            found[n] = (0.0, math.inf)
        elif op == "neg":
            found[n] = (-b[0][1], -b[0][0])
        elif op in ("mul", "div") and n.args[0] is n.args[1]:
            found[n] = _image("square", b[0]) if op == "mul" else (1.0, 1.0)
        elif op in ("add", "sub", "mul", "div", "powc"):
            k = attr(n, Exponent).k if op == "powc" else None
            found[n] = _arithmetic(op, b[0], b[1] if len(b) > 1 else _ANY, k)
        elif _function(op):
            found[n] = _image(op, b[0])
        else:
            found[n] = _ANY
    return found


def sign(nodes: Iterable[Node]) -> dict[Node, int]:
    """For each node (and what it needs): 1 if it is >= 0 wherever it is defined,
    -1 if <= 0, 0 if unknown."""
    return {
        n: 1 if lo >= 0 else -1 if hi <= 0 else 0
        for n, (lo, hi) in bounds(nodes).items()
    }


def _arithmetic(op: str, a: Interval, b: Interval, k: float | None) -> Interval:
    """[a] op [b] (or [a]**k), by sympy's interval arithmetic (AccumBounds)."""
    x, y = _accumulated(a), _accumulated(b)
    try:
        if op == "powc":
            assert k is not None
            if k.is_integer() and k % 2 == 0 and a[0] < 0 < a[1]:
                top = max(-a[0], a[1])
                return (0.0, _float(_exact(top) ** int(k)))
            value = x ** sp.Rational(k)
        else:
            value = {"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}[op]
    except (TypeError, ValueError, ZeroDivisionError):  # sympy refuses: unknown
        return _ANY
    return _interval(value)


@lru_cache(maxsize=4096)
def _image(op: str, a: Interval) -> Interval:
    """f([lo, hi]) for the element-wise function `op` (every value it takes there);
    unknown where sympy cannot tell, except the sign the table of non-negative
    functions gives."""
    definition = RULES[op].elementwise
    assert definition is not None
    f = definition[0]
    (x,) = f.free_symbols
    domain = sp.Interval(_exact(a[0]), _exact(a[1]))
    try:
        found = function_range(f, x, domain)
    except (NotImplementedError, ValueError, TypeError):
        found = sp.S.EmptySet
    if isinstance(found, sp.Interval):
        return (_float(found.inf), _float(found.sup))
    return (0.0, math.inf) if op in _NONNEGATIVE else _ANY


def _accumulated(a: Interval) -> Any:
    return sp.AccumBounds(_exact(a[0]), _exact(a[1]))


def _interval(value: Any) -> Interval:
    if isinstance(value, sp.AccumBounds):
        if sp.zoo in (value.min, value.max) or sp.nan in (value.min, value.max):
            return _ANY
        return (_float(value.min), _float(value.max))
    if value.is_number and value.is_real:
        return (_float(value), _float(value))
    return _ANY


def _exact(v: float) -> Any:
    """Exact (a float is a binary fraction): a sympy Float would enter sympy's cache
    as equal to the Integer of the same value, and change what later calls with
    that Integer return."""
    return sp.oo if v == math.inf else -sp.oo if v == -math.inf else sp.Rational(v)


def _float(v: Any) -> float:
    """A sympy bound as a float (an infinity as one)."""
    v = sp.sympify(v)
    if v.is_finite:
        return float(v)
    return math.inf if v == sp.oo else -math.inf


def stabilise(ops: Ops, results: list[Node]) -> dict[Node, Node]:
    """softplus, sigmoid and log_sigmoid in their one-exp stable forms, sharing
    that exp between the functions of t and of -t. Returns old node -> new node,
    for every node the results need."""
    nodes = [n for n in ancestors(results) if n.op in _LOGISTIC]
    if not nodes:
        return substitute(ops, results, {})
    bases = [n.args[0].args[0] if n.args[0].op == "neg" else n.args[0] for n in nodes]
    signs = sign(bases)
    graph = ops.graph

    def raw(op: str, *args: Node) -> Node:
        """Built as it is, never folded (the fold `a / (1 + exp(u))` = a sigmoid(-u)
        would undo this very rewrite); its shape is its largest operand's (each is
        t's or a scalar)."""
        shape = max((a.shape for a in args), key=len)
        return graph.node(op, args, shape)

    one, zero = ops.const(1.0), ops.const(0.0)
    functions = Counter(bases)
    bounded = bounds(bases)
    upward = _upward(nodes, bases, bounded, signs)
    replace: dict[Node, Node] = {}
    for node, t in zip(nodes, bases, strict=True):
        flip = t is not node.args[0]
        s = -1 if t in upward else signs.get(t, 0)
        if s == 0 and functions[t] == 1:
            continue  # nothing to share: its helper keeps the temporaries local
        if s == 1:
            e = raw("exp", raw("neg", t))
        elif s == -1:
            e = raw("exp", t)
        else:
            e = raw("exp", raw("neg", raw("abs", t)))
        if node.op == "sigmoid":
            replace[node] = _sigmoid(raw, t, s, e, one, zero, flip)
            continue
        if t in upward and bounded[t][0] >= 0:
            # e >= 1: log(1 + e) is as exact as log1p(e) (1 + e rounds by half an
            # ulp, and the log is >= log 2), and numpy's log is vectorised where
            # log1p is a scalar loop (7.8 against 10.6 ms at 10^6); `1 + e` is the
            # sigmoid's denominator too
            log1p = raw("log", raw("add", one, e))
        else:
            log1p = raw("log1p", e)
        softplus = _softplus_neg if flip == (node.op == "softplus") else _softplus
        found = softplus(raw, t, s, log1p, zero)
        replace[node] = ops.neg(found) if node.op == "log_sigmoid" else found
    return substitute(ops, results, replace)


Raw = Callable[..., Node]


#: e^t is finite for t below this in float32 too (e^80 ~ 5.5e34 < 3.4e38; float64
#: would allow 709): the forms of t <= 0 (`e = exp(t)`, `softplus(t) = log1p(e)`,
#: `sigmoid(t) = e / (1 + e)`) hold for every t up to it.
_EXP_FINITE = 80.0
#: ... except softplus(-t) = log1p(e) - t and log_sigmoid(t) = t - log1p(e), which
#: cancel: t - log1p(e^t) = -log1p(e^-t) loses about t e^t ulps of it, 4 at t = 1.
_CANCEL_FREE = 1.0


def _upward(
    nodes: list[Node],
    bases: list[Node],
    bounded: Mapping[Node, Interval],
    signs: Mapping[Node, int],
) -> set[Node]:
    """The bases t bounded above closely enough to take e = exp(t) as it is (no
    `neg`, `abs` nor `max`: `sin(x)**2` is at most 1, so softplus(sin(x)**2) is
    log1p(exp(sin(x)**2))), where that is exact and costs fewer passes than the
    form of t >= 0."""
    cancelling = {
        t
        for n, t in zip(nodes, bases, strict=True)
        if (n.op == "softplus") == (t is not n.args[0]) and n.op != "sigmoid"
    }
    return {
        t
        for t in bases
        if bounded[t][1] <= (_CANCEL_FREE if t in cancelling else _EXP_FINITE)
        and not (signs.get(t, 0) == 1 and t in cancelling)
    }


def _softplus(raw: Raw, t: Node, s: int, log1p: Node, zero: Node) -> Node:
    """softplus(t) = max(t, 0) + log1p(e^-|t|)."""
    if s == 1:
        return raw("add", t, log1p)
    if s == -1:
        return log1p
    return raw("add", raw("maximum", t, zero), log1p)


def _softplus_neg(raw: Raw, t: Node, s: int, log1p: Node, zero: Node) -> Node:
    """softplus(-t) = log1p(e^-|t|) - min(t, 0)."""
    if s == 1:
        return log1p
    if s == -1:
        return raw("sub", log1p, t)
    return raw("sub", log1p, raw("minimum", t, zero))


def _sigmoid(
    raw: Raw, t: Node, s: int, e: Node, one: Node, zero: Node, flip: bool
) -> Node:
    """sigmoid(t) = max(t >= 0, e) / (1 + e) with e = e^-|t| (the numerator is 1
    where t >= 0, e where t < 0; nan with t); sigmoid(-t) = max(t <= 0, e) / (1 +
    e). Not `np.where(t >= 0, 1, e)`: with a mask that is not all one way, numpy's
    `where` is a branchy loop, several times slower than a pass of arithmetic."""
    if s == 0:
        top = raw("maximum", raw("le" if flip else "ge", t, zero), e)
    else:
        top = one if (s == 1) != flip else e
    return raw("div", top, raw("add", one, e))
