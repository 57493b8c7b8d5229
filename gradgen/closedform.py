"""Closed forms: graph nodes as sympy expressions, simplified, printed as math.

A graph computes with arrays; sympy computes with scalars. The two meet because
every element-wise operation (`+ - * / **`, exp, log, relu, a mask `z > 0`...) is
the same scalar operation applied to each element, so an expression made of them
obeys scalar algebra element by element, broadcasting included. Array operations
that are not element-wise (a matrix product, a sum, a transpose, a vector literal,
an index) become *opaque* sympy functions (`Op` subclasses): sympy simplifies their
operands but never looks inside them, so it never treats a matrix product as a
commutative one. The element-wise regions between them are simplified with sympy,
which turns the nested chain's derivative into `6 x**2 cot(x**3)` and the total
derivative of `x + x**2` into `2x + 1`.

Each opaque function prints itself in three notations: LaTeX (Markdown's `$...$`),
MathML (HTML, `sympy.printing.mathml`) and a readable numpy-like line (the
generated docstrings), and evaluates itself on numpy arrays (`evaluate`), so the
tests can check a closed form numerically against the generated code.
Products of arrays are printed with the Hadamard product `⊙`, products with
scalars by juxtaposition, `X^T G` for a matrix product, as the article writes them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from xml.dom.minidom import Element

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.printer import Printer
from sympy.printing.str import StrPrinter

from .graph import (
    Axes,
    Axis,
    Count,
    Exponent,
    Node,
    Permutation,
    Position,
    Subscripts,
    TensorAxes,
    attr,
)
from .graph import Index as IndexAttr
from .rules import RULES
from .scalar import X

__all__ = [
    "Op",
    "Partial",
    "Shadow",
    "evaluate",
    "latex",
    "mathml",
    "rank",
    "simplify",
    "text",
]

_MUL = PRECEDENCE["Mul"]
_POW = PRECEDENCE["Pow"]
_ATOM = PRECEDENCE["Atom"]
_REL = PRECEDENCE["Relational"]

# --- the opaque array operations ----------------------------------------------------


class Op(sp.Function):
    """An array operation that is not element-wise: sympy keeps it whole.

    Subclasses say how to print themselves (`tex`, `mml`, `txt`), their result's
    rank from their operands' ranks (`out_rank`), and how to compute themselves on
    numpy arrays (`compute`). Integer attributes (an axis, a count) and names (einsum
    subscripts) are trailing arguments, so that sympy keeps them with the operands.
    """

    base_precedence: ClassVar[int] = _ATOM
    operands: ClassVar[int] = 1  # array operands; the remaining args are attributes
    operator: ClassVar[bool] = True  # printed before its operand (Σ, X^T ·): in a
    # product, numeric coefficients are written in front of it, `2/N Σ ...`

    @property
    def precedence(self) -> int:
        """How tightly it binds, for sympy's printers (`sympy.printing.precedence`)."""
        return self.base_precedence

    @property
    def arrays(self) -> tuple[Any, ...]:
        return tuple(self.args[: self.operands])

    @property
    def extra(self) -> tuple[Any, ...]:
        return tuple(self.args[self.operands :])

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0]

    def tex(self, p: _Latex) -> str:
        raise NotImplementedError

    def txt(self, p: _Text) -> str:
        raise NotImplementedError

    def mml(self, p: _MathML) -> Element:
        return p.tex_fallback(self)

    def compute(self, *values: Any) -> Any:
        raise NotImplementedError

    # sympy's printers call these by name
    def _latex(self, printer: _Latex, exp: str | None = None) -> str:
        tex = self.tex(printer)
        return tex if exp is None else f"\\left({tex}\\right)^{{{exp}}}"

    def _sympystr(self, printer: _Text) -> str:
        if not isinstance(printer, _Text):  # sympy's own str(), as in its sort keys
            inner = ", ".join(printer._print(a) for a in self.args)
            return f"{type(self).__name__}({inner})"
        return self.txt(printer)

    def _mathml_presentation(self, printer: _MathML) -> Element:
        return self.mml(printer)


def _np() -> Any:
    import numpy

    return numpy


class Label(sp.Symbol):
    """An attribute that is text (einsum subscripts, index items, axes): a trailing
    argument of an `Op`. `evaluate` passes its name, not a value."""


def _ints(label: Any) -> tuple[int, ...]:
    """The integers of a Label written `1,2` (`` for none)."""
    text = str(label.name)
    return tuple(int(t) for t in text.split(",")) if text else ()


def _label(values: tuple[int, ...] | None) -> Label:
    return Label("*" if values is None else ",".join(str(v) for v in values))


def _axes_text(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else f"({', '.join(map(str, axes))})"


def _call_mml(p: _MathML, name: Element, args: list[Any]) -> Element:
    """`name(a, b)` in MathML."""
    inner = p.row()
    for i, a in enumerate(args):
        if i:
            inner.appendChild(p.mo(","))
        inner.appendChild(p.doprint_element(a))
    return p.row(name, p.mo("("), inner, p.mo(")"))


def _sub_tex(name: str, sub: str) -> str:
    return name if not sub else f"{name}_{{{sub}}}"


class MatMul(Op):
    """a @ b: `X w`, `X^T G`; two vectors: `u^T v`."""

    base_precedence = _MUL
    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        a, b = ranks
        return max(a - 1, 0) + max(b - 1, 0)

    def _left(self, p: _Printer) -> Any:
        a, b = self.arrays
        both_vectors = p.rank(a) == 1 and p.rank(b) == 1
        return Transpose(a) if both_vectors else a

    def tex(self, p: _Latex) -> str:
        a, b = self._left(p), self.args[1]
        return f"{p.parenthesize(a, _MUL, strict=True)} {p.parenthesize(b, _MUL)}"

    def mml(self, p: _MathML) -> Element:
        a, b = self._left(p), self.args[1]
        return p.row(
            p.parenthesize(a, _MUL, True), p.mo("\u2062"), p.parenthesize(b, _MUL)
        )

    def txt(self, p: _Text) -> str:
        a, b = self.arrays
        return f"{p.parenthesize(a, _MUL, strict=True)} @ {p.parenthesize(b, _MUL)}"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().matmul(a, b)


class Outer(Op):
    """The outer product of two vectors, `a b^T`."""

    base_precedence = _MUL
    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        return 2

    def tex(self, p: _Latex) -> str:
        a, b = self.arrays
        return f"{p.parenthesize(a, _MUL)} {p.parenthesize(Transpose(b), _MUL)}"

    def mml(self, p: _MathML) -> Element:
        a, b = self.arrays
        return p.row(
            p.parenthesize(a, _MUL), p.mo("\u2062"), p.parenthesize(Transpose(b), _MUL)
        )

    def txt(self, p: _Text) -> str:
        a, b = self.arrays
        return f"outer({p.doprint(a)}, {p.doprint(b)})"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().outer(a, b)


class Transpose(Op):
    """`A^T`."""

    base_precedence = _POW

    def tex(self, p: _Latex) -> str:
        return f"{p.parenthesize(self.args[0], _POW, strict=True)}^{{\\top}}"

    def mml(self, p: _MathML) -> Element:
        sup = p.element("msup")
        sup.appendChild(p.parenthesize(self.args[0], _POW, True))
        sup.appendChild(p.mo("\u22a4"))
        return sup

    def txt(self, p: _Text) -> str:
        return f"{p.parenthesize(self.args[0], _ATOM, strict=True)}.T"

    def compute(self, a: Any) -> Any:
        return _np().transpose(a)


def _axis_value(arg: Any) -> int | None:
    value = int(arg)
    return None if value < 0 else value


class Sum(Op):
    """sum(x) over every element, or along one axis (-1: every element)."""

    base_precedence = _MUL

    def out_rank(self, ranks: list[int]) -> int:
        return 0 if _axis_value(self.args[1]) is None else ranks[0] - 1

    def _index(self, p: _Printer) -> tuple[str, str]:
        """The summation index and the subscript of the summand."""
        r = p.rank(self.args[0])
        axis = _axis_value(self.args[1])
        if axis is None:
            return ("i", "i") if r <= 1 else ("i,j", "ij")
        if r == 1:
            return "i", "i"
        return ("i", "i,:") if axis == 0 else ("j", ":,j")

    def tex(self, p: _Latex) -> str:
        index, sub = self._index(p)
        x = self.args[0]
        body = p.doprint(x)
        summand = (
            f"{{{body}}}_{{{sub}}}"
            if x.is_Symbol
            else f"\\left({body}\\right)_{{{sub}}}"
        )
        return f"\\sum_{{{index}}} {summand}"

    def mml(self, p: _MathML) -> Element:
        index, sub = self._index(p)
        x = self.args[0]
        under = p.element("munder")
        under.appendChild(p.mo("\u2211"))
        under.appendChild(p.mi(index))
        summand = p.element("msub")
        summand.appendChild(p.fenced(x) if not x.is_Symbol else p.doprint_element(x))
        summand.appendChild(p.mi(sub))
        return p.row(under, summand)

    def txt(self, p: _Text) -> str:
        axis = _axis_value(self.args[1])
        where = "" if axis is None else f", axis={axis}"
        return f"sum({p.doprint(self.args[0])}{where})"

    def compute(self, x: Any, axis: Any) -> Any:
        return _np().sum(x, axis=_axis_value(axis))


class SumKeep(Sum):
    """sum along axes with keepdims (the adjoint of an operand's size-1 axis)."""

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0]

    def txt(self, p: _Text) -> str:
        axis = _axis_value(self.args[1])
        return f"sum({p.doprint(self.args[0])}, axis={axis}, keepdims=True)"

    def compute(self, x: Any, axis: Any) -> Any:
        return _np().sum(x, axis=_axis_value(axis), keepdims=True)


class LogSumExp(Op):
    """log(sum(exp(x))), over every element or along an axis."""

    def out_rank(self, ranks: list[int]) -> int:
        return 0 if _axis_value(self.args[1]) is None else ranks[0] - 1

    def _name(self) -> str:
        axis = _axis_value(self.args[1])
        return "logsumexp" if axis is None else f"logsumexp_{axis}"

    def tex(self, p: _Latex) -> str:
        axis = _axis_value(self.args[1])
        sub = "" if axis is None else f"_{{{axis}}}"
        return (
            f"\\operatorname{{logsumexp}}{sub}\\left({p.doprint(self.args[0])}\\right)"
        )

    def mml(self, p: _MathML) -> Element:
        axis = _axis_value(self.args[1])
        name: Element = p.mi("logsumexp")
        if axis is not None:
            name = p.sub(name, p.mn(str(axis)))
        return p.row(name, p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        axis = _axis_value(self.args[1])
        where = "" if axis is None else f", axis={axis}"
        return f"logsumexp({p.doprint(self.args[0])}{where})"

    def compute(self, x: Any, axis: Any) -> Any:
        np = _np()
        a = _axis_value(axis)
        m = np.max(x, axis=a, keepdims=True)
        s = np.log(np.sum(np.exp(x - m), axis=a, keepdims=True)) + m
        return np.squeeze(s, axis=a) if a is not None else float(np.squeeze(s))


class Index(Op):
    """g[i]: element i of a vector (1-based in math, 0-based in code)."""

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] - 1

    def tex(self, p: _Latex) -> str:
        i = int(self.args[1]) + 1
        x = self.args[0]
        body = p.doprint(x) if x.is_Symbol else f"\\left({p.doprint(x)}\\right)"
        return f"{body}_{{{i}}}"

    def mml(self, p: _MathML) -> Element:
        x = self.args[0]
        return p.sub(
            p.doprint_element(x) if x.is_Symbol else p.fenced(x),
            p.mn(str(int(self.args[1]) + 1)),
        )

    def txt(self, p: _Text) -> str:
        return (
            f"{p.parenthesize(self.args[0], _ATOM, strict=True)}[{int(self.args[1])}]"
        )

    def compute(self, x: Any, i: Any) -> Any:
        return x[int(i)]


