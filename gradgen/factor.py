"""Factored tangents: Jacobians kept as einsum products, identity factors eliminated.

Forward mode carries, for a param W of shape [n, h], tangents with W's axes appended.
The tangent of Z = X @ W is T[i, j, p, q] = X[i, p] delta(j, q): written out it is an
[N, h, n, h] array, h times larger than needed, and pushing it through the next
layer's `@ W2` would contract an identity. Kept as the einsum `ip,jq->ijpq` of X and
eye(h), it stays a product of small factors:

* an element-wise factor f (same shape as the value) joins the product:
  T * f[..., None, None] is `ip,jq,ij->ijpq`;
* a contraction joins too: T @ W2 over j is `ip,jq,ij,jk->ikpq`;
* a sum over a value axis drops that label from the output;
* and an identity whose label is summed over is eliminated by renaming
  (sum_j delta(j, q) g[j] = g[q]): `ip,iq,qk->ikpq`, exactly what one writes by hand.

The product is printed as one `np.einsum`; no identity or oversized array is built.
Only einsums with explicit labels take part; anything else uses the value as is.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from .graph import Count, Dim, Node, Shape, Subscripts, attr

if TYPE_CHECKING:
    from .ops import Ops

Factors = list[tuple[Node, str]]  # (operand, its labels)


def explicit(node: Node) -> tuple[Factors, str] | None:
    """The factors and output labels of a product node, or None."""
    if node.op == "einsum":
        subscripts = attr(node, Subscripts).spec
        if "..." in subscripts:
            return None
        inputs, output = subscripts.split("->")
        return list(zip(node.args, inputs.split(","), strict=True)), output
    if node.op == "eye":
        return [(node, "ab")], "ab"
    return None


def _fresh(used: set[str]) -> str:
    for letter in string.ascii_letters:
        if letter not in used:
            used.add(letter)
            return letter
    raise ValueError("an einsum with more than 52 labels")


def _rename(factors: Factors, output: str, old: str, new: str) -> tuple[Factors, str]:
    return [(n, s.replace(old, new)) for n, s in factors], output.replace(old, new)


def product(ops: Ops, factors: Factors, output: str, shape: Shape) -> Node:
    """The einsum of the factors, identities over summed labels eliminated."""
    changed = True
    while changed:
        changed = False
        for k, (node, labels) in enumerate(factors):
            if node.op != "eye" or len(factors) == 1:
                continue
            a, b = labels[0], labels[1]
            others = [s for j, (_, s) in enumerate(factors) if j != k]
            for gone, kept in ((a, b), (b, a)):
                if gone not in output and any(gone in s for s in others):
                    rest = factors[:k] + factors[k + 1 :]
                    factors, output = _rename(rest, output, gone, kept)
                    changed = True
                    break
            if changed:
                break
    if len(factors) == 1 and factors[0][1] == output:
        return factors[0][0]  # nothing left to multiply or sum
    factors, output = _canonical(factors, output)
    spec = ",".join(s for _, s in factors) + "->" + output
    return ops.make(
        "einsum", *(n for n, _ in factors), attrs=Subscripts(spec), shape=shape
    )


_READABLE = "ijklmnpqrstuvwxyzabcdefgh" + string.ascii_uppercase


def _canonical(factors: Factors, output: str) -> tuple[Factors, str]:
    """Labels renamed i, j, k, ... in order of appearance, output first: the same
    product always prints the same, whatever labels the merging used."""
    order: list[str] = []
    for c in output + "".join(s for _, s in factors):
        if c not in order:
            order.append(c)
    table = str.maketrans({c: _READABLE[i] for i, c in enumerate(order)})
    return [(n, s.translate(table)) for n, s in factors], output.translate(table)


def relabel(ops: Ops, node: Node, used: set[str]) -> tuple[Factors, str] | None:
    """`explicit(node)` with its labels renamed apart from `used` (which grows)."""
    found = explicit(node)
    if found is None:
        return None
    factors, output = found
    mapping: dict[str, str] = {}
    for label in sorted({c for _, s in factors for c in s} | set(output)):
        mapping[label] = _fresh(used)
    table = str.maketrans(mapping)
    return [(n, s.translate(table)) for n, s in factors], output.translate(table)


def times_elementwise(
    ops: Ops, tangent: Node, f: Node, shape: Shape, param_rank: int
) -> Node | None:
    """tangent * f[..., None...] as one product, f covering the value axes.

    `shape` is the value's shape followed by the param's (`param_rank` axes). f
    lines up with the value axes from the right, as numpy broadcasts it: its labels
    are those of the value axes it covers, found by position, never by dim name (a
    [D] vector times a [D, D] value scales its columns). `tangent` is a product, or
    a product lifted by leading size-1 axes (the tangent of a bias row added to a
    matrix); the lifted axes come from f, which must then cover every value axis."""
    lead = 0
    if tangent.op == "lift" and explicit(tangent.args[0]) is not None:
        lead = attr(tangent, Count).count
        tangent = tangent.args[0]
    elif tangent.op != "einsum":
        return None
    value_rank = len(shape) - param_rank
    start = value_rank - f.rank  # the first value axis f covers
    if (
        tangent.shape != shape[lead:]
        or start < 0
        or (lead and start)
        or f.shape != shape[start:value_rank]
    ):
        return None
    used: set[str] = set()
    found = relabel(ops, tangent, used)
    if found is None:
        return None
    factors, output = found
    output = "".join(_fresh(used) for _ in range(lead)) + output
    return product(ops, [*factors, (f, output[start:value_rank])], output, shape)


def contract(
    ops: Ops, subscripts: str, operands: tuple[Node, ...], shape: Shape
) -> Node | None:
    """An einsum with "..." (a matmul tangent), one operand a product: one product."""
    inputs, out = subscripts.split("->")
    parts = inputs.split(",")
    used: set[str] = set("".join(parts).replace(".", "")) | set(out.replace(".", ""))
    for k, (node, part) in enumerate(zip(operands, parts, strict=True)):
        if "..." not in part:
            continue
        found = relabel(ops, node, used)
        if found is None:
            return None
        inner, inner_out = found
        named = part.replace("...", "")
        ellipsis = inner_out[len(named) :]
        mapping = dict(zip(named, inner_out[: len(named)], strict=True))
        factors: Factors = list(inner)
        for j, (other, other_part) in enumerate(zip(operands, parts, strict=True)):
            if j != k:
                factors.append((other, "".join(mapping.get(c, c) for c in other_part)))
        output = "".join(mapping.get(c, c) for c in out.replace("...", "")) + ellipsis
        return product(ops, factors, output, shape)
    return None


def drop(ops: Ops, node: Node, axes: tuple[int, ...], shape: Shape) -> Node | None:
    """The sum of a product over some output axes: those labels leave the output."""
    used: set[str] = set()
    found = relabel(ops, node, used)
    if found is None:
        return None
    factors, output = found
    kept = "".join(c for i, c in enumerate(output) if i not in axes)
    return product(ops, factors, kept, shape)


def pairwise(ops: Ops, node: Node) -> Node | None:
    """A product of three or more factors as nested two-factor einsums, joining
    first the pair with the fewest labels (preferring a pair the graph already
    computes, such as a bias Jacobian), so that the large output is built in one
    pass: numpy's einsum loops naively over every label of a multi-operand
    product. Used when lowering, after differentiation."""
    found = explicit(node)
    if found is None or node.op != "einsum" or len(found[0]) < 3:
        return None
    factors, output = found
    size: dict[str, Dim] = {}
    for n, labels in factors:
        size.update(zip(labels, n.shape, strict=True))
    while len(factors) > 2:
        best: tuple[int, int, int, int] | None = None
        for i in range(len(factors)):
            for j in range(i + 1, len(factors)):
                rest = [f for k, f in enumerate(factors) if k not in (i, j)]
                spec, labels = _pair(factors[i], factors[j], rest, output)
                operands = (factors[i][0], factors[j][0])
                known = ops.graph.find("einsum", operands, Subscripts(spec)) is not None
                key = (len(labels), 0 if known else 1, i, j)
                if best is None or key < best:
                    best = key
        assert best is not None
        i, j = best[2], best[3]
        rest = [f for k, f in enumerate(factors) if k not in (i, j)]
        spec, labels = _pair(factors[i], factors[j], rest, output)
        shape = tuple(size[c] for c in labels)
        made = ops.make(
            "einsum", factors[i][0], factors[j][0], attrs=Subscripts(spec), shape=shape
        )
        factors = [*rest, (made, labels)]
    (a, la), (b, lb) = factors
    return ops.make(
        "einsum", a, b, attrs=Subscripts(f"{la},{lb}->{output}"), shape=node.shape
    )


def _pair(
    first: tuple[Node, str], second: tuple[Node, str], rest: Factors, output: str
) -> tuple[str, str]:
    """The einsum joining two factors, keeping the labels the rest still needs:
    its spec in canonical labels (so equal products are one node), and its output
    labels in the caller's naming."""
    (a, la), (b, lb) = first, second
    needed = set(output) | {c for _, s in rest for c in s}
    joined = [c for c in output if c in la + lb]
    joined += [c for c in dict.fromkeys(la + lb) if c not in joined and c in needed]
    labels = "".join(joined)
    ((_, ca), (_, cb)), canonical_output = _canonical([(a, la), (b, lb)], labels)
    return f"{ca},{cb}->{canonical_output}", labels
