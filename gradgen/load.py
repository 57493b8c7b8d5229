"""YAML text -> a tree of located nodes (`YScalar`, `YSeq`, `YMap`).

Spec files are untrusted input (they arrive in pull requests), so this module never
calls `yaml.load`: constructors are where YAML turns text into arbitrary objects
(`!!python/object`), expands aliases (billion laughs), silently drops duplicate keys
and forgets where every value came from.  Instead we drive PyYAML's `SafeLoader` only
as far as its event stream -- the same reader, scanner, parser and resolver that
`yaml.compose` uses -- and build the node tree ourselves, iteratively.  Doing the
composing here rather than calling `yaml.compose` lets us:

* keep every node's position (PyYAML marks are 0-based; `Location` is 1-based),
  including the exact text of each scalar so `YScalar.position` can point at a
  character inside it;
* refuse aliases at the alias itself, refuse non-standard tags, merge keys,
  non-scalar keys, duplicate keys and multiple documents, all with a location;
* stop at a fixed nesting depth: `yaml.compose` recurses once per level, so a file
  of 100000 `[` would otherwise end in a `RecursionError`.

Scalars are resolved exactly like YAML 1.1 safe loading, using the resolver's tag and
the `SafeConstructor` scalar constructors for int, float, bool and null only; every
other plain scalar (timestamps included) stays a string.

Every failure is a `SpecError`; all problems found before giving up are reported.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.scanner import Scanner

from gradgen.errors import Collector, Diagnostic, Location, SpecError

__all__ = [
    "YMap",
    "YNode",
    "YScalar",
    "YSeq",
    "control_character",
    "key_text",
    "load_yaml",
    "load_yaml_text",
    "show_text",
]

MAX_BYTES = (
    1 << 18
)  # 256 KiB: a real spec is a few hundred bytes; PyYAML scans ~250 KiB/s
MAX_DEPTH = 50
MAX_ERRORS = 100
MAX_NUMBER_CHARS = 1000  # sexagesimal ints ("1:2:3:...") cost quadratic time

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_FOLDABLE = frozenset(" \t\n\u2028\u2029")


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class YScalar:
    """A scalar, resolved like YAML 1.1 safe loading; `loc` is where the node starts
    (its tag or anchor if it has one, else its opening quote or first character)."""

    value: str | int | float | bool | None
    loc: Location
    # The scalar's text before resolution, its style (None for plain, or one of
    # ' " | >), the source slice of its text token and where that token starts.
    _text: str = field(default="", repr=False, compare=False)
    _style: str | None = field(default=None, repr=False, compare=False)
    _raw: str | None = field(default=None, repr=False, compare=False)
    _start: Location | None = field(default=None, repr=False, compare=False)

    def position(self, offset: int) -> Location:
        """The file location of character `offset` (0-based) of the scalar's text.

        Exact for plain and quoted scalars, escapes included.  Characters of
        multi-line and block scalars are traced back through YAML's line folding;
        where that fails the answer is `loc`.  Offsets past the end point just after
        the last character.
        """
        offset = max(offset, 0)
        start = self._start or self.loc
        raw = self._raw
        if raw is None:
            return self.loc.shifted(offset)
        single_line = _LINE_BREAK.search(raw) is None
        if single_line and self._style is None:
            return start.shifted(offset)
        if single_line and self._style in ("'", '"') and not re.search(r"\\|''", raw):
            return start.shifted(1 + offset)
        positions = self._positions
        if offset < len(positions):
            line, col = positions[offset]
            return Location(start.path, line, col)
        if len(positions) < len(self._text):
            return self.loc
        if positions:
            line, col = positions[-1]
            return Location(start.path, line, col + 1 + offset - len(positions))
        return start.shifted(offset + (1 if self._style in ("'", '"') else 0))

    @functools.cached_property
    def _positions(self) -> list[tuple[int, int]]:
        """(line, col) of each traceable character, computed once per scalar: a
        parser asks for the position of every node of a long expression."""
        assert self._raw is not None
        start = self._start or self.loc
        return _value_positions(self._text, self._style, self._raw, start)


@dataclass(frozen=True)
class YSeq:
    """A sequence; `flow` is True for `[a, b]` style."""

    items: tuple[YNode, ...]
    loc: Location
    flow: bool


@dataclass(frozen=True)
class YMap:
    """A mapping; `entries` holds (key, value) pairs in file order, keys unique."""

    entries: tuple[tuple[YScalar, YNode], ...]
    loc: Location

    def get(self, key: str) -> YNode | None:
        """The value stored under `key` (compared with `keys()`), or None."""
        for k, value in self.entries:
            if key_text(k) == key:
                return value
        return None

    def keys(self) -> list[str]:
        """The keys in file order; a non-string key (`1:`, `true:`) as written."""
        return [key_text(k) for k, _ in self.entries]


YNode = YScalar | YSeq | YMap


def key_text(key: YScalar) -> str:
    if isinstance(key.value, str):
        return key.value
    if key._text:
        return key._text
    if key.value is None:
        return "null"
    if isinstance(key.value, bool):
        return "true" if key.value else "false"
    return str(key.value)


# ------------------------------------------------------------- positions in scalars


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
        match = _LINE_BREAK.search(raw)
        i, line, col = (match.end(), line + 1, 1) if match else (end, line, col)
    elif style in ("'", '"'):
        i, col = 1, col + 1
        end = max(end - 1, 1)
    while i < end:
        ch = raw[i]
        match = _LINE_BREAK.match(raw, i)
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
            elif _LINE_BREAK.match(raw, i + 1):  # escaped line break: nothing
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


def _value_positions(
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


# ------------------------------------------------------------------ composing


_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (
    _TAG + t for t in ("str", "int", "float", "bool", "null")
)
_SEQ, _MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"
_CONSTRUCTOR = SafeConstructor()
_CONVERTERS: dict[str, tuple[str, Callable[[yaml.ScalarNode], Any]]] = {
    _INT: ("int", _CONSTRUCTOR.construct_yaml_int),
    _FLOAT: ("float", _CONSTRUCTOR.construct_yaml_float),
    _BOOL: ("bool", _CONSTRUCTOR.construct_yaml_bool),
    _NULL: ("null", _CONSTRUCTOR.construct_yaml_null),
}
_ALIAS_MESSAGE = (
    "YAML aliases (*name) are not supported in specs; write the value out in full"
)
_ALLOWED_TAGS = "!!str, !!int, !!float, !!bool, !!null, !!seq and !!map"


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def control_character(text: str) -> int | None:
    """The index of the first control character in `text` (tab and newline aside),
    or None: what must not reach a generated file or a terminal."""
    match = _CONTROL.search(text)
    return None if match is None else match.start()


def show_text(text: str, limit: int = 40) -> str:
    """`text` made safe and short enough to quote in a message."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    if not shown.isprintable():
        shown = shown.encode("unicode_escape").decode("ascii")
    return shown