class Stack(Op):
    """The vector literal [e1, e2, ...], a column vector in math."""

    operands = -1

    @property
    def arrays(self) -> tuple[Any, ...]:
        return tuple(self.args)

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + 1

    def tex(self, p: _Latex) -> str:
        rows = " \\\\ ".join(p.doprint(a) for a in self.args)
        return f"\\begin{{bmatrix}} {rows} \\end{{bmatrix}}"

    def mml(self, p: _MathML) -> Element:
        table = p.element("mtable")
        for a in self.args:
            tr, td = p.element("mtr"), p.element("mtd")
            td.appendChild(p.doprint_element(a))
            tr.appendChild(td)
            table.appendChild(tr)
        return p.row(p.mo("["), table, p.mo("]"))

    def txt(self, p: _Text) -> str:
        """`[a, b]` for numbers; `stack([A, 0])`, the elements broadcast to one
        shape, where they are arrays (a Jacobian's rows)."""
        items = "[" + ", ".join(p.doprint(a) for a in self.args) + "]"
        return items if all(p.rank(a) == 0 for a in self.args) else f"stack({items})"

    def compute(self, *values: Any) -> Any:
        return _np().array(values, dtype=float)


class _Transparent(Op):
    """Plumbing that changes how an array is laid out, not its values as math:
    printed as its operand. `compute` does the numpy layout exactly."""

    operands = 1

    def tex(self, p: _Latex) -> str:
        return p.doprint(self.args[0])

    def mml(self, p: _MathML) -> Element:
        return p.doprint_element(self.args[0])

    def txt(self, p: _Text) -> str:
        return p.doprint(self.args[0])

    @property
    def precedence(self) -> int:
        """Its operand's: it prints as its operand."""
        from sympy.printing.precedence import precedence

        result: int = precedence(self.args[0])
        return result


class ExpandDims(_Transparent):
    """g with a size-1 axis inserted (broadcasts along it): transparent in math,
    `g[:, None]` in numpy's notation, whose broadcasting aligns axes from the right."""

    def txt(self, p: _Text) -> str:
        # a chain of them is one index over the innermost operand's axes: g with
        # axes 0 and 2 inserted is g[None, :, None], written g[:, None]
        axes: list[int] = []
        x: Any = self
        while isinstance(x, ExpandDims):
            axes.append(int(x.args[1]))
            x = x.args[0]
        items = [":"] * p.rank(x)
        for axis in reversed(axes):
            items.insert(axis, "None")
        while items and items[0] == "None":
            items.pop(0)  # leading new axes go without saying
        while items and items[-1] == ":":
            items.pop()
        base = p.parenthesize(x, _ATOM, strict=True)
        return f"{base}[{', '.join(items)}]" if items else base

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + 1

    def compute(self, x: Any, axis: Any) -> Any:
        return _np().expand_dims(x, int(axis))


class Fill(_Transparent):
    """g broadcast to a shape (the trailing arguments are its dims): transparent,
    or `g 1` (a scalar times the array of ones) where g has fewer axes."""

    def _spread(self, p: _Printer) -> bool:
        return p.rank(self.args[0]) < len(self.extra)

    def tex(self, p: _Latex) -> str:
        if not self._spread(p):
            return p.doprint(self.args[0])
        return f"{p.parenthesize(self.args[0], _MUL)} \\mathbf{{1}}"

    def mml(self, p: _MathML) -> Element:
        if not self._spread(p):
            return p.doprint_element(self.args[0])
        one = p.mi("1")
        one.setAttribute("mathvariant", "bold")
        return p.row(p.parenthesize(self.args[0], _MUL), p.mo("\u2062"), one)

    def txt(self, p: _Text) -> str:
        if not self._spread(p):
            return p.doprint(self.args[0])
        dims = ", ".join(p.doprint(d) for d in self.extra)
        shape = dims if len(self.extra) == 1 else f"({dims})"
        if self.args[0] == 1:
            return f"ones({shape})"
        return f"ones({shape}) * {p.parenthesize(self.args[0], _MUL)}"

    def out_rank(self, ranks: list[int]) -> int:
        return len(self.extra)

    def compute(self, x: Any, *dims: Any) -> Any:
        shape = tuple(int(d) for d in dims)
        return _np().array(_np().broadcast_to(x, shape), dtype=float)


class Trail(_Transparent):
    """a with `count` size-1 axes appended (forward mode)."""

    def txt(self, p: _Text) -> str:
        x = p.parenthesize(self.args[0], _ATOM, strict=True)
        return f"{x}[..., {', '.join(['None'] * int(self.args[1]))}]"

    def tex(self, p: _Latex) -> str:
        """Repeated along the param's axes: `x 1^T`."""
        return f"{p.parenthesize(self.args[0], _MUL)} \\mathbf{{1}}^{{\\top}}"

    def mml(self, p: _MathML) -> Element:
        ones = p.element("msup")
        one = p.mi("1")
        one.setAttribute("mathvariant", "bold")
        ones.appendChild(one)
        ones.appendChild(p.mo("\u22a4"))
        return p.row(p.parenthesize(self.args[0], _MUL), p.mo("\u2062"), ones)

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + int(self.args[1])

    def compute(self, x: Any, count: Any) -> Any:
        x = _np().asarray(x, dtype=float)
        return x.reshape(x.shape + (1,) * int(count))


class Lift(_Transparent):
    """t with `count` size-1 axes in front (forward mode)."""

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + int(self.args[1])

    def compute(self, x: Any, count: Any) -> Any:
        x = _np().asarray(x, dtype=float)
        return x.reshape((1,) * int(count) + x.shape)


class Reshape(Fill):
    """x reshaped (the same elements in C order), or an identity reshaped to
    param.shape * 2 (a matrix param's seed): its operand in math."""

    def tex(self, p: _Latex) -> str:
        return p.doprint(self.args[0])

    def mml(self, p: _MathML) -> Element:
        return p.doprint_element(self.args[0])

    def txt(self, p: _Text) -> str:
        dims = ", ".join(p.doprint(d) for d in self.extra)
        shape = f"({dims},)" if len(self.extra) == 1 else f"({dims})"
        return f"reshape({p.doprint(self.args[0])}, {shape})"

    def compute(self, x: Any, *dims: Any) -> Any:
        return _np().reshape(x, tuple(int(d) for d in dims))


class Eye(Op):
    """The identity matrix I_n."""

    def out_rank(self, ranks: list[int]) -> int:
        return 2

    def tex(self, p: _Latex) -> str:
        return f"I_{{{p.doprint(self.args[0])}}}"

    def mml(self, p: _MathML) -> Element:
        return p.sub(p.mi("I"), p.doprint_element(self.args[0]))

    def txt(self, p: _Text) -> str:
        return f"eye({p.doprint(self.args[0])})"

    def compute(self, n: Any) -> Any:
        return _np().eye(int(n))


class Zeros(Op):
    """An array of zeros of the shape given by the arguments (dims)."""

    operands = 0

    def out_rank(self, ranks: list[int]) -> int:
        return len(self.args)

    def tex(self, p: _Latex) -> str:
        return "0"

    def mml(self, p: _MathML) -> Element:
        return p.mn("0")

    def txt(self, p: _Text) -> str:
        return "0"

    def compute(self, *dims: Any) -> Any:
        return _np().zeros(tuple(int(d) for d in dims))


class Einsum(Op):
    """np.einsum(subscripts, a, b): the first argument is the subscripts' symbol."""

    operands = 3

    @property
    def arrays(self) -> tuple[Any, ...]:
        return tuple(self.args[1:])

    def out_rank(self, ranks: list[int]) -> int:
        return len(str(self.args[0].name).split("->")[1])

    def tex(self, p: _Latex) -> str:
        spec = str(self.args[0].name).replace("->", "\\to ")
        operands = ", ".join(p.doprint(a) for a in self.args[1:])
        return (
            f"\\operatorname{{einsum}}_{{\\mathtt{{{spec}}}}}\\left({operands}\\right)"
        )

    def mml(self, p: _MathML) -> Element:
        spec = str(self.args[0].name).replace("->", "\u2192")
        name = p.sub(p.mi("einsum"), p.mtext(spec))
        inner = p.row()
        for i, a in enumerate(self.args[1:]):
            if i:
                inner.appendChild(p.mo(","))
            inner.appendChild(p.doprint_element(a))
        return p.row(name, p.mo("("), inner, p.mo(")"))

    def txt(self, p: _Text) -> str:
        operands = ", ".join(p.doprint(a) for a in self.args[1:])
        return f"einsum('{self.args[0].name}', {operands})"

    def compute(self, spec: Any, *values: Any) -> Any:
        return _np().einsum(str(spec), *values)


class Swap01(Op):
    """The first two axes swapped (the tangent of a transpose)."""

    def tex(self, p: _Latex) -> str:
        return f"\\operatorname{{swap}}_{{01}}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        return p.row(p.sub(p.mi("swap"), p.mn("01")), p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        return f"swapaxes({p.doprint(self.args[0])}, 0, 1)"

    def compute(self, x: Any) -> Any:
        return _np().swapaxes(x, 0, 1)


class Reduce(Op):
    """A reduction other than a sum (var, std, norm, max, min; logsumexp with
    keepdims or several axes): (x, axes, keepdims); axes `*` is every axis."""

    fname: ClassVar[str] = ""
    tex_name: ClassVar[str] = ""

    def _axes(self) -> tuple[int, ...] | None:
        return None if self.args[1].name == "*" else _ints(self.args[1])

    def _keep(self) -> bool:
        return bool(self.args[2])

    def out_rank(self, ranks: list[int]) -> int:
        axes = self._axes()
        if self._keep():
            return ranks[0]
        return 0 if axes is None else ranks[0] - len(axes)

    def _sub(self) -> str:
        axes = self._axes()
        return "" if axes is None else ",".join(map(str, axes))

    def tex(self, p: _Latex) -> str:
        name = _sub_tex(self.tex_name, self._sub())
        return f"{name}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        name: Element = p.mi(self.fname)
        if self._sub():
            name = p.sub(name, p.mn(self._sub()))
        return p.row(name, p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        axes = self._axes()
        where = "" if axes is None else f", axis={_axes_text(axes)}"
        keep = ", keepdims=True" if self._keep() else ""
        return f"{self.fname}({p.doprint(self.args[0])}{where}{keep})"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        raise NotImplementedError

    def compute(self, x: Any, axes: Any, keep: Any) -> Any:
        axis = None if axes == "*" else tuple(int(t) for t in axes.split(","))
        return self.reduce(_np().asarray(x, dtype=float), axis, bool(keep))


class Var(Reduce):
    fname, tex_name = "var", "\\operatorname{var}"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        return _np().var(x, axis=axis, keepdims=keep)


class Std(Reduce):
    fname, tex_name = "std", "\\operatorname{std}"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        return _np().std(x, axis=axis, keepdims=keep)


class Norm(Reduce):
    """The Euclidean norm ‖x‖ (along axes)."""

    fname, tex_name = "norm", "norm"

    def tex(self, p: _Latex) -> str:
        body = f"\\left\\lVert {p.doprint(self.args[0])} \\right\\rVert"
        return _sub_tex(body, self._sub())

    def mml(self, p: _MathML) -> Element:
        body = p.row(p.mo("\u2016"), p.doprint_element(self.args[0]), p.mo("\u2016"))
        return p.sub(body, p.mn(self._sub())) if self._sub() else body

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        np = _np()
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keep))


