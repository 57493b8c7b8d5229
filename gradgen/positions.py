"""Positions inside a YAML scalar: which file line and column each character of a
scalar's value came from, through quoting, escapes and line folding.

No YAML library keeps these (PyYAML's marks stop at the node), yet an error inside
an expression string must point at its column: `load.YScalar.position` asks here.
"""

from __future__ import annotations

import re

from yaml.scanner import Scanner

from gradgen.errors import Location

LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_FOLDABLE = frozenset(" \t\n\u2028\u2029")


def _source_units(
    style: str | None, raw: str, line: int, col: int
) -> tuple[list[tuple[str, int, int, bool]], int, int]:
    """Decode a scalar's source slice into (char, line, col, fixed) units.

    `fixed` is False for plain whitespace and line breaks, which YAML may fold or
    strip; escapes (`\\n`, `''`) decode to one fixed unit at their first character.
    Also returns where the content ends.
    """
    units: list[tuple[str, int, int, bool]] = []
    i, end = 0, len(raw)
    if style in ("|", ">"):  # skip the header line
        match = LINE_BREAK.search(raw)
        i, line, col = (match.end(), line + 1, 1) if match else (end, line, col)
    elif style in ("'", '"'):
        i, col = 1, col + 1
        end = max(end - 1, 1)
    while i < end:
        ch = raw[i]
        match = LINE_BREAK.match(raw, i)
        if match:
            units.append(("\n" if ch in "\r\n\x85" else ch, line, col, False))
            i, line, col = match.end(), line + 1, 1
        elif style == "'" and raw.startswith("''", i):
            units.append(("'", line, col, True))
            i, col = i + 2, col + 2
        elif style == '"' and ch == "\\":
            nxt = raw[i + 1 : i + 2]
            width = 2
            if nxt in Scanner.ESCAPE_REPLACEMENTS:
                decoded = Scanner.ESCAPE_REPLACEMENTS[nxt]
            elif nxt in Scanner.ESCAPE_CODES:
                width += Scanner.ESCAPE_CODES[nxt]
                try:
                    decoded = chr(int(raw[i + 2 : i + width], 16))
                except ValueError:
                    break
            elif LINE_BREAK.match(raw, i + 1):  # escaped line break: nothing
                i, col = i + 1, col + 1
                continue
            else:
                break
            units.append((decoded, line, col, True))
            i, col = i + width, col + width
        else:
            units.append((ch, line, col, ch not in _FOLDABLE))
            i, col = i + 1, col + 1
    return units, line, col


def value_positions(
    value: str, style: str | None, raw: str, start: Location
) -> list[tuple[int, int]]:
    """(line, col) of each character of `value`, as far as it can be traced.

    Folding only ever changes whitespace, so every other character of the value
    appears, in order, among the source units; whitespace created by folding points
    at the source break it replaced.
    """
    units, end_line, end_col = _source_units(style, raw, start.line, start.col)
    positions: list[tuple[int, int]] = []
    j = 0
    for ch in value:
        if ch in _FOLDABLE:
            k = j  # an escaped `\ ` or `\t` may follow foldable source whitespace
            while k < len(units) and not units[k][3]:
                k += 1
            if k < len(units) and units[k][0] == ch:
                j = k
            elif j == len(units) or units[j][0] != ch:
                positions.append(
                    units[j][1:3] if j < len(units) else (end_line, end_col)
                )
                continue
        else:
            while j < len(units) and units[j][0] in _FOLDABLE:
                j += 1
            if j == len(units) or units[j][0] != ch:
                break
        positions.append(units[j][1:3])
        j += 1
    return positions