def _show_tag(tag: str) -> str:
    return show_text("!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag)


class _EventSource(yaml.SafeLoader):
    """SafeLoader's parser, remembering the last scalar token it consumed so a
    tagged scalar's text can be located separately from its tag."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.scalar_token: yaml.ScalarToken | None = None

    def get_token(self) -> Any:
        token = super().get_token()
        if isinstance(token, yaml.ScalarToken):
            self.scalar_token = token
        return token


class _Abort(Exception):
    """Stop composing; the reasons are already in the collector."""


class _SeqFrame:
    def __init__(self, loc: Location, flow: bool) -> None:
        self.loc, self.flow = loc, flow
        self.items: list[YNode] = []
        self.expects_key = False

    def add(self, node: YNode | None) -> None:
        if node is not None:
            self.items.append(node)

    def finish(self) -> YSeq:
        return YSeq(tuple(self.items), self.loc, self.flow)


class _MapFrame:
    def __init__(self, loc: Location, composer: _Composer) -> None:
        self.loc, self.composer = loc, composer
        self.entries: list[tuple[YScalar, YNode]] = []
        self.seen: dict[tuple[bool, object], YScalar] = {}
        self.expects_key = True
        self.key: YScalar | None = None

    def add(self, node: YNode | None) -> None:
        if not self.expects_key:
            if self.key is not None and node is not None:
                self.entries.append((self.key, node))
            self.expects_key = True
            return
        self.expects_key = False
        self.key = None
        if node is None:
            return
        if not isinstance(node, YScalar):
            kind = "a sequence" if isinstance(node, YSeq) else "a mapping"
            self.composer.error(node.loc, f"mapping keys must be scalars, not {kind}")
            return
        identity = (isinstance(node.value, bool), node.value)
        first = self.seen.get(identity)
        if first is not None:
            self.composer.error(
                node.loc,
                f"duplicate key `{show_text(key_text(node))}` "
                f"(first defined at line {first.loc.line})",
            )
            return
        self.seen[identity] = node
        self.key = node

    def finish(self) -> YMap:
        return YMap(tuple(self.entries), self.loc)


class _Composer:
    """Turns one document of the event stream into nodes, collecting problems."""

    def __init__(self, text: str, path: str) -> None:
        self.text, self.path = text, path
        self.events = _EventSource(text)
        self.collector = Collector()
        self.first_alias: int | None = None  # index of its diagnostic
        self.aliases = 0

    def _alias(self, event: yaml.AliasEvent) -> None:
        """Refuse aliases; one message for all of them, at the first one (a billion
        laughs file has hundreds, and each would say the same)."""
        self.aliases += 1
        if self.first_alias is None:
            self.first_alias = len(self.collector.diagnostics)
            self.error(self.at(event.start_mark), _ALIAS_MESSAGE)

    def _count_aliases(self) -> None:
        if self.first_alias is not None and self.aliases > 1:
            first = self.collector.diagnostics[self.first_alias]
            message = f"{_ALIAS_MESSAGE} (this is the first of {self.aliases})"
            self.collector.diagnostics[self.first_alias] = Diagnostic(
                first.location, message
            )

    def at(self, mark: yaml.Mark | None) -> Location:
        if mark is None:
            return Location(self.path)
        return Location(self.path, mark.line + 1, mark.column + 1)

    def error(self, location: Location, message: str) -> None:
        self.collector.error(location, message)
        if len(self.collector.diagnostics) >= MAX_ERRORS:
            self.fatal(location, f"too many errors ({MAX_ERRORS}); stopping here")

    def fatal(self, location: Location, message: str) -> None:
        self.collector.error(location, message)
        raise _Abort

    def load(self) -> YNode:
        root: YNode | None = None
        try:
            root = self._stream()
        except _Abort:
            pass
        except yaml.MarkedYAMLError as exc:
            self.collector.error(
                self.at(exc.problem_mark or exc.context_mark), _yaml_message(exc)
            )
        except yaml.YAMLError as exc:
            self.collector.error(
                Location(self.path), f"invalid YAML: {show_text(str(exc), 300)}"
            )
        except RecursionError:
            self.collector.error(Location(self.path), "the spec is nested too deeply")
        self._count_aliases()
        self.collector.raise_if_any()
        if root is None:
            raise SpecError([Diagnostic(Location(self.path), "the spec is empty")])
        return root

    def _stream(self) -> YNode | None:
        events = self.events
        events.get_event()  # StreamStartEvent
        if events.check_event(yaml.StreamEndEvent):
            return None
        events.get_event()  # DocumentStartEvent
        root = self._document()
        events.get_event()  # DocumentEndEvent
        if not events.check_event(yaml.StreamEndEvent):
            self.error(
                self.at(events.peek_event().start_mark),
                "the spec contains more than one YAML document; "
                "put everything in one document",
            )
        if isinstance(root, YScalar) and root._raw == "":
            return None  # `---` and nothing else
        return root

    def _document(self) -> YNode | None:
        stack: list[_SeqFrame | _MapFrame] = []
        while True:
            self.events.scalar_token = None
            event = self.events.get_event()
            node: YNode | None
            if isinstance(event, yaml.AliasEvent):
                self._alias(event)
                node = None
            elif isinstance(event, yaml.ScalarEvent):
                node = self._scalar(event, bool(stack) and stack[-1].expects_key)
            elif isinstance(event, yaml.CollectionStartEvent):
                stack.append(self._collection(event, depth=len(stack) + 1))
                continue
            elif isinstance(event, yaml.CollectionEndEvent) and stack:
                node = stack.pop().finish()
            else:  # not produced by PyYAML's parser inside a document
                self.fatal(self.at(event.start_mark), "unexpected YAML structure")
            if not stack:
                return node
            stack[-1].add(node)

    def _collection(self, event: yaml.Event, depth: int) -> _SeqFrame | _MapFrame:
        loc = self.at(event.start_mark)
        if depth > MAX_DEPTH:
            self.fatal(loc, f"the spec is nested more than {MAX_DEPTH} levels deep")
        is_seq = isinstance(event, yaml.SequenceStartEvent)
        if event.tag not in (None, "!", _SEQ if is_seq else _MAP):
            self.error(
                loc, _bad_tag(event.tag, "a sequence" if is_seq else "a mapping")
            )
        return (
            _SeqFrame(loc, bool(event.flow_style)) if is_seq else _MapFrame(loc, self)
        )

    def _scalar(self, event: yaml.ScalarEvent, is_key: bool) -> YScalar | None:
        loc = self.at(event.start_mark)
        text: str = event.value
        if event.tag not in (None, "!"):
            tag = event.tag
            if tag not in (_STR, *_CONVERTERS):
                self.error(loc, _bad_tag(tag, "a scalar"))
                return None
        else:
            tag = self.events.resolve(yaml.ScalarNode, text, event.implicit)
        if tag == _MERGE and is_key:
            self.error(loc, "merge keys (<<) are not supported in specs")
            return None
        value: str | int | float | bool | None = text
        if tag in _CONVERTERS:
            kind, convert = _CONVERTERS[tag]
            problem = None
            if kind in ("int", "float") and len(text) > MAX_NUMBER_CHARS:
                problem = (
                    f"the number `{show_text(text)}` is too long ({len(text)} characters;"
                    f" the limit is {MAX_NUMBER_CHARS})"
                )
            else:
                try:
                    value = convert(yaml.ScalarNode(tag, text))
                except (ValueError, LookupError, TypeError, ArithmeticError):
                    shown = f"`{show_text(text)}`" if text else "an empty value"
                    problem = f"{shown} is not a valid {kind}"
            if problem is not None:
                self.error(loc, problem)
                return None
        # The scalar's own text starts after any tag or anchor.
        start_mark = event.start_mark
        token = self.events.scalar_token
        if token is not None and token.end_mark.index == event.end_mark.index:
            start_mark = token.start_mark
        return YScalar(
            value,
            loc,
            _text=text,
            _style=event.style,
            _raw=self.text[start_mark.index : event.end_mark.index],
            _start=self.at(start_mark),
        )


def _bad_tag(tag: str, kind: str) -> str:
    if tag in (_STR, _SEQ, _MAP, *_CONVERTERS):
        return f"the YAML tag `{_show_tag(tag)}` cannot be used on {kind}"
    return (
        f"the YAML tag `{_show_tag(tag)}` is not supported in specs "
        f"(only {_ALLOWED_TAGS})"
    )


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    message = exc.problem or "invalid YAML"
    if exc.context:
        context = exc.context
        if exc.context_mark is not None and exc.context_mark != exc.problem_mark:
            context += f" at line {exc.context_mark.line + 1}"
        message += f" ({context})"
    return "invalid YAML: " + show_text(message, 300)


# ------------------------------------------------------------------ entry points


def _location_of(text: str, index: int, path: str) -> Location:
    """The location of character `index` of `text`, counting lines like YAML."""
    line, line_start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, index):
        line, line_start = line + 1, match.end()
    return Location(path, line, index - line_start + 1)


def _is_blank_or_comment(line: str) -> bool:
    content = line.lstrip(" \t")
    return not content or content.startswith("#")


def _too_big(size: int | str, path: str) -> SpecError:
    message = f"the spec is {size} bytes; the limit is {MAX_BYTES}"
    return SpecError([Diagnostic(Location(path), message)])


def load_yaml_text(text: str | bytes, path: str) -> YNode:
    """Parse one YAML document; `path` is the display path used in every Location."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise _too_big(len(text), path)
        try:
            source = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            prefix = text[: exc.start].decode("utf-8", "replace")
            bad = text[exc.start : exc.start + 1].hex()
            message = f"the spec is not a UTF-8 text file (byte 0x{bad} at this point)"
            raise SpecError(
                [Diagnostic(_location_of(prefix, len(prefix), path), message)]
            ) from None
    else:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_BYTES:
            raise _too_big(size, path)
        source = text
    source = source.removeprefix("\ufeff")
    bad_char = yaml.reader.Reader.NON_PRINTABLE.search(source)
    if bad_char is not None:
        message = (
            "the spec is not a UTF-8 text file (it contains the character "
            f"U+{ord(bad_char.group()):04X}, which YAML does not allow)"
        )
        location = _location_of(source, bad_char.start(), path)
        raise SpecError([Diagnostic(location, message)])
    if all(_is_blank_or_comment(line) for line in source.splitlines()):
        raise SpecError([Diagnostic(Location(path), "the spec is empty")])
    return _Composer(source, path).load()


def read_spec_bytes(path: pathlib.Path, display_path: str | None = None) -> bytes:
    """The bytes of the spec at `path`, reading no more than the size limit allows
    (so a huge file, or /dev/zero, is refused without being read)."""
    shown = display_path if display_path is not None else str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                size = os.fstat(handle.fileno()).st_size
                raise _too_big(
                    size if size > MAX_BYTES else f"more than {MAX_BYTES}", shown
                )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(
            [Diagnostic(Location(shown), f"cannot read the spec: {reason}")]
        ) from None
    return data


def load_yaml(path: pathlib.Path, display_path: str | None = None) -> YNode:
    """Read and parse the spec at `path`; locations use `display_path` if given."""
    shown = display_path if display_path is not None else str(path)
    return load_yaml_text(read_spec_bytes(path, shown), shown)