class Max(Reduce):
    """max(x): the largest element (along axes); `max(a, b)` is element-wise."""

    fname, tex_name = "max", "\\max"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        return _np().max(x, axis=axis, keepdims=keep)


class Min(Reduce):
    fname, tex_name = "min", "\\min"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        return _np().min(x, axis=axis, keepdims=keep)


class LogSumExpAxes(Reduce):
    fname, tex_name = "logsumexp", "\\operatorname{logsumexp}"

    def reduce(self, x: Any, axis: Any, keep: bool) -> Any:
        np = _np()
        m = np.max(x, axis=axis, keepdims=True)
        s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return s if keep else np.squeeze(s, axis=axis)


_REDUCTIONS: dict[str, type[Reduce]] = {
    "var": Var,
    "std": Std,
    "norm": Norm,
    "amax": Max,
    "amin": Min,
    "logsumexp": LogSumExpAxes,
}


class _AlongAxis(Op):
    """softmax and log_softmax along an axis: (x, axis)."""

    fname: ClassVar[str] = ""

    def _where(self, p: _Printer) -> str:
        axis = int(self.args[1])
        return "" if axis == p.rank(self.args[0]) - 1 else f", axis={axis}"

    def tex(self, p: _Latex) -> str:
        axis = int(self.args[1])
        sub = "" if axis == p.rank(self.args[0]) - 1 else str(axis)
        name = _sub_tex(
            f"\\operatorname{{{self.fname.replace('_', chr(92) + '_')}}}", sub
        )
        return f"{name}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        return p.row(p.mi(self.fname), p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        return f"{self.fname}({p.doprint(self.args[0])}{self._where(p)})"


class Softmax(_AlongAxis):
    fname = "softmax"

    def compute(self, x: Any, axis: Any) -> Any:
        np = _np()
        z = np.asarray(x, dtype=float)
        e = np.exp(z - np.max(z, axis=int(axis), keepdims=True))
        return e / np.sum(e, axis=int(axis), keepdims=True)


class LogSoftmax(_AlongAxis):
    fname = "log_softmax"

    def compute(self, x: Any, axis: Any) -> Any:
        np = _np()
        z = np.asarray(x, dtype=float)
        z = z - np.max(z, axis=int(axis), keepdims=True)
        return z - np.log(np.sum(np.exp(z), axis=int(axis), keepdims=True))


def _index_items(items: tuple[str, ...], show: Callable[[int], str]) -> list[str]:
    """numpy index items with their `{k}` operands shown by `show(k)`."""
    out = []
    for item in items:
        for k in range(9, 0, -1):
            key = "{" + str(k) + "}"
            if key in item:
                item = item.replace(key, show(k))
        out.append(item)
    return out


def _index_count(items: tuple[str, ...]) -> int:
    return sum(1 for k in range(1, 10) if any("{" + str(k) + "}" in i for i in items))


def _numpy_index(items: tuple[str, ...], operands: tuple[Any, ...]) -> tuple[Any, ...]:
    """The index tuple numpy takes, from the items and their operands' values."""

    def value(text: str) -> int | None:
        if not text:
            return None
        if text.startswith("{"):
            return int(operands[int(text.strip("{}")) - 1])
        return int(text)  # a literal (a size-1 axis dropped)

    out: list[Any] = []
    for item in items:
        if item == "None":
            out.append(None)
        elif ":" in item:
            lo, hi = item.split(":")
            out.append(slice(value(lo), value(hi)))
        else:
            out.append(value(item))
    return tuple(out)


class GetItem(Op):
    """x[index], basic indexing: (x, *integer operands, items). `X[0]`,
    `u[:, None, :]`, `g[:, :k]`."""

    def _items(self) -> tuple[str, ...]:
        return tuple(str(self.args[-1].name).split("|"))

    def out_rank(self, ranks: list[int]) -> int:
        items = self._items()
        dropped = sum(1 for i in items if i != "None" and ":" not in i)
        added = sum(1 for i in items if i == "None")
        return ranks[0] - dropped + added

    def _shown(self, p: _Latex | _Text | _MathML) -> str:
        items = _index_items(self._items(), lambda k: str(p.doprint(self.args[k])))
        return ", ".join(items)

    def tex(self, p: _Latex) -> str:
        x = p.parenthesize(self.args[0], _ATOM, strict=True)
        shown = self._shown(p).replace("None", "\\mathrm{None}")
        return f"{x}\\left[{shown}\\right]"

    def mml(self, p: _MathML) -> Element:
        items = _index_items(self._items(), lambda k: "{" + str(k) + "}")
        row = p.row(p.parenthesize(self.args[0], _ATOM, True), p.mo("["))
        for i, item in enumerate(items):
            if i:
                row.appendChild(p.mo(","))
            whole = item[1:-1]
            if item.startswith("{") and whole.isdigit():
                row.appendChild(p.doprint_element(self.args[int(whole)]))
            else:  # `:`, `None`, a slice `{1}:{2}` shown as text
                shown = _index_items(
                    (item,), lambda k: _Text(p.ranks).doprint(self.args[k])
                )
                row.appendChild(p.mi(shown[0]))
        row.appendChild(p.mo("]"))
        return row

    def txt(self, p: _Text) -> str:
        return f"{p.parenthesize(self.args[0], _ATOM, strict=True)}[{self._shown(p)}]"

    def compute(self, x: Any, *rest: Any) -> Any:
        items = tuple(str(rest[-1]).split("|"))
        return _np().asarray(x)[_numpy_index(items, rest[:-1])]


class Put(Op):
    """Zeros of a shape with g at an index (the adjoint of x[index]):
    (g, items, *integer operands, *dims)."""

    def _items(self) -> tuple[str, ...]:
        return tuple(str(self.args[1].name).split("|"))

    def _parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        n = _index_count(self._items())
        return tuple(self.args[2 : 2 + n]), tuple(self.args[2 + n :])

    def out_rank(self, ranks: list[int]) -> int:
        return len(self._parts()[1])

    def _shown(self, p: _Latex | _Text) -> str:
        index, _ = self._parts()
        items = _index_items(self._items(), lambda k: str(p.doprint(index[k - 1])))
        return ", ".join(items)

    def tex(self, p: _Latex) -> str:
        shown = self._shown(p).replace("None", "\\mathrm{None}")
        return f"\\operatorname{{put}}_{{[{shown}]}}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        name = p.sub(p.mi("put"), p.mtext(f"[{self._shown(_Text(p.ranks))}]"))
        return p.row(name, p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        """`put(g, (T, d), T - 1)`, `put(g, (T, d), slice(1, None))`: the index
        as numpy takes it, one item per argument."""
        index, dims = self._parts()
        shape = ", ".join(p.doprint(d) for d in dims)
        shape = f"({shape},)" if len(dims) == 1 else f"({shape})"

        def item(text: str) -> str:
            if text.startswith("{") and text[1:-1].isdigit():
                return str(p.doprint(index[int(text[1:-1]) - 1]))
            if ":" not in text:
                return text
            lo, hi = (item(t) if t else "None" for t in text.split(":"))
            return "slice(None)" if lo == hi == "None" else f"slice({lo}, {hi})"

        items = ", ".join(item(t) for t in self._items())
        return f"put({p.doprint(self.args[0])}, {shape}, {items})"

    def compute(self, g: Any, items: Any, *rest: Any) -> Any:
        np = _np()
        texts = tuple(str(items).split("|"))
        n = _index_count(texts)
        out = np.zeros(tuple(int(d) for d in rest[n:]))
        out[_numpy_index(texts, rest[:n])] = g
        return out


class Gather(Op):
    """W[ids]: the rows of W picked by an integer array."""

    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[1] + ranks[0] - 1

    def tex(self, p: _Latex) -> str:
        w = p.parenthesize(self.args[0], _ATOM, strict=True)
        return f"{w}\\left[{p.doprint(self.args[1])}\\right]"

    def mml(self, p: _MathML) -> Element:
        return p.row(
            p.parenthesize(self.args[0], _ATOM, True),
            p.mo("["),
            p.doprint_element(self.args[1]),
            p.mo("]"),
        )

    def txt(self, p: _Text) -> str:
        w = p.parenthesize(self.args[0], _ATOM, strict=True)
        return f"{w}[{p.doprint(self.args[1])}]"

    def compute(self, w: Any, ids: Any) -> Any:
        return _np().asarray(w)[ids]


class ScatterAdd(Op):
    """The rows of g added up at ids into `size` rows (the adjoint of W[ids])."""

    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] - ranks[1] + 1

    def tex(self, p: _Latex) -> str:
        g, ids, size = (p.doprint(a) for a in self.args)
        return f"\\operatorname{{scatter\\_add}}_{{{size}}}\\left({g}, {ids}\\right)"

    def mml(self, p: _MathML) -> Element:
        name = p.sub(p.mi("scatter_add"), p.doprint_element(self.args[2]))
        return _call_mml(p, name, list(self.args[:2]))

    def txt(self, p: _Text) -> str:
        return f"scatter_add({', '.join(p.doprint(a) for a in self.args)})"

    def compute(self, g: Any, ids: Any, size: Any) -> Any:
        np = _np()
        g = np.asarray(g, dtype=float)
        out = np.zeros((int(size), *g.shape[np.ndim(ids) :]))
        np.add.at(out, ids, g)
        return out


class TakeAlong(Op):
    """x's entry at labels along an axis, one per slice: `Z[arange(N), y]`;
    (x, labels, axis)."""

    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] - 1

    def _pick(self, p: _Printer) -> bool:
        return int(self.args[2]) == 1 == p.rank(self.args[1])

    def tex(self, p: _Latex) -> str:
        x, labels = (p.doprint(a) for a in self.args[:2])
        if self._pick(p):
            return f"\\left({x}\\right)_{{i, {labels}_{{i}}}}"
        return f"\\operatorname{{take}}_{{{int(self.args[2])}}}\\left({x}, {labels}\\right)"

    def mml(self, p: _MathML) -> Element:
        name = p.sub(p.mi("take"), p.mn(str(int(self.args[2]))))
        return _call_mml(p, name, list(self.args[:2]))

    def txt(self, p: _Text) -> str:
        x, labels = (p.doprint(a) for a in self.args[:2])
        return f"take_along({x}, {labels}, {int(self.args[2])})"

    def compute(self, x: Any, labels: Any, axis: Any) -> Any:
        np = _np()
        index = np.expand_dims(labels, int(axis))
        index = index.reshape(index.shape + (1,) * (np.ndim(x) - index.ndim))
        return np.squeeze(
            np.take_along_axis(np.asarray(x), index, int(axis)), int(axis)
        )


