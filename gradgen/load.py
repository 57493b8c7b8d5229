"""YAML text -> a tree of located nodes (`YScalar`, `YSeq`, `YMap`).

Spec files are untrusted input (they arrive in pull requests), so this module never
calls `yaml.load`: constructors are where YAML turns text into arbitrary objects
(`!!python/object`), expands aliases (billion laughs), silently drops duplicate keys
and forgets where every value came from.  `_Composer` is PyYAML's composer on
`SafeLoader` (whose constructor it never calls) with the node-building methods
overridden to build located nodes and to refuse, each at its location: aliases (at
the alias, never looked up), nesting deeper than `MAX_DEPTH` (counted while
composing, long before the composer's recursion could matter), non-standard tags,
merge keys, non-scalar and duplicate keys, and more than one document.  libyaml's
`CSafeLoader` composes in C, where none of this can be hooked, and words syntax
errors differently.  What no library does is here too: `YScalar.position` traces a
character of a scalar back to the file, for errors inside expressions.

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

from gradgen.errors import Collector, Diagnostic, Location, SpecError
from gradgen.limits import MAX_BYTES, MAX_DEPTH, MAX_ERRORS, MAX_NUMBER_CHARS
from gradgen.positions import LINE_BREAK, value_positions

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
        single_line = LINE_BREAK.search(raw) is None
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
        return value_positions(self._text, self._style, self._raw, start)


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


# ------------------------------------------------------------------ composing


_TAG = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP, _MERGE = (_TAG + t for t in ("str", "seq", "map", "merge"))
_CONVERTERS: dict[str, tuple[str, Callable[[Any, yaml.ScalarNode], Any]]] = {
    _TAG + "int": ("int", SafeConstructor.construct_yaml_int),
    _TAG + "float": ("float", SafeConstructor.construct_yaml_float),
    _TAG + "bool": ("bool", SafeConstructor.construct_yaml_bool),
    _TAG + "null": ("null", SafeConstructor.construct_yaml_null),
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


class _Abort(Exception):
    """Stop composing; the reasons are already in the collector."""


_KEY = object()  # the `index` that `compose_node` is given for a mapping key


class _Composer(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's composer, building located nodes and collecting every problem where
    it occurs.  Its constructor is never called.  An alias is refused at the alias,
    never looked up (and no anchor is recorded); nesting is counted as collections
    open; tags, scalar values and keys are checked as they are read.  A node with a
    problem composes to None."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self.text, self.path = text, path
        self.collector = Collector()
        self.depth = 0  # nodes open, so the collections enclosing the next one
        self.is_key = False
        self.first_alias: int | None = None  # index of its diagnostic
        self.aliases = 0
        self.scalar_token: Any = None

    def get_token(self) -> Any:
        """Remember the last scalar token read, so that a tagged scalar's text can
        be located apart from its tag."""
        token = super().get_token()
        if isinstance(token, yaml.ScalarToken):
            self.scalar_token = token
        return token

    def at(self, mark: Any) -> Location:
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
            root = self._single_document()
        except _Abort:
            pass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            location = Location(self.path) if mark is None else self.at(mark)
            self.collector.error(location, _yaml_message(exc))
        except yaml.YAMLError as exc:
            self.collector.error(
                Location(self.path), f"invalid YAML: {show_text(str(exc), 300)}"
            )
        except RecursionError:
            self.collector.error(Location(self.path), "the spec is nested too deeply")
        if self.first_alias is not None and self.aliases > 1:
            first = self.collector.diagnostics[self.first_alias]
            message = f"{_ALIAS_MESSAGE} (this is the first of {self.aliases})"
            self.collector.diagnostics[self.first_alias] = Diagnostic(
                first.location, message
            )
        self.collector.raise_if_any()
        if root is None:
            raise SpecError([Diagnostic(Location(self.path), "the spec is empty")])
        return root

    def _single_document(self) -> YNode | None:
        self.get_event()  # StreamStartEvent
        if self.check_event(yaml.StreamEndEvent):
            return None
        root: YNode | None = self.compose_document()
        if not self.check_event(yaml.StreamEndEvent):
            self.error(
                self.at(self.peek_event().start_mark),
                "the spec contains more than one YAML document; "
                "put everything in one document",
            )
        if isinstance(root, YScalar) and root._raw == "":
            return None  # `---` and nothing else
        return root

    def compose_node(self, parent: object, index: object) -> YNode | None:
        """Refuse an alias; check a collection's depth and tag before composing it.

        All aliases get one message, at the first (a billion laughs file has
        hundreds, and each would say the same)."""
        event = self.peek_event()
        loc = self.at(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            self.get_event()
            self.aliases += 1
            if self.first_alias is None:
                self.first_alias = len(self.collector.diagnostics)
                self.error(loc, _ALIAS_MESSAGE)
            return None
        if isinstance(event, yaml.CollectionStartEvent):
            if self.depth >= MAX_DEPTH:
                self.fatal(loc, f"the spec is nested more than {MAX_DEPTH} levels deep")
            is_seq = isinstance(event, yaml.SequenceStartEvent)
            if event.tag not in (None, "!", _SEQ if is_seq else _MAP):
                kind = "a sequence" if is_seq else "a mapping"
                self.error(loc, _bad_tag(event.tag, kind))
        self.is_key = index is _KEY
        self.depth += 1
        node: YNode | None = super().compose_node(parent, index)
        self.depth -= 1
        return node

    def compose_sequence_node(self, anchor: str | None) -> YSeq:
        event = self.get_event()
        items: list[YNode] = []
        while not self.check_event(yaml.SequenceEndEvent):
            item = self.compose_node(None, len(items))
            if item is not None:
                items.append(item)
        self.get_event()
        return YSeq(tuple(items), self.at(event.start_mark), bool(event.flow_style))

    def compose_mapping_node(self, anchor: str | None) -> YMap:
        event = self.get_event()
        entries: list[tuple[YScalar, YNode]] = []
        seen: dict[tuple[bool, object], YScalar] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key = self._key(self.compose_node(None, _KEY), seen)
            value = self.compose_node(None, key)
            if key is not None and value is not None:
                entries.append((key, value))
        self.get_event()
        return YMap(tuple(entries), self.at(event.start_mark))

    def _key(
        self, node: YNode | None, seen: dict[tuple[bool, object], YScalar]
    ) -> YScalar | None:
        """`node` if it can be a key: a scalar not already in this mapping (keys are
        compared resolved, so `yes` and `true` clash but `1` and `true` do not)."""
        if isinstance(node, YSeq | YMap):
            kind = "a sequence" if isinstance(node, YSeq) else "a mapping"
            self.error(node.loc, f"mapping keys must be scalars, not {kind}")
            return None
        if node is None:
            return None
        first = seen.setdefault((isinstance(node.value, bool), node.value), node)
        if first is not node:
            self.error(
                node.loc,
                f"duplicate key `{show_text(key_text(node))}` "
                f"(first defined at line {first.loc.line})",
            )
            return None
        return node

    def compose_scalar_node(self, anchor: str | None) -> YScalar | None:
        event = self.get_event()
        loc = self.at(event.start_mark)
        text: str = event.value
        tag = event.tag
        if tag in (None, "!"):
            tag = self.resolve(yaml.ScalarNode, text, event.implicit)
        elif tag not in (_STR, *_CONVERTERS):
            self.error(loc, _bad_tag(tag, "a scalar"))
            return None
        if tag == _MERGE and self.is_key:
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
                    value = convert(self, yaml.ScalarNode(tag, text))
                except (ValueError, LookupError, TypeError, ArithmeticError):
                    shown = f"`{show_text(text)}`" if text else "an empty value"
                    problem = f"{shown} is not a valid {kind}"
            if problem is not None:
                self.error(loc, problem)
                return None
        # The scalar's own text starts after any tag or anchor, at its token: the
        # last scalar token read, if the event was made from it.
        start_mark = event.start_mark
        token = self.scalar_token
        if token is not None and token.end_mark is event.end_mark:
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
    for match in LINE_BREAK.finditer(text, 0, index):
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
