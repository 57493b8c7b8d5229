"""Arrays written in place: the printer's numpy statements without needless copies.

numpy allocates a new array for every operation that has no temporary to reuse:
`t1 / t2` or `2 * t4` makes one even where `t1` is never read again. An expert
writes into the arrays that are done with instead (`np.divide(t1, t2, out=t1)`, then
`t1 *= t4`); each array of the batch's size saved is an allocation and its page
faults. Measured on the element-wise benchmark model at N = 10^6, in one process:
0.91 of the hand-written numpy's time with dead arrays reused, 0.98 without.

Two things here, both for the numpy backend only (the array API standard has no
`out=`):

* `in_place` -- a value that gets a line of its own, built from a temporary nothing
  else reads, is updated in place: `H = X @ W1`, `H += b1`, `np.tanh(H, out=H)`.
* `Reuse` -- the printer's second pass. The first pass decided which values get a
  line (a statement); this one prints the same statements in the same order and
  computes each *element-wise region* of a statement -- a largest inline subtree of
  `+ - * /`, negation, squaring and one-operand ufuncs (`np.exp(x)`, `np.maximum(x,
  0)`) -- into a *buffer*: an array of the region's shape held by a temporary that
  nothing reads after this statement. The region becomes three-address code over
  the buffer, each operation `out=` it or augmented (`t1 *= t4`); a second dead
  array, where one fits, takes an operand that is a region of its own (`3 * t5`).
  `verify` checks that every buffer's old value is read before the first write to
  it; a plan that fails is not used. Operands are only ever swapped (`b * a` for `a *
  b`), never regrouped, so the results are the same bits as without reuse.

A buffer is an array the function made itself: a temporary `t<k>` (never an
argument, a spec-named value, a result or a view) computed by arithmetic or a ufunc,
holding floats, of the region's exact shape. A view (`t4 = t3.T`, `t3[:, None]`)
keeps its base taken for as long as the view is read.

In a threaded worker (`printer.print_threaded`) two more kinds of array take
regions: a *destination*, the rows of a full-size result (`t7 = dL_dx[lo:hi]`, the
gradient computed straight into it), and, where no dead array fits, a new *scratch*
array of the thread's (`_scratch` in the threaded module's helpers), so that a chunk
allocates nothing of the chunk's size.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .graph import LEAVES, Exponent, Node, attr
from .lower import integral
from .rules import ADD, ATOM, spelling
from .simplify import MASKS

Text = tuple[str, int]  # code and its precedence
Spell = Callable[[Node, Mapping[Node, Text]], Text]

#: The ufunc of each binary arithmetic op and its augmented assignment; the ops
#: whose operands may be swapped without changing a bit.
BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide"}
AUGMENTED = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/="}
COMMUTATIVE = frozenset({"add", "mul"})
#: Ops whose numpy spelling always makes a new array (`a @ b`, `x**2`, `-x`...).
FRESH = frozenset({*BINARY, "matmul", "powc", "neg"})
NEVER = 1 << 30  # the last use of a result: after every statement
_OPERAND = "__operand__"
_UFUNC_CALL = re.compile(r"np\.(\w+)\((\w+)(, -?[\d.]+)?\)")


def ufunc_name(name: str) -> bool:
    return isinstance(getattr(np, name, None), np.ufunc)


def ufunc_call(node: Node) -> bool:
    """True if `node` is spelled as a numpy ufunc of its first operand whose other
    operands are numbers: `np.exp(x)`, `np.maximum(x, 0)`."""
    if not node.args or any(not a.is_const for a in node.args[1:]):
        return False
    template = spelling(node.op).template
    match = re.fullmatch(r"np\.(\w+)\(\{0\}((?:, (?:\{\d\}|-?[\d.]+))*)\)", template)
    return match is not None and ufunc_name(match.group(1))


def fresh(node: Node) -> bool:
    """True if numpy computes `node` as a new array (never a view of an operand):
    arithmetic or a ufunc."""
    return node.op in FRESH or ufunc_call(node)


def owned(node: Node) -> bool:
    """True if `node`'s array is one the function made itself and holds floats:
    arithmetic or a ufunc, never a view, an argument or a mask."""
    if node.rank == 0 or integral(node) or node.op in MASKS:
        return False
    return fresh(node)


def in_place(
    node: Node,
    name: str,
    text: Mapping[Node, Text],
    uses: Counter[Node],
    lined: Sequence[Node],
    spell: Spell,
) -> list[str] | None:
    """Statements computing `node` into one new array `name`, updated in place, as
    an expert writes a layer: `H = X @ W1`, `H += b1`, `np.tanh(H, out=H)`; or None
    where plain `name = ...` is as good. numpy reuses a temporary for `+ - * /` by
    itself only when the other operand has its shape (or is a number), and never
    for a function call. In place only over a temporary nothing else reads: an
    inline value of the same shape, made by arithmetic or a numpy function (never a
    view or an argument), holding floats."""

    def temporary(operand: Node) -> bool:
        return (
            operand.shape == node.shape
            and uses[operand] == 1
            and operand not in lined
            and owned(operand)
        )

    def into(operand: Node) -> list[str]:
        steps = in_place(operand, name, text, uses, lined, spell)
        return steps if steps is not None else [f"{name} = {text[operand][0]}"]

    if node.rank == 0:
        return None
    if node.op in AUGMENTED:
        left, right = node.args
        if node.op in COMMUTATIVE and temporary(right) and not temporary(left):
            left, right = right, left  # b + X @ W: the same sum, exactly
        if temporary(left) and right.rank > 0 and right.shape != node.shape:
            # a broadcast row or column: where numpy's own reuse of `left` fails
            return [*into(left), f"{name} {AUGMENTED[node.op]} {text[right][0]}"]
        return None
    if node.args and temporary(node.args[0]) and all(a.is_const for a in node.args[1:]):
        operand = node.args[0]
        code = spell(node, {**text, operand: (name, ATOM)})[0]
        match = _UFUNC_CALL.fullmatch(code)
        if match is not None and match.group(2) == name and ufunc_name(match.group(1)):
            return [*into(operand), f"{code[:-1]}, out={name})"]
    return None


@dataclass(frozen=True)
class Operand:
    code: str
    prec: int
    reads: frozenset[Node]  # held values its code reads (their buffers' contents)
    buffer: str | None = None  # or: the value just computed into this buffer


@dataclass(frozen=True)
class Step:
    """`out = ufunc(*operands)`, written into the buffer `target`."""

    target: str
    op: str  # the graph op
    operands: tuple[Operand, ...]
    call: str  # `np.multiply`, or a call's text with `__operand__` in it


class Reuse:
    """The second pass over one function body (see the module docstring): feed it
    the statements in order with `statement`, then `finish`."""

    def __init__(
        self,
        results: Sequence[Node],
        lined: Sequence[tuple[Node, str]],
        preferred: Mapping[Node, str],
        leaves: Mapping[Node, Text],
        spell: Spell,
        destinations: Mapping[Node, tuple[str, str]] | None = None,
        scratch: Callable[[Node], str | None] | None = None,
        size: Callable[[Node], object] | None = None,
    ) -> None:
        self.results = list(results)
        # a result to compute straight into an array of the caller's, by the name
        # of a view of it: {value: (name, `dL_dx[lo:hi]`)}
        self.destinations = dict(destinations or {})
        self.lined = dict(lined)
        self.preferred = preferred
        self.spell = spell
        self.text: dict[Node, Text] = dict(leaves)
        self.known = frozenset(leaves)  # written as given, never recomputed
        # the last statement that reads each lined value; the results' comes last
        self.last: dict[Node, int] = {}
        for i, root in enumerate([*self.lined, None]):
            for value in self._lined_reads(root):
                self.last[value] = max(self.last.get(value, -1), i)
        for r in self.results:
            self.last[r] = NEVER
        # a view keeps its base alive: `t4 = np.transpose(t3)` reads t3 as long as
        # t4 is read (later values first, so that chains of views carry through)
        for v in [*reversed(self.results), *reversed(list(self.lined))]:
            for base in self._bases(v):
                self.last[base] = max(self.last.get(base, -1), self.last[v])
        # and reading a view reads its bases' arrays (`_viewed`: transitively)
        self.views = {v: set(self._bases(v)) for v in self.lined}
        self.holder: dict[str, Node] = {}  # buffer -> the value it holds now
        self.held: dict[Node, str] = {}  # value -> its buffer
        self.regions = 0  # how many regions went into buffers
        self.written: set[Node] = set()  # the destinations used
        # where no dead array fits, a new scratch array by this name (None: not
        # for this value), instead of an allocation: [(name, value)]
        self.scratch = scratch
        self.slots: list[tuple[str, Node]] = []
        # what makes two values' arrays interchangeable: their shape, and in a
        # worker whether its rows are the chunk's (`N` is hi - lo rows there) or all
        self.size: Callable[[Node], object] = size or (lambda n: n.shape)

    # -- the statements' trees ----------------------------------------------------

    def _roots(self, root: Node | None) -> list[Node]:
        return [root] if root is not None else self.results

    def _lined_reads(self, root: Node | None) -> Iterator[Node]:
        stack = list(self._roots(root))
        while stack:
            n = stack.pop()
            if n in self.lined and n is not root:
                yield n
            elif n.op not in LEAVES:
                stack.extend(n.args)

    def _bases(self, v: Node, inline: bool = False) -> Iterator[Node]:
        """The lined values (`inline`: and values computed into buffers) whose
        arrays `v` may be a view of: those reached from it through ops that may not
        make a new array."""
        stack = [] if fresh(v) else list(v.args)
        while stack:
            n = stack.pop()
            if n in self.lined or (inline and n in self.held):
                yield n
            elif n.op not in LEAVES and not fresh(n):
                stack.extend(n.args)

    def _viewed(self, v: Node) -> set[Node]:
        """The values whose arrays `v` may be a view of, through views of views
        (`r2 = r[None]` with `r = t0.T`: t0), buffers computed since included."""
        found: set[Node] = set()
        stack = [v]
        while stack:
            for base in self.views.get(stack.pop(), ()):
                if base not in found:
                    found.add(base)
                    stack.append(base)
        return found

    def _reads(self, n: Node, root: Node | None) -> Counter[Node]:
        """The held values that the code of `n` reads, counted."""
        found: Counter[Node] = Counter()
        stack = [n]
        while stack:
            m = stack.pop()
            if m in self.held and m is not root:
                found[m] += 1
            elif m in self.lined and m is not root:
                found.update(self._viewed(m))
            elif m.op not in LEAVES and (m is root or m not in self.lined):
                stack.extend(m.args)
        return found

    def fusable(self, n: Node, root: Node | None) -> bool:
        """An op of an element-wise region not computed yet."""
        if n.op in LEAVES or n in self.held or n.rank == 0 or n in self.known:
            return False
        if n is not root and n in self.lined:
            return False
        if integral(n) or n.op in MASKS:
            return False
        if n.op in BINARY or n.op == "neg":
            return True
        if n.op == "powc":
            return attr(n, Exponent).k == 2
        return ufunc_call(n)

    def code(self, n: Node) -> Text:
        """`n` as inline code over the values printed so far."""
        if n in self.text:
            return self.text[n]
        return self.spell(n, {a: self.code(a) for a in n.args})

    def texts(self, n: Node) -> dict[Node, Text]:
        """The code of `n` and of each value its code is made of."""
        found: dict[Node, Text] = {}
        stack = [n]
        while stack:
            m = stack.pop()
            if m not in found:
                found[m] = self.code(m)
                if m not in self.text:
                    stack.extend(m.args)
        return found

    # -- a statement ----------------------------------------------------------------

    def statement(
        self, i: int, root: Node | None, name: str | None = None
    ) -> list[str]:
        """Lines that compute statement `i`'s regions into buffers (`root` None:
        the results). A lined root computed whole takes its buffer's name, or
        `name` where the spec or the module named it."""
        lines: list[str] = []
        for region in self._regions(root):
            planned = self._plan(i, region, root)
            if planned is None:
                continue
            target, steps = planned
            named = region is root and root in self.preferred and name is not None
            display = name if named and name is not None else target
            if region in self.destinations:
                view, where = self.destinations[region]
                if target == view:
                    lines.append(f"{view} = {where}")
                    display = view
                    self.written.add(region)
            lines += self._render(steps, target, display)
            self.text[region] = (display, ATOM)
            self.holder[target] = region
            self.held[region] = target
            self.last.setdefault(region, i)
            for r in self._roots(root):
                if r is not region and region in self._bases(r, inline=True):
                    # the statement's value is a view of the buffer: `t5[:, None]`
                    self.last[region] = max(self.last[region], self.last.get(r, i))
                    self.views.setdefault(r, set()).add(region)
            self.regions += 1
        return lines

    def hold(self, node: Node, name: str) -> None:
        """`node`, printed as `name = ...`, may become a buffer once dead."""
        if node not in self.preferred and owned(node):
            self.holder[name] = node
            self.held[node] = name

    def _regions(self, root: Node | None) -> list[Node]:
        """The largest element-wise subtrees of a statement, in evaluation order."""
        found: list[Node] = []

        def visit(n: Node) -> None:
            if n.op in LEAVES or n in self.text or (n is not root and n in self.lined):
                return
            if self.fusable(n, root):
                found.append(n)
                return
            for a in n.args:
                visit(a)

        for r in self._roots(root):
            visit(r)
        return found

    def _plan(
        self, i: int, region: Node, root: Node | None
    ) -> tuple[str, list[Step]] | None:
        inside = self._reads(region, root)
        everywhere: Counter[Node] = Counter()
        for r in self._roots(root):
            everywhere += self._reads(r, root)
        outside = everywhere - inside
        free = [
            b
            for b, h in self.holder.items()
            if self.last.get(h, NEVER) <= i and outside[h] == 0
        ]
        # a buffer whose old value the region reads first: updated in place
        fitting = sorted(
            (b for b in free if self.size(self.holder[b]) == self.size(region)),
            key=lambda b: inside[self.holder[b]] == 0,
        )
        if region in self.destinations:
            fitting.insert(0, self.destinations[region][0])
        for target in fitting:
            spares = [b for b in free if b != target]
            while True:  # without the spare buffers that a plan wrote too early
                steps = self._into(region, target, list(spares), root)
                if steps is None:
                    break
                early = self.verify(steps)
                if not early:
                    return target, steps
                if not early & set(spares):
                    break
                spares = [b for b in spares if b not in early]
        slot = None if self.scratch is None else self.scratch(region)
        if slot is not None:
            for spares in ([b for b in free if b != slot], []):
                steps = self._into(region, slot, list(spares), root)
                if steps is not None and not self.verify(steps):
                    self.slots.append((slot, region))
                    return slot, steps
        return None

    def _operand(
        self, n: Node, spares: list[str], root: Node | None
    ) -> tuple[list[Step], Operand] | None:
        """`n` as an operand: computed into a spare buffer where it is a region of
        its own and one fits, else as inline code."""
        if self.fusable(n, root):
            for b in spares:
                if self.size(self.holder[b]) == self.size(n):
                    spares.remove(b)
                    steps = self._into(n, b, spares, root)
                    if steps is None:
                        return None
                    return steps, Operand(b, ATOM, frozenset(), b)
        code, prec = self.code(n)
        return [], Operand(code, prec, frozenset(self._reads(n, root)))

    def _into(
        self, n: Node, target: str, spares: list[str], root: Node | None
    ) -> list[Step] | None:
        """Steps that leave `n`'s value in `target`, or None."""
        old = self.holder.get(target)  # None: a destination
        mine = Operand(target, ATOM, frozenset(), target)

        def chained(a: Node) -> bool:  # computed into `target` first
            return self.size(a) == self.size(n) and self.fusable(a, root)

        if n.op in BINARY:
            chain = [a for a in n.args if chained(a)]
            # the operand that reads the buffer's old value goes first
            chain.sort(key=lambda a: old is None or self._reads(a, root)[old] == 0)
            if not chain:
                pieces = [self._operand(a, [], root) for a in n.args]
                operands = tuple(p[1] for p in pieces if p is not None)
                if len(operands) < 2:
                    return None
                return [Step(target, n.op, operands, f"np.{BINARY[n.op]}")]
            first = chain[0]
            steps = self._into(first, target, spares, root)
            other = n.args[1] if first is n.args[0] else n.args[0]
            found = self._operand(other, spares, root)
            if steps is None or found is None:
                return None
            more, operand = found
            pair = (mine, operand) if first is n.args[0] else (operand, mine)
            return [*steps, *more, Step(target, n.op, pair, f"np.{BINARY[n.op]}")]
        a = n.args[0]
        if n.op == "neg":
            call = "np.negative"
        elif n.op == "powc":
            call = "np.square"
        else:
            texts = {b: self.code(b) for b in n.args}
            call = self.spell(n, {**texts, a: (_OPERAND, ATOM)})[0]
        if chained(a):
            steps = self._into(a, target, spares, root)
            if steps is None:
                return None
            return [*steps, Step(target, n.op, (mine,), call)]
        found = self._operand(a, [], root)
        if found is None:
            return None
        return [Step(target, n.op, (found[1],), call)]

    def verify(self, steps: Sequence[Step]) -> set[str]:
        """The buffers whose old value a step reads after a step wrote them (none:
        the plan is sound)."""
        written: set[str] = set()
        early: set[str] = set()
        for step in steps:
            for operand in step.operands:
                early |= {
                    b for v in operand.reads if (b := self.held.get(v)) in written
                }
            written.add(step.target)
        return early

    def _render(self, steps: Sequence[Step], target: str, display: str) -> list[str]:
        """The steps as lines: the first write into a buffer `out=` it (the region's
        own, under a spec name, `z = np.add(..., out=t1)`), later ones augmented
        where the buffer is an operand."""
        shown: dict[str, str] = {}  # buffer -> how its new value is written
        lines: list[str] = []
        for step in steps:
            texts = [
                shown[o.buffer] if o.buffer is not None else o.code
                for o in step.operands
            ]
            into = shown.get(step.target, step.target)
            # the buffer's new value, or its old one where nothing renames it
            mine = [
                o.buffer == step.target
                or (o.buffer is None and o.code == into and into == step.target)
                for o in step.operands
            ]
            if step.target not in shown and step.target == target:
                mine = [m and display == target for m in mine]
            if step.op in AUGMENTED and (
                mine[0] or (mine[1] and step.op in COMMUTATIVE)
            ):
                other = step.operands[1 if mine[0] else 0]
                code = texts[1 if mine[0] else 0]
                sign = AUGMENTED[step.op]
                if step.op == "add" and code.startswith("-") and other.prec > ADD:
                    sign, code = "-=", code[1:]  # x += -2 * y, as x -= 2 * y
                lines.append(f"{into} {sign} {code}")
                shown.setdefault(step.target, step.target)
                continue
            if _OPERAND in step.call:
                line = step.call.replace(_OPERAND, texts[0])[:-1] + f", out={into})"
            else:
                line = f"{step.call}({', '.join(texts)}, out={into})"
            if step.target not in shown:
                if step.target == target and display != target:
                    line = f"{display} = {line}"
                shown[step.target] = display if step.target == target else step.target
            lines.append(line)
        return lines