class PutAlong(Op):
    """Zeros with g at labels along an axis (of length size): (g, labels, size,
    axis); where g has the labels' shape it is `g * onehot(labels, size)`."""

    operands = 2

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + 1

    def tex(self, p: _Latex) -> str:
        g, labels, size = (p.doprint(a) for a in self.args[:3])
        return f"\\operatorname{{put}}_{{{int(self.args[3])}}}\\left({g}, {labels}, {size}\\right)"

    def mml(self, p: _MathML) -> Element:
        name = p.sub(p.mi("put"), p.mn(str(int(self.args[3]))))
        return _call_mml(p, name, list(self.args[:3]))

    def txt(self, p: _Text) -> str:
        inner = ", ".join(p.doprint(a) for a in self.args)
        return f"put_along({inner})"

    def compute(self, g: Any, labels: Any, size: Any, axis: Any) -> Any:
        np = _np()
        a = int(axis)
        index = np.expand_dims(labels, a)
        shape = (*index.shape[:a], int(size), *index.shape[a + 1 :])
        out = np.zeros(shape + np.shape(g)[np.ndim(labels) :])
        index = index.reshape(index.shape + (1,) * (out.ndim - index.ndim))
        np.put_along_axis(out, index, np.expand_dims(g, a), a)
        return out


class OneHot(Op):
    """onehot(y, k): 1 at each label along a new last axis of length k."""

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] + 1

    def tex(self, p: _Latex) -> str:
        y, k = (p.doprint(a) for a in self.args)
        return f"\\operatorname{{onehot}}\\left({y}, {k}\\right)"

    def mml(self, p: _MathML) -> Element:
        return _call_mml(p, p.mi("onehot"), list(self.args))

    def txt(self, p: _Text) -> str:
        return f"onehot({', '.join(p.doprint(a) for a in self.args)})"

    def compute(self, y: Any, k: Any) -> Any:
        return _np().eye(int(k))[y]


class Arange(Op):
    """0, 1, ..., n - 1."""

    def tex(self, p: _Latex) -> str:
        return f"\\operatorname{{arange}}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        return p.row(p.mi("arange"), p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        return f"arange({p.doprint(self.args[0])})"

    def out_rank(self, ranks: list[int]) -> int:
        return 1

    def compute(self, n: Any) -> Any:
        return _np().arange(int(n))


class Permute(Op):
    """transpose(x, perm): the axes in a new order."""

    def _perm(self) -> tuple[int, ...]:
        return _ints(self.args[1])

    def tex(self, p: _Latex) -> str:
        perm = ",".join(map(str, self._perm()))
        return f"\\operatorname{{transpose}}_{{({perm})}}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        perm = ",".join(map(str, self._perm()))
        return p.row(
            p.sub(p.mi("transpose"), p.mtext(f"({perm})")), p.fenced(self.args[0])
        )

    def txt(self, p: _Text) -> str:
        return f"transpose({p.doprint(self.args[0])}, {self._perm()})"

    def compute(self, x: Any, perm: Any) -> Any:
        return _np().transpose(x, tuple(int(t) for t in str(perm).split(",")))


class SwapAxes(Op):
    """The last two axes swapped: each matrix of a stack transposed, `A^T`."""

    base_precedence = _POW

    def tex(self, p: _Latex) -> str:
        return Transpose(self.args[0]).tex(p)

    def mml(self, p: _MathML) -> Element:
        return Transpose(self.args[0]).mml(p)

    def txt(self, p: _Text) -> str:
        return f"swapaxes({p.doprint(self.args[0])}, -1, -2)"

    def compute(self, x: Any) -> Any:
        return _np().swapaxes(x, -1, -2)


class Tensordot(Op):
    """np.tensordot(a, b, axes=(left, right)): (a, b, `left|right`)."""

    operands = 2

    def _axes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        left, right = str(self.args[2].name).split("|")
        return (
            tuple(int(t) for t in left.split(",") if t),
            tuple(int(t) for t in right.split(",") if t),
        )

    def out_rank(self, ranks: list[int]) -> int:
        left, right = self._axes()
        return ranks[0] + ranks[1] - len(left) - len(right)

    def tex(self, p: _Latex) -> str:
        a, b = (p.doprint(x) for x in self.args[:2])
        return f"\\operatorname{{tensordot}}\\left({a}, {b}\\right)"

    def mml(self, p: _MathML) -> Element:
        return _call_mml(p, p.mi("tensordot"), list(self.args[:2]))

    def txt(self, p: _Text) -> str:
        a, b = (p.doprint(x) for x in self.args[:2])
        left, right = self._axes()
        return f"tensordot({a}, {b}, axes=({list(left)}, {list(right)}))"

    def compute(self, a: Any, b: Any, axes: Any) -> Any:
        left, right = str(axes).split("|")
        pair = (
            [int(t) for t in left.split(",") if t],
            [int(t) for t in right.split(",") if t],
        )
        return _np().tensordot(a, b, axes=pair)


class Joined(Op):
    """concatenate or stack with an axis: (*arrays, axis)."""

    operands = -1
    fname: ClassVar[str] = ""

    @property
    def arrays(self) -> tuple[Any, ...]:
        return tuple(self.args[:-1])

    def tex(self, p: _Latex) -> str:
        inner = ", ".join(p.doprint(a) for a in self.arrays)
        return f"\\operatorname{{{self.fname}}}_{{{int(self.args[-1])}}}\\left({inner}\\right)"

    def mml(self, p: _MathML) -> Element:
        name = p.sub(p.mi(self.fname), p.mn(str(int(self.args[-1]))))
        return _call_mml(p, name, list(self.arrays))

    def txt(self, p: _Text) -> str:
        inner = ", ".join(p.doprint(a) for a in self.arrays)
        return f"{self.fname}([{inner}], axis={int(self.args[-1])})"


class Concat(Joined):
    fname = "concatenate"

    def compute(self, *values: Any) -> Any:
        return _np().concatenate(
            broadcast_except(values[:-1], int(values[-1])), axis=int(values[-1])
        )


def broadcast_except(items: Any, axis: int) -> list[Any]:
    """The arrays broadcast against each other along every axis but `axis`, where
    each array of full rank keeps its own length (`[X, ones((N, 1))]`); an item of
    lower rank stands for a lazily broadcast block, as long as the others."""
    np = _np()
    arrays = [np.asarray(v) for v in items]
    rank = max(a.ndim for a in arrays)
    k = axis % rank
    full = [a.shape[k] for a in arrays if a.ndim == rank]
    lengths = [a.shape[k] if a.ndim == rank else max(full) for a in arrays]
    arrays = [a.reshape((1,) * (rank - a.ndim) + a.shape) for a in arrays]
    common = np.broadcast_shapes(
        *((*a.shape[:k], 1, *a.shape[k + 1 :]) for a in arrays)
    )
    return [
        np.broadcast_to(a, (*common[:k], n, *common[k + 1 :]))
        for a, n in zip(arrays, lengths, strict=True)
    ]


class StackAxis(Joined):
    fname = "stack"

    def out_rank(self, ranks: list[int]) -> int:
        return max(ranks) + 1

    def compute(self, *values: Any) -> Any:
        np = _np()
        items = np.broadcast_arrays(*values[:-1])
        return np.stack(items, axis=int(values[-1]))


class OnesOf(Op):
    """An array of ones of the shape given by the arguments (dims)."""

    operands = 0

    def out_rank(self, ranks: list[int]) -> int:
        return len(self.args)

    def tex(self, p: _Latex) -> str:
        return "\\mathbf{1}"

    def mml(self, p: _MathML) -> Element:
        m = p.mi("1")
        m.setAttribute("mathvariant", "bold")
        return m

    def txt(self, p: _Text) -> str:
        dims = ", ".join(p.doprint(d) for d in self.args)
        return f"ones(({dims},))" if len(self.args) == 1 else f"ones(({dims}))"

    def compute(self, *dims: Any) -> Any:
        return _np().ones(tuple(int(d) for d in dims))


class Diagonal(Op):
    """The diagonal of a square matrix (of each matrix of a stack) along two axes,
    put last as numpy does: (x, axis1, axis2)."""

    def out_rank(self, ranks: list[int]) -> int:
        return ranks[0] - 1

    def _last(self, p: _Printer) -> bool:
        r = p.rank(self.args[0])
        return (int(self.args[1]), int(self.args[2])) == (r - 2, r - 1)

    def tex(self, p: _Latex) -> str:
        sub = "" if self._last(p) else f"{int(self.args[1])}{int(self.args[2])}"
        name = _sub_tex("\\operatorname{diag}", sub)
        return f"{name}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        return p.row(p.mi("diag"), p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        x = p.doprint(self.args[0])
        if self._last(p):
            return f"diag({x})"
        return f"diag({x}, {int(self.args[1])}, {int(self.args[2])})"

    def compute(self, x: Any, axis1: Any, axis2: Any) -> Any:
        return _np().diagonal(x, axis1=int(axis1), axis2=int(axis2))


# --- element-wise functions sympy has no name for -----------------------------------


class Elementwise(Op):
    """An element-wise function or comparison sympy does not know (relu, sigmoid,
    softplus, max, min, a mask): opaque to sympy, but element-wise, so it lives in
    the element-wise regions that sympy simplifies."""

    name: ClassVar[str] = ""
    tex_name: ClassVar[str] = ""
    operands = 1

    def out_rank(self, ranks: list[int]) -> int:
        return max(ranks)

    def tex(self, p: _Latex) -> str:
        inner = ", ".join(p.doprint(a) for a in self.args)
        return f"{self.tex_name}\\left({inner}\\right)"

    def mml(self, p: _MathML) -> Element:
        inner = p.row()
        for i, a in enumerate(self.args):
            if i:
                inner.appendChild(p.mo(","))
            inner.appendChild(p.doprint_element(a))
        return p.row(p.mi(self.name), p.mo("("), inner, p.mo(")"))

    def txt(self, p: _Text) -> str:
        return f"{self.name}({', '.join(p.doprint(a) for a in self.args)})"


class Relu(Elementwise):
    name, tex_name = "relu", "\\operatorname{relu}"

    def compute(self, x: Any) -> Any:
        return _np().maximum(x, 0.0)


class Sigmoid(Elementwise):
    name, tex_name = "\u03c3", "\\sigma"

    def txt(self, p: _Text) -> str:
        return f"sigmoid({p.doprint(self.args[0])})"

    def compute(self, x: Any) -> Any:
        np = _np()
        return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=float)))


class Softplus(Elementwise):
    name, tex_name = "softplus", "\\operatorname{softplus}"

    def compute(self, x: Any) -> Any:
        return _np().logaddexp(0.0, x)


class Maximum(Elementwise):
    name, tex_name = "max", "\\max"
    operands = 2

    def compute(self, a: Any, b: Any) -> Any:
        return _np().maximum(a, b)


class Minimum(Elementwise):
    name, tex_name = "min", "\\min"
    operands = 2

    def compute(self, a: Any, b: Any) -> Any:
        return _np().minimum(a, b)


class XLogY(Elementwise):
    """x log y, 0 where x = 0."""

    name, tex_name = "xlogy", "\\operatorname{xlogy}"
    operands = 2

    def compute(self, x: Any, y: Any) -> Any:
        np = _np()
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


class Compare(Elementwise):
    """A mask: 1 where the comparison holds, else 0."""

    operands = 2
    base_precedence = _ATOM
    symbol: ClassVar[str] = ""
    tex_symbol: ClassVar[str] = ""
    mml_symbol: ClassVar[str] = ""

    def tex(self, p: _Latex) -> str:
        a, b = (p.doprint(x) for x in self.args)
        return f"\\left({a} {self.tex_symbol} {b}\\right)"

    def mml(self, p: _MathML) -> Element:
        a, b = (p.doprint_element(x) for x in self.args)
        return p.row(p.mo("("), a, p.mo(self.mml_symbol), b, p.mo(")"))

    def txt(self, p: _Text) -> str:
        return f"({self.bare(p)})"

    def bare(self, p: _Latex | _Text) -> str:
        """Without the parentheses: `a <= b`, in LaTeX or text."""
        a, b = (p.doprint(x) for x in self.args)
        symbol = self.tex_symbol if isinstance(p, _Latex) else self.symbol
        return f"{a} {symbol} {b}"


class Greater(Compare):
    symbol, tex_symbol, mml_symbol = ">", ">", ">"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().greater(a, b).astype(float)


class Equal(Compare):
    symbol, tex_symbol, mml_symbol = "==", "=", "="

    def compute(self, a: Any, b: Any) -> Any:
        return _np().equal(a, b).astype(float)


class NotEqual(Compare):
    symbol, tex_symbol, mml_symbol = "!=", "\\neq", "\u2260"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().not_equal(a, b).astype(float)


class Less(Compare):
    symbol, tex_symbol, mml_symbol = "<", "<", "<"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().less(a, b).astype(float)


class LessEqual(Compare):
    symbol, tex_symbol, mml_symbol = "<=", "\\leq", "\u2264"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().less_equal(a, b).astype(float)


class GreaterEqual(Compare):
    symbol, tex_symbol, mml_symbol = ">=", "\\geq", "\u2265"

    def compute(self, a: Any, b: Any) -> Any:
        return _np().greater_equal(a, b).astype(float)


#: not (a < b) is (a >= b): a negated comparison is the opposite one
_NEGATED: dict[type[Compare], type[Compare]] = {
    Greater: LessEqual,
    LessEqual: Greater,
    Less: GreaterEqual,
    GreaterEqual: Less,
    Equal: NotEqual,
    NotEqual: Equal,
}


def negation(c: Any) -> Any:
    """The mask of `not c`: the opposite comparison, else 1 - c."""
    if isinstance(c, Compare):
        return _NEGATED[type(c)](*c.args)
    return 1 - c


class Or(Elementwise):
    """a | b of two masks."""

    operands = 2

    def tex(self, p: _Latex) -> str:
        a, b = (p.doprint(x) for x in self.args)
        return f"\\left({a} \\lor {b}\\right)"

    def mml(self, p: _MathML) -> Element:
        a, b = (p.doprint_element(x) for x in self.args)
        return p.row(p.mo("("), a, p.mo("\u2228"), b, p.mo(")"))

    def txt(self, p: _Text) -> str:
        a, b = (p.doprint(x) for x in self.args)
        return f"({a} | {b})"

    def compute(self, a: Any, b: Any) -> Any:
        np = _np()
        return np.logical_or(np.asarray(a) != 0, np.asarray(b) != 0).astype(float)


class Where(Elementwise):
    """where(c, a, b): a where the mask c holds, else b (`np.where`)."""

    name, tex_name = "where", "\\operatorname{where}"
    operands = 3

    def _condition(self, p: _Latex | _Text) -> str:
        c = self.args[0]
        return c.bare(p) if isinstance(c, Compare) else str(p.doprint(c))

    def txt(self, p: _Text) -> str:
        a, b = (p.doprint(x) for x in self.args[1:])
        return f"where({self._condition(p)}, {a}, {b})"

    def tex(self, p: _Latex) -> str:
        a, b = (p.doprint(x) for x in self.args[1:])
        c = self._condition(p)
        return (
            f"\\begin{{cases}} {a} & \\text{{if }} {c} \\\\"
            f" {b} & \\text{{otherwise}} \\end{{cases}}"
        )

    def compute(self, c: Any, a: Any, b: Any) -> Any:
        return _np().where(_np().asarray(c) != 0, a, b)


class Clip(Elementwise):
    name, tex_name = "clip", "\\operatorname{clip}"
    operands = 3

    def compute(self, x: Any, lo: Any, hi: Any) -> Any:
        return _np().clip(x, lo, hi)


class NonZero(Elementwise):
    """A divisor made 1 where it is 0 (the numerator is 0 there too): printed as
    the divisor itself, as the math writes it."""

    @property
    def precedence(self) -> int:
        from sympy.printing.precedence import precedence

        result: int = precedence(self.args[0])
        return result

    def tex(self, p: _Latex) -> str:
        return p.doprint(self.args[0])

    def mml(self, p: _MathML) -> Element:
        return p.doprint_element(self.args[0])

    def txt(self, p: _Text) -> str:
        return p.doprint(self.args[0])

    def compute(self, x: Any) -> Any:
        np = _np()
        x = np.asarray(x, dtype=float)
        return np.where(x == 0, 1.0, x)


class Hadamard(Op):
    """The element-wise product of arrays, `a ⊙ b` (built only for printing)."""

    base_precedence = _MUL
    operands = -1

    def tex(self, p: _Latex) -> str:
        return " \\odot ".join(p.parenthesize(a, _MUL) for a in self.args)

    def mml(self, p: _MathML) -> Element:
        row = p.row()
        for i, a in enumerate(self.args):
            if i:
                row.appendChild(p.mo("\u2299"))
            row.appendChild(p.parenthesize(a, _MUL))
        return row

    def txt(self, p: _Text) -> str:
        return " * ".join(p.parenthesize(a, _MUL) for a in self.args)


# --- notation for the explanation ----------------------------------------------------


class Partial(Op):
    """∂f/∂v for two symbols: an adjoint (∂L/∂z) or a local derivative (∂a/∂z)."""

    operands = 2

    def tex(self, p: _Latex) -> str:
        f, v = (p.doprint(a) for a in self.args)
        return f"\\frac{{\\partial {f}}}{{\\partial {v}}}"

    def mml(self, p: _MathML) -> Element:
        frac = p.element("mfrac")
        for a in self.args:
            frac.appendChild(p.row(p.mo("\u2202"), p.doprint_element(a)))
        return frac

    def txt(self, p: _Text) -> str:
        f, v = (p.doprint(a) for a in self.args)
        return f"d{f}/d{v}"


class Diag(Op):
    """diag(d): the diagonal Jacobian of an element-wise operation (never formed)."""

    def out_rank(self, ranks: list[int]) -> int:
        return 2

    def tex(self, p: _Latex) -> str:
        if self.args[0] == 1:
            return "I"
        return f"\\operatorname{{diag}}\\left({p.doprint(self.args[0])}\\right)"

    def mml(self, p: _MathML) -> Element:
        if self.args[0] == 1:
            return p.mi("I")
        return p.row(p.mi("diag"), p.fenced(self.args[0]))

    def txt(self, p: _Text) -> str:
        return f"diag({p.doprint(self.args[0])})"


class Assign(Op):
    """`lhs ← rhs`: an update of the optimizer, or `lhs = rhs` (a definition) when
    the third argument is 0."""

    operands = 2
    base_precedence = PRECEDENCE["Lambda"]

    def _arrow(self) -> bool:
        return len(self.args) < 3 or bool(self.args[2])

    def tex(self, p: _Latex) -> str:
        arrow = "\\leftarrow" if self._arrow() else "="
        return f"{p.doprint(self.args[0])} {arrow} {p.doprint(self.args[1])}"

    def mml(self, p: _MathML) -> Element:
        arrow = "\u2190" if self._arrow() else "="
        return p.row(
            p.doprint_element(self.args[0]),
            p.mo(arrow),
            p.doprint_element(self.args[1]),
        )

    def txt(self, p: _Text) -> str:
        arrow = "<-" if self._arrow() else "="
        return f"{p.doprint(self.args[0])} {arrow} {p.doprint(self.args[1])}"


class Hat(Op):
    """A bias-corrected moment, m̂."""

    def tex(self, p: _Latex) -> str:
        return f"\\hat{{{p.doprint(self.args[0])}}}"

    def mml(self, p: _MathML) -> Element:
        over = p.element("mover")
        over.setAttribute("accent", "true")
        over.appendChild(p.doprint_element(self.args[0]))
        over.appendChild(p.mo("^"))
        return over

    def txt(self, p: _Text) -> str:
        return f"{p.doprint(self.args[0])}_hat"


class Ones(Op):
    """The vector of ones, 1 (bold)."""

    operands = 0

    def out_rank(self, ranks: list[int]) -> int:
        return 1

    def tex(self, p: _Latex) -> str:
        return "\\mathbf{1}"

    def mml(self, p: _MathML) -> Element:
        m = p.mi("1")
        m.setAttribute("mathvariant", "bold")
        return m

    def txt(self, p: _Text) -> str:
        return "ones"


# --- printers -------------------------------------------------------------------------


class _Printer:
    """What the three printers share: the ranks of the symbols they print, and
    sums written with a positive term first (`out - Y`, not `-Y + out`)."""

    ranks: Mapping[sp.Symbol, int]

    def rank(self, expr: Any) -> int:
        return rank(expr, self.ranks)

    def _as_ordered_terms(self, expr: Any, order: Any = None) -> list[Any]:
        terms: list[Any] = Printer._as_ordered_terms(self, expr, order=order)
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        if positive and terms[0] is not positive[0]:
            terms.remove(positive[0])
            terms.insert(0, positive[0])
        return terms


def _is_coefficient(f: Any) -> bool:
    """A number, a dim, or a power of one: written first, as a fraction (2/N)."""
    base = f.base if f.is_Pow else f
    return bool(f.is_Number or (isinstance(base, sp.Symbol) and base.is_integer))


def _split(
    expr: Any, ranks: Mapping[sp.Symbol, int]
) -> tuple[Any, list[Any], list[Any], list[Any]] | None:
    """A product with arrays or array operations (a sum, a matrix product) in it as
    (coefficient, scalar factors, array factors, divisors), printed `2/N Σ ...`,
    `s a ⊙ b / c` as the article writes them. None: print it as sympy does."""
    coefficient, scalars, top, bottom = [], [], [], []
    for f in sp.Mul.make_args(expr):
        if _is_coefficient(f):
            coefficient.append(f)
        elif f.is_Pow and f.exp.is_negative:
            bottom.append(1 / f)
        elif rank(f, ranks) == 0:
            scalars.append(f)
        else:
            top.append(f)
    operators = any(isinstance(f, Op) and f.operator for f in scalars)
    if not top and not operators and not any(rank(f, ranks) for f in bottom):
        return None
    return sp.Mul(*coefficient), scalars, top, bottom


class _Latex(_Printer, LatexPrinter):
    def __init__(self, ranks: Mapping[sp.Symbol, int]) -> None:
        super().__init__({"mul_symbol": None})
        self.ranks = ranks

    def _print_Mul(self, expr: Any) -> str:
        split = _split(expr, self.ranks)
        if split is None:
            return super()._print_Mul(expr)
        coefficient, scalars, top, bottom = split
        many = len(scalars) + len(top) > 1
        guard = coefficient != 1 and not bottom  # `2/N (a + b)`, not `2/N a + b`

        def factor(f: Any) -> str:
            if many or guard:
                return str(self.parenthesize(f, _MUL, strict=not many))
            return str(self._print(f))

        parts = [factor(f) for f in scalars]
        if top:
            parts.append(" \\odot ".join(factor(f) for f in top))
        body = " ".join(parts) or "1"
        if bottom:
            body = f"\\frac{{{body}}}{{{self._print(sp.Mul(*bottom))}}}"
        if coefficient == 1:
            return body
        if coefficient == -1:
            return f"-{body}"
        return f"{self._print(coefficient)} {body}"


class _Text(_Printer, StrPrinter):
    def __init__(self, ranks: Mapping[sp.Symbol, int]) -> None:
        super().__init__()
        self.ranks = ranks

    def parenthesize(self, item: Any, level: int, strict: bool = False) -> str:
        """Function calls, `.T` and `[i]` bind tighter than any operator."""
        while isinstance(item, _Transparent) and type(item).txt is _Transparent.txt:
            item = item.args[0]
        if isinstance(item, Op) and not isinstance(item, MatMul | Hadamard):
            return self._print(item)
        return super().parenthesize(item, level, strict)

    def _print_Mul(self, expr: Any) -> str:
        """Coefficient first, then the factors: `2/N * X.T @ ((z > 0) * (a - y))`.
        numpy's `*` and `@` group from the left, so only later factors need
        parentheses."""
        split = _split(expr, self.ranks)
        if split is None:
            return super()._print_Mul(expr)
        coefficient, scalars, top, bottom = split
        factors = [*scalars, *top]
        body = " * ".join(
            self.parenthesize(f, _MUL, strict=i == 0) for i, f in enumerate(factors)
        )
        body = body or "1"
        for f in bottom:
            body += " / " + self.parenthesize(f, _MUL)
        if coefficient == 1:
            return body
        if coefficient == -1 and factors and isinstance(factors[0], Compare | Or):
            return f"-({body})"  # numpy refuses to negate a mask: -(mask * b)
        if coefficient == -1:
            return f"-{body}"  # -a * b is -(a * b)
        return f"{self._print(coefficient)} * {body}"

    def _print_Pow(self, expr: Any) -> str:
        if expr.exp == sp.Rational(1, 2):
            return f"sqrt({self.doprint(expr.base)})"
        result: str = super()._print_Pow(expr)
        return result

    def _print_Abs(self, expr: Any) -> str:
        return f"abs({self.doprint(expr.args[0])})"

    def _print_atan(self, expr: Any) -> str:
        return f"arctan({self.doprint(expr.args[0])})"  # numpy's name


class _MathML(_Printer, MathMLPresentationPrinter):
    def __init__(self, ranks: Mapping[sp.Symbol, int]) -> None:
        super().__init__({"mul_symbol": None})
        self.ranks = ranks

    def _print_Mul(self, expr: Any) -> Element:
        split = _split(expr, self.ranks)
        if split is None:
            return super()._print_Mul(expr)
        coefficient, scalars, top, bottom = split
        many = len(scalars) + len(top) > 1
        guard = coefficient != 1 and not bottom
        body = self.row()
        for i, f in enumerate([*scalars, *top]):
            if i:
                body.appendChild(self.mo("\u2299" if i > len(scalars) else "\u2062"))
            body.appendChild(
                self.parenthesize(f, _MUL, not many)
                if many or guard
                else self.doprint_element(f)
            )
        if bottom:
            frac = self.element("mfrac")
            frac.appendChild(body)
            frac.appendChild(self.doprint_element(sp.Mul(*bottom)))
            body = frac
        if coefficient == 1:
            return body
        if coefficient == -1:
            return self.row(self.mo("-"), body)
        return self.row(self.doprint_element(coefficient), self.mo("\u2062"), body)

    # small element builders for the opaque functions
    def element(self, tag: str) -> Element:
        return self.dom.createElement(tag)

    def _leaf(self, tag: str, text: str) -> Element:
        e = self.element(tag)
        e.appendChild(self.dom.createTextNode(text))
        return e

    def mi(self, text: str) -> Element:
        return self._leaf("mi", text)

    def mn(self, text: str) -> Element:
        return self._leaf("mn", text)

    def mo(self, text: str) -> Element:
        return self._leaf("mo", text)

    def mtext(self, text: str) -> Element:
        return self._leaf("mtext", text)

    def row(self, *children: Element) -> Element:
        r = self.element("mrow")
        for c in children:
            r.appendChild(c)
        return r

    def sub(self, base: Element, script: Element) -> Element:
        s = self.element("msub")
        s.appendChild(base)
        s.appendChild(script)
        return s

    def fenced(self, expr: Any) -> Element:
        return self.row(self.mo("("), self.doprint_element(expr), self.mo(")"))

    def doprint_element(self, expr: Any) -> Element:
        return self._print(expr)

    def parenthesize(self, item: Any, level: int, strict: bool = False) -> Element:
        return super().parenthesize(item, level, strict)

    def tex_fallback(self, expr: Any) -> Element:
        raise NotImplementedError(type(expr).__name__)


def latex(expr: Any, ranks: Mapping[sp.Symbol, int]) -> str:
    """LaTeX, for Markdown's `$...$`."""
    return _Latex(ranks).doprint(expr)


def mathml(expr: Any, ranks: Mapping[sp.Symbol, int]) -> str:
    """Presentation MathML (without the <math> element)."""
    printer = _MathML(ranks)
    element = printer._print(expr)
    text: str = element.toxml()
    element.unlink()
    return text


def text(expr: Any, ranks: Mapping[sp.Symbol, int]) -> str:
    """One readable numpy-like line (`2/N * X.T @ ((z > 0) * (a - y))`)."""
    return _Text(ranks).doprint(expr)


def rank(expr: Any, ranks: Mapping[sp.Symbol, int]) -> int:
    """The rank of the array `expr` stands for."""
    if isinstance(expr, sp.Symbol):
        return ranks.get(expr, 0)
    if expr.is_Number or not expr.args:
        return 0
    if isinstance(expr, Op):
        inner = [rank(a, ranks) for a in expr.arrays] or [0]
        return expr.out_rank(inner)
    return max(rank(a, ranks) for a in expr.args)


# --- simplification ---------------------------------------------------------------

#: Above this many operations an element-wise region is only tidied (sympy's
#: `simplify` takes seconds on large expressions).
SIMPLIFY_LIMIT = 24


def simplify(expr: Any, ranks: Mapping[sp.Symbol, int]) -> Any:
    """The closed form: element-wise regions simplified by sympy, scalar factors
    taken out of linear operations (`X^T (2/N g)` is `2/N X^T g`), written as the
    article writes them (`cot` for `1/tan`)."""
    simplified = _simplify(expr, ranks)
    for sine in sorted(simplified.atoms(sp.sin), key=sp.default_sort_key):
        u = sine.args[0]
        simplified = simplified.subs(sp.cos(u) / sp.sin(u), sp.cot(u))
    return simplified.replace(
        lambda e: e.is_Pow and e.exp == -1 and isinstance(e.base, sp.tan),
        lambda e: sp.cot(e.base.args[0]),
    )


#: Operations linear in each of their array operands: a scalar factor of an
#: operand is a factor of the result.
_LINEAR: tuple[type, ...] = (
    MatMul,
    Outer,
    Transpose,
    Sum,
    Index,
    ExpandDims,
    Fill,
    Trail,
    Lift,
    Swap01,
    Einsum,
    GetItem,
    Put,
    Gather,
    ScatterAdd,
    TakeAlong,
    Permute,
    SwapAxes,
    Tensordot,
    Diagonal,
)


def _scalar_factor(expr: Any, ranks: Mapping[sp.Symbol, int]) -> tuple[Any, Any]:
    """`expr` as (scalar, rest): the product of its rank-0 factors, and the others."""
    scalars: list[Any] = []
    others: list[Any] = []
    for f in sp.Mul.make_args(expr):
        (scalars if rank(f, ranks) == 0 else others).append(f)
    if not others:
        return sp.Integer(1), expr
    return sp.Mul(*scalars), sp.Mul(*others)


def _simplify(expr: Any, ranks: Mapping[sp.Symbol, int]) -> Any:
    """Bottom-up: the operands of every opaque operation first, then the element-wise
    region around them, with each opaque operation standing as a symbol."""
    if not expr.args or isinstance(expr, sp.Symbol):
        return expr
    if isinstance(expr, Op) and not isinstance(expr, Elementwise):
        # an operand whose simplification lost axes (a * b / a is b) stays as it
        # was: the operation needs its shape
        args = [_keep_rank(a, _simplify(a, ranks), ranks) for a in expr.args]
        if not isinstance(expr, _LINEAR):
            return expr.func(*args)
        factor = sp.Integer(1)
        first = 1 if isinstance(expr, Einsum) else 0
        last = len(args) if expr.operands < 0 or first else expr.operands
        for i in range(first, last):
            c, args[i] = _scalar_factor(args[i], ranks)
            factor *= c
        if isinstance(expr, Sum) and not isinstance(expr, SumKeep):
            if rank(args[0], ranks) == 0:
                return factor * args[0]
            filled = _sum_of_fill(args[0], int(args[1]), ranks)
            if filled is not None:
                return factor * filled
        if isinstance(expr, Sum):
            along = _sum_of_onehot(args[0], int(args[1]), ranks)
            if along is not None:
                return factor * along
        return factor * expr.func(*args)
    opaque: dict[Any, sp.Symbol] = {}

    def hide(e: Any) -> Any:
        if isinstance(e, Op) and not isinstance(e, Elementwise):
            if e not in opaque:
                opaque[e] = sp.Symbol(
                    f"_op{len(opaque)}", real=True
                )  # no spec name starts with _
            return opaque[e]
        if not e.args or isinstance(e, sp.Symbol):
            return e
        return e.func(*(hide(a) for a in e.args))

    inner = {k: _simplify(k, ranks) for k in _opaque_in(expr)}
    region = hide(expr.xreplace(inner))
    region = _wheres(_best(region))
    return region.xreplace({s: e for e, s in opaque.items()})


def _keep_rank(before: Any, after: Any, ranks: Mapping[sp.Symbol, int]) -> Any:
    if after != 0 and rank(after, ranks) < rank(before, ranks):
        return before
    return after


def _sum_of_fill(x: Any, axis: int, ranks: Mapping[sp.Symbol, int]) -> Any:
    """The sum of a number filled into an array is the number times the count
    (along `axis`, or -1: every axis). None: not that form."""
    if not isinstance(x, Fill) or isinstance(x, Reshape):
        return None
    if rank(x.args[0], ranks) != 0:
        return None
    dims = list(x.extra)
    if axis == -1:
        return sp.Mul(*dims) * x.args[0]
    count = dims.pop(axis)
    return count * (Fill(x.args[0], *dims) if dims else x.args[0])


def _sum_of_onehot(x: Any, axis: int, ranks: Mapping[sp.Symbol, int]) -> Any:
    """sum(a[:, None] * onehot(y, k), axis=1) is a: each row of a one-hot sums to
    1. `x` is the summand (scalar factors already out); None: not that form."""
    factors = sp.Mul.make_args(x)
    hot = [f for f in factors if isinstance(f, OneHot)]
    if len(hot) != 1 or axis != rank(hot[0], ranks) - 1:
        return None
    rest = [f for f in factors if f is not hot[0]]
    if not all(isinstance(f, ExpandDims) and int(f.args[1]) == axis for f in rest):
        return None
    return sp.Mul(*(f.args[0] for f in rest))  # broadcasts as the kept axis would


def _wheres(region: Any) -> Any:
    """c a + (not c) b is where(c, a, b): two terms of a sum masked by a comparison
    and by its negation (the two branches of a `where`)."""
    if not region.args or isinstance(region, sp.Symbol):
        return region
    region = region.func(*(_wheres(a) for a in region.args))
    if not region.is_Add:
        return region
    terms = list(region.args)
    for i, t in enumerate(terms):
        masks = [f for f in sp.Mul.make_args(t) if isinstance(f, Compare)]
        for c in sorted(masks, key=sp.default_sort_key):
            other = negation(c)
            for j, u in enumerate(terms):
                if j != i and other in sp.Mul.make_args(u):
                    picked = Where(c, t / c, u / other)
                    rest = [x for k, x in enumerate(terms) if k not in (i, j)]
                    return _wheres(sp.Add(picked, *rest))
    return region


def _opaque_in(expr: Any) -> list[Any]:
    """The outermost non-element-wise operations inside an element-wise region."""
    found: list[Any] = []
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Op) and not isinstance(e, Elementwise):
            if e is not expr:
                found.append(e)
                continue
        stack.extend(e.args)
    return sorted(set(found), key=sp.default_sort_key)


@functools.lru_cache(maxsize=4096)
def _best(region: Any) -> Any:
    """The shortest of a few cheap rewritings (sympy's full `simplify` tries
    trigonometric factorisations that take seconds): `factor_terms` pulls a common
    factor out (`2/N * (a - y)`), `cancel` cancels a common factor of a fraction.

    A function of the region alone, remembered: the closed forms of a model's
    gradients share most of their regions (the explanation's steps, the gradients
    and the Jacobians meet the same ones again)."""
    candidates = [region, sp.factor_terms(region)]
    if sp.count_ops(region) <= SIMPLIFY_LIMIT:
        candidates.append(sp.factor_terms(sp.cancel(region)))
    return min(candidates, key=lambda e: (sp.count_ops(e), len(sp.srepr(e))))


# --- graph -> sympy -----------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sin": sp.sin,
    "cos": sp.cos,
    "tanh": sp.tanh,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "sign": sp.sign,
    "square": lambda x: x**2,
    "relu": Relu,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "maximum": Maximum,
    "minimum": Minimum,
    "xlogy": XLogY,
    "gt": Greater,
    "ge": GreaterEqual,
    "lt": Less,
    "le": LessEqual,
    "eq": Equal,
    "ne": NotEqual,
    "and_": lambda a, b: a * b,  # masks of 0 and 1
    "or_": Or,
    "not_": negation,
    "where": Where,
    "select": Where,
    "clip": Clip,
    "nonzero": NonZero,
}
_ARITHMETIC: dict[str, Callable[..., Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "neg": lambda a: -a,
    "pow": lambda a, b: a**b,
    "matmul": MatMul,
    "transpose": Transpose,
    "outer": Outer,
    "swap01": Swap01,
}
_TRANSPARENT = frozenset({"as_float", "copy", "float", "tfill", "tfull"})
#: Ops linear in their first operand (in either of their first two, `_BILINEAR_OPS`):
#: of an array that simplified to 0 (`a - a`), they are 0 (sympy cannot see inside
#: them, and would print `0[:, -2]` or `X @ 0`).
_LINEAR_OPS = frozenset(
    {
        "getitem",
        "index",
        "gather",
        "take_along",
        "expand_dims",
        "fill",
        "reshape",
        "reshaped",
        "trail",
        "lift",
        "transpose",
        "permute",
        "swap01",
        "swapaxes",
        "diag",
        "sum",
        "mean",
        "sum_axes",
        "sum_keep",
        "put",
        "scatter_add",
        "put_along",
    }
)
_BILINEAR_OPS = frozenset({"matmul", "outer", "tensordot", "einsum"})


def number(value: float) -> Any:
    """A float from the graph as an exact sympy number: 0.1 -> 1/10."""
    if value.is_integer():
        return sp.Integer(int(value))
    return sp.Rational(repr(value))


class Shadow:
    """Graph nodes as sympy expressions. `atoms` maps nodes to the expressions
    that stand for them (the spec's names, intermediate variables); the walk stops
    there. Inputs and params are symbols of their own name; dims positive integers.
    """

    def __init__(self, atoms: Mapping[Node, Any]) -> None:
        self.atoms = dict(atoms)
        self.ranks: dict[sp.Symbol, int] = {}
        for node, expr in self.atoms.items():
            if isinstance(expr, sp.Symbol):
                self.ranks[expr] = node.rank
        self._memo: dict[Node, Any] = {}
        # the shape of the array each memoised expression computes: an element-wise
        # expression broadcasts, so it can be smaller than its node's (a `tfill`
        # prints as its operand, a scalar gradient stands for an array of equal
        # entries); an operation that is not element-wise gets it filled back
        self._shapes: dict[Node, tuple[object, ...]] = {}

    def symbol(self, name: str, node: Node) -> sp.Symbol:
        s = sp.Symbol(name, real=True)
        self.ranks[s] = node.rank
        return s

    def expr(self, root: Node, *, stop_at_root: bool = False) -> Any:
        """`root` as sympy; the root itself is expanded even if it is an atom
        unless `stop_at_root`."""
        order = _ancestors_until(root, self.atoms)
        for n in order:
            if n in self._memo:
                continue
            if n is not root or stop_at_root:
                if n in self.atoms:
                    self._memo[n] = self.atoms[n]
                    self._shapes[n] = n.shape
                    continue
            self._memo[n], self._shapes[n] = self._shaped(n)
        result = self._memo[root]  # smaller than root.shape: broadcast to it
        if root in self.atoms and not stop_at_root:
            del self._memo[root]  # the expansion is for this call only
            del self._shapes[root]
        return result

    def _shaped(self, n: Node) -> tuple[Any, tuple[object, ...]]:
        """`n` as sympy, and the shape of the array that expression computes."""
        if n.op in ("const", "dim"):
            return self._convert(n), ()
        if n.op in _TRANSPARENT:
            return self._memo[n.args[0]], self._shapes[n.args[0]]
        if _is_elementwise(n):
            converted = self._convert(n)
            shape = _broadcast([self._shapes[a] for a in n.args])
            operands = [rank(self._memo[a], self.ranks) for a in n.args]
            if rank(converted, self.ranks) < max(operands, default=0):
                shape = _UNKNOWN  # sympy simplified an operand away (y - y is 0)
            return converted, shape
        if n.op in ("getitem", "index") and self._shapes[n.args[0]] == ():
            return self._memo[n.args[0]], ()  # a scalar standing for an array
        if n.op == "put" and _squeezes(n) and self._shapes[n.args[0]] == ():
            return self._memo[n.args[0]], ()  # new axes of a scalar dropped
        saved = {}
        for a in n.args:
            if self._shapes[a] == a.shape:
                continue
            if self._memo[a] != 0 or n.op in _REDUCTIONS or n.op in _KEEP_ZERO:
                saved[a] = self._memo[a]
                self._memo[a] = Fill(saved[a], *(self._dim(d) for d in a.shape))
        try:
            return self._convert(n), n.shape
        finally:
            self._memo.update(saved)

    def _convert(self, n: Node) -> Any:
        args = [self._memo[a] for a in n.args]
        op = n.op
        if op in ("input", "iinput", "param"):
            return self.symbol(n.name, n)
        if op == "dim":
            return sp.Symbol(n.name, positive=True, integer=True)
        if op == "const":
            return number(n.value)
        if op in _TRANSPARENT:
            return args[0]
        if (
            (op in _LINEAR_OPS and args[0] == 0)
            or (op in _BILINEAR_OPS and 0 in args[:2])
            or (op == "einsum" and 0 in args)  # linear in every operand
        ):
            return sp.Integer(0)
        if op in ("getitem", "index") and rank(args[0], self.ranks) < n.args[0].rank:
            return args[0]  # a scalar standing for a full array: so is any part
        if op == "powc":
            return args[0] ** number(attr(n, Exponent).k)
        if op in _ARITHMETIC:
            return _ARITHMETIC[op](*args)
        if op == "exp" and isinstance(args[0], LogSoftmax):
            return Softmax(*args[0].args)  # exp(log_softmax(z)) = softmax(z)
        if op in _FUNCTIONS:
            return _FUNCTIONS[op](*args)
        converted = self._array_op(n, args)
        if converted is not None:
            return converted
        if op in ("sum", "mean", "logsumexp") and (
            attr(n, Axis).axes is None or len(attr(n, Axis).axes or ()) == 1
        ):
            axes, keep = attr(n, Axis).axes, attr(n, Axis).keepdims
            axis = None if axes is None else axes[0]
            code = sp.Integer(-1 if axis is None else axis)
            if op == "logsumexp" and not keep:
                return LogSumExp(args[0], code)
            if op != "logsumexp":
                total = (SumKeep if keep and axis is not None else Sum)(args[0], code)
                if op == "sum":
                    return total
                a = n.args[0]
                counted = a.shape if axis is None else (a.shape[axis],)
                count = sp.Mul(*(self._dim(d) for d in counted))
                return total / count
        if op in ("sum_axes", "sum_keep"):
            axes = attr(n, Axes).axes
            every = len(axes) == n.args[0].rank
            kind = SumKeep if op == "sum_keep" else Sum
            if every and op == "sum_axes":
                return Sum(args[0], sp.Integer(-1))
            out = args[0]
            for axis in sorted(axes, reverse=True):
                out = kind(out, sp.Integer(axis))
            return out
        if op == "index":
            return Index(args[0], sp.Integer(attr(n, Position).i))
        if op == "expand_dims":
            return ExpandDims(args[0], sp.Integer(attr(n, Position).i))
        if op in ("fill", "reshaped", "reshape"):
            kind_ = Fill if op == "fill" else Reshape
            return kind_(args[0], *(self._dim(d) for d in n.shape))
        if op in ("trail", "lift"):
            kind2 = Trail if op == "trail" else Lift
            return kind2(args[0], sp.Integer(attr(n, Count).count))
        if op == "stack":
            return Stack(*args)
        if op == "zeros_like" or op == "zeros":
            return Zeros(*(self._dim(d) for d in n.shape))
        if op == "ones":
            return OnesOf(*(self._dim(d) for d in n.shape))
        if op == "eye":
            return Eye(args[0])
        if op == "einsum":
            return Einsum(Label(attr(n, Subscripts).spec), *args)
        if op == "shape":
            return sp.Integer(0)  # only read through `fill`'s own dims
        return _unknown(n, args)

    def _array_op(self, n: Node, args: list[Any]) -> Any:
        """The ops of issue 9 and of the rank work (None: not one of them)."""
        op = n.op
        if op in _REDUCTIONS or (op in ("sum", "mean") and _several(n)):
            return self._reduction(n, args[0])
        if op in ("softmax", "log_softmax"):
            (axis,) = attr(n, Axis).axes or (n.rank - 1,)
            kind = Softmax if op == "softmax" else LogSoftmax
            return kind(args[0], sp.Integer(axis))
        if op == "getitem":
            items = attr(n, IndexAttr).items
            c, stacked = _scalar_factor(args[0], self.ranks)
            last = items[-1] if items else ""
            if last == "{1}" and args[1].is_Integer:
                last = str(int(args[1]))
            if isinstance(stacked, StackAxis) and last.isdigit():
                axis = int(stacked.args[-1])  # stack([a, b], axis=1)[:, 1] is b
                if items[:-1] == (":",) * axis and len(items) == axis + 1:
                    return c * stacked.args[int(last)]
            return GetItem(args[0], *args[1:], Label("|".join(items)))
        if op == "put":
            return self._put(n, args)
        if op == "gather":
            return Gather(*args)
        if op == "scatter_add":
            return ScatterAdd(*args)
        if op == "take_along":
            return TakeAlong(*args, sp.Integer(attr(n, IndexAttr).axis))
        if op == "put_along":
            return self._put_along(n, args)
        if op == "one_hot":
            return OneHot(args[0], args[1])
        if op == "arange":
            return Arange(args[0])
        if op == "permute":
            return Permute(args[0], _label(attr(n, Permutation).perm))
        if op == "swapaxes":
            return SwapAxes(args[0])
        if op == "tensordot":
            t = attr(n, TensorAxes)
            left, right = (",".join(map(str, x)) for x in (t.left, t.right))
            return Tensordot(args[0], args[1], Label(f"{left}|{right}"))
        if op == "concat":
            return Concat(*args, sp.Integer(attr(n, Position).i))
        if op == "stack" and n.attrs is not None:
            return StackAxis(*args, sp.Integer(attr(n, Position).i))
        if op == "diag":
            a1, a2 = attr(n, Axes).axes
            return Diagonal(args[0], sp.Integer(a1), sp.Integer(a2))
        return None

    def _reduction(self, n: Node, x: Any) -> Any:
        a = attr(n, Axis)
        axes = tuple(range(n.args[0].rank)) if a.axes is None else a.axes
        if n.op in ("sum", "mean"):  # several axes: one sum after another
            out = x
            for axis in sorted(axes, reverse=True):
                out = (SumKeep if a.keepdims else Sum)(out, sp.Integer(axis))
            if n.op == "sum":
                return out
            shape = n.args[0].shape
            return out / sp.Mul(*(self._dim(shape[i]) for i in axes))
        kind = _REDUCTIONS[n.op]
        every = a.axes is None or len(axes) == n.args[0].rank
        if every and not a.keepdims:
            return kind(x, _label(None), sp.Integer(0))
        return kind(x, _label(axes), sp.Integer(int(a.keepdims)))

    def _put(self, n: Node, args: list[Any]) -> Any:
        """Zeros with g at an index; an index of `:` and `None` only just drops the
        size-1 axes (`sum(..., keepdims=True)` put back is the plain sum)."""
        items = attr(n, IndexAttr).items
        g = args[0]
        if _squeezes(n):
            dims = iter(n.shape)
            spread = tuple(1 if i == "None" else next(dims) for i in items)
            spread += tuple(dims)  # the axes after the index
            if n.args[0].shape != spread:  # g broadcasts to the indexed shape
                g = Fill(g, *(self._dim(d) for d in spread))
            dropped = [k for k, i in enumerate(items) if i == "None"]
            if len(dropped) == 1 and isinstance(g, SumKeep):
                if int(g.args[1]) == dropped[0]:
                    return Sum(*g.args)
            squeezed = tuple("0" if i == "None" else i for i in items)
            return GetItem(g, Label("|".join(squeezed)))
        index = args[1 : 1 + _index_count(items)]
        dims = (self._dim(d) for d in n.shape)
        return Put(g, Label("|".join(items)), *index, *dims)

    def _put_along(self, n: Node, args: list[Any]) -> Any:
        """g at the labels along the last axis is `g onehot(y, k)`: the one-hot
        written by index. A g that is one number filled in is that number."""
        g, labels, size = args
        axis = attr(n, IndexAttr).axis
        gnode, lnode = n.args[0], n.args[1]
        if axis != lnode.rank or gnode.shape != lnode.shape:
            return PutAlong(g, labels, size, sp.Integer(axis))
        if gnode.op == "fill" and gnode.args[0].rank == 0:
            g = self._memo[gnode.args[0]] if gnode.args[0] in self._memo else g
        if rank(g, self.ranks) == 0:
            return g * OneHot(labels, size)
        return ExpandDims(g, sp.Integer(axis)) * OneHot(labels, size)

    def _dim(self, d: object) -> Any:
        if isinstance(d, int):
            return sp.Integer(d)
        assert isinstance(d, str)
        if d.isidentifier():
            return sp.Symbol(d, positive=True, integer=True)
        return _dim_expr(d)  # T * 2 * d, T**2*e: dims in arithmetic


class Generic(Op):
    """An op this module has no notation for (one added to the rule table alone):
    `op(operands)`; the last argument is its rank. It cannot be evaluated."""

    operands = -1

    @property
    def arrays(self) -> tuple[Any, ...]:
        return tuple(self.args[:-1])

    def out_rank(self, ranks: list[int]) -> int:
        return int(self.args[-1])

    def _eval_evalf(self, prec: int) -> Any:
        # never a number: sympy would look its name up in mpmath (`ones`, `diag`)
        return None

    def _operands(self, p: _Latex | _Text) -> str:
        return ", ".join(p.doprint(a) for a in self.arrays)

    def tex(self, p: _Latex) -> str:
        return (
            f"\\operatorname{{{type(self).__name__}}}\\left({self._operands(p)}\\right)"
        )

    def txt(self, p: _Text) -> str:
        return f"{type(self).__name__}({self._operands(p)})"

    def mml(self, p: _MathML) -> Element:
        inner = p.row()
        for i, a in enumerate(self.arrays):
            if i:
                inner.appendChild(p.mo(","))
            inner.appendChild(p.doprint_element(a))
        return p.row(p.mi(type(self).__name__), p.mo("("), inner, p.mo(")"))


@functools.cache
def _generic(op: str) -> type[Generic]:
    return type(op, (Generic,), {})


def _unknown(n: Node, args: list[Any]) -> Any:
    """An op added to the rule table alone: an element-wise function by its sympy
    definition (`log1p` is log(1 + x)), anything else as `op(operands)`."""
    rule = RULES.get(n.op)
    if rule is not None and rule.elementwise is not None and len(args) == 1:
        return rule.elementwise[0].xreplace({X: args[0]})
    return _generic(n.op)(*args, sp.Integer(n.rank))


#: Ops of a 0 standing for an array of zeros that need the array (logsumexp of
#: zeros is not 0); the linear ones are 0 themselves.
_KEEP_ZERO = frozenset({"logsumexp", "softmax", "log_softmax"})
#: The shape of an expression sympy made smaller than its operands broadcast to.
_UNKNOWN: tuple[object, ...] = ("?",)
_NOT_ELEMENTWISE = frozenset({"matmul", "transpose", "outer", "swap01"})


def _is_elementwise(n: Node) -> bool:
    """An op whose sympy expression is element-wise (operands broadcast)."""
    if n.op in _FUNCTIONS or n.op == "powc":
        return True
    if n.op in _ARITHMETIC:
        return n.op not in _NOT_ELEMENTWISE
    if n.op in _REDUCTIONS or n.op in _LINEAR_OPS or n.op in _BILINEAR_OPS:
        return False
    rule = RULES.get(n.op)
    return rule is not None and rule.elementwise is not None and len(n.args) == 1


def _broadcast(shapes: list[tuple[object, ...]]) -> tuple[object, ...]:
    """numpy's broadcast of shapes of dims (aligned from the right)."""
    rank_ = max((len(s) for s in shapes), default=0)
    out: list[object] = [1] * rank_
    for s in shapes:
        for i, d in enumerate(s, start=rank_ - len(s)):
            if d != 1:
                out[i] = d
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _dim_expr(d: str) -> Any:
    """A dim written as arithmetic on dims and sizes, as sympy."""
    names = {
        name: sp.Symbol(name, positive=True, integer=True)
        for name in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", d)
    }
    return sp.parse_expr(d, local_dict=names)


def _squeezes(n: Node) -> bool:
    """A `put` at an index of `:` and `None` only: it drops the new axes."""
    return all(i in (":", "None") for i in attr(n, IndexAttr).items)


def _several(n: Node) -> bool:
    """A reduction along several axes (or every axis, kept)."""
    a = attr(n, Axis)
    if a.axes is None:
        return a.keepdims
    return len(a.axes) > 1


def _ancestors_until(root: Node, atoms: Mapping[Node, Any]) -> list[Node]:
    """The nodes `root` needs, not looking past atoms (other than the root)."""
    seen: dict[int, Node] = {}
    stack = [root]
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen[n.id] = n
        if n is not root and n in atoms:
            continue
        stack.extend(n.args)
    return [seen[i] for i in sorted(seen)]


# --- numbers -------------------------------------------------------------------------


@functools.cache
def _numpy_functions() -> dict[Any, Callable[..., Any]]:
    np = _np()
    return {
        sp.exp: np.exp,
        sp.log: np.log,
        sp.sin: np.sin,
        sp.cos: np.cos,
        sp.tan: np.tan,
        sp.cot: lambda x: 1.0 / np.tan(x),
        sp.tanh: np.tanh,
        sp.Abs: np.abs,
        sp.sign: np.sign,
        sp.atan: np.arctan,
        sp.sinh: np.sinh,
        sp.cosh: np.cosh,
        sp.erf: np.vectorize(math.erf, otypes=[float]),
    }


def evaluate(expr: Any, values: Mapping[str, Any]) -> Any:
    """The closed form's value on numpy arrays: `values` maps symbol names to
    arrays (and dims to their sizes). Independent of every printer."""
    np = _np()
    if isinstance(expr, Label):
        return expr.name
    if isinstance(expr, sp.Symbol):
        return values[expr.name]
    if expr.is_Number:
        return float(expr)
    args = [evaluate(a, values) for a in expr.args]
    if isinstance(expr, Op):
        return expr.compute(*args)
    if expr.is_Add:
        return functools.reduce(lambda a, b: a + b, args)
    if expr.is_Mul:
        return functools.reduce(lambda a, b: a * b, args)
    if expr.is_Pow:
        base, exponent = args
        if expr.exp == sp.Rational(1, 2):
            return np.sqrt(base)
        return np.power(np.asarray(base, dtype=float), exponent)
    function = _numpy_functions().get(expr.func)
    if function is None:
        raise NotImplementedError(f"cannot evaluate {expr.func}")
    return function(*args)
