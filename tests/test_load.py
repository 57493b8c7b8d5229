"""Tests for gradgen.load: YAML text -> located nodes, and every refusal."""

from __future__ import annotations

import pathlib
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradgen.errors import Location, SpecError
from gradgen.limits import MAX_BYTES
from gradgen.load import (
    YMap,
    YNode,
    YScalar,
    YSeq,
    control_character,
    key_text,
    load_yaml,
    load_yaml_text,
    show_text,
)

PATH = "specs/model.yaml"

SIMPLE = """\
# a linear model
model:
  name: linear
  inputs:
    X: [N, n]
  body:
    z: X @ w + b
  rate: 0.5
  epochs: 10
  train: true
  note: ~
"""


def load(text: str | bytes) -> YNode:
    return load_yaml_text(text, PATH)


def at(line: int, col: int) -> Location:
    return Location(PATH, line, col)


def refusal(text: str | bytes) -> list[tuple[int, int, str]]:
    """(line, col, message) of every diagnostic `text` is refused with."""
    with pytest.raises(SpecError) as info:
        load(text)
    diagnostics = info.value.diagnostics
    assert diagnostics
    assert all(d.location.path == PATH for d in diagnostics)
    return [(d.location.line, d.location.col, d.message) for d in diagnostics]


def only_refusal(text: str | bytes) -> tuple[int, int, str]:
    found = refusal(text)
    assert len(found) == 1, found
    return found[0]


def as_map(node: YNode | None) -> YMap:
    assert isinstance(node, YMap)
    return node


def as_scalar(node: YNode | None) -> YScalar:
    assert isinstance(node, YScalar)
    return node


def as_seq(node: YNode | None) -> YSeq:
    assert isinstance(node, YSeq)
    return node


def offset_of(node: YScalar, char: str) -> int:
    assert isinstance(node.value, str)
    return node.value.index(char)


# ----------------------------------------------------------------- parsing


def test_simple_spec_structure_and_locations() -> None:
    root = as_map(load(SIMPLE))
    assert root.keys() == ["model"]
    assert root.loc == at(2, 1)
    model = as_map(root.get("model"))
    assert model.loc == at(3, 3)
    assert model.keys() == ["name", "inputs", "body", "rate", "epochs", "train", "note"]

    name_key, name_value = model.entries[0]
    assert (name_key.value, name_key.loc) == ("name", at(3, 3))
    assert (as_scalar(name_value).value, name_value.loc) == ("linear", at(3, 9))

    shape = as_seq(as_map(model.get("inputs")).get("X"))
    assert shape.flow is True
    assert shape.loc == at(5, 8)
    assert [(as_scalar(i).value, i.loc) for i in shape.items] == [
        ("N", at(5, 9)),
        ("n", at(5, 12)),
    ]

    z = as_scalar(as_map(model.get("body")).get("z"))
    assert (z.value, z.loc) == ("X @ w + b", at(7, 8))


def test_scalars_resolve_like_yaml_1_1_safe_loading() -> None:
    model = as_map(as_map(load(SIMPLE)).get("model"))
    assert as_scalar(model.get("rate")).value == 0.5
    epochs = as_scalar(model.get("epochs")).value
    assert epochs == 10 and isinstance(epochs, int)
    assert as_scalar(model.get("train")).value is True
    assert as_scalar(model.get("note")).value is None

    text = (
        "a: yes\nb: 0x1F\nc: 1.0e+3\nd: 2001-12-14\ne: '12'\nf: !!str 12\n"
        "g: !!float 3\nh: .inf\ni: \nj: 1_000\nk: =\nl: 1e3\n"
    )
    root = as_map(load(text))
    values = {k: as_scalar(root.get(k)).value for k in root.keys()}
    # same as yaml.safe_load, except that timestamps and `=` stay strings
    expected = yaml.safe_load(text.replace("k: =\n", ""))
    assert values == {**expected, "d": "2001-12-14", "k": "="}
    assert values == {
        "a": True,
        "b": 31,
        "c": 1000.0,
        "d": "2001-12-14",  # timestamps are not constructed
        "e": "12",
        "f": "12",
        "g": 3.0,
        "h": float("inf"),
        "i": None,
        "j": 1000,
        "k": "=",
        "l": "1e3",  # YAML 1.1 floats need a dot
    }


def test_non_string_keys_are_kept_with_their_value() -> None:
    root = as_map(load("1: one\ntrue: yes-key\n~: nothing\nname: x\n"))
    assert [k.value for k, _ in root.entries] == [1, True, None, "name"]
    assert root.keys() == ["1", "true", "~", "name"]
    assert as_scalar(root.get("1")).value == "one"
    assert as_scalar(root.get("name")).value == "x"
    assert root.get("missing") is None


def test_block_sequences_and_nested_maps() -> None:
    root = as_map(load("layers:\n  - name: a\n    size: 3\n  - [1, 2]\n"))
    layers = as_seq(root.get("layers"))
    assert layers.flow is False
    assert layers.loc == at(2, 3)
    first = as_map(layers.items[0])
    assert first.loc == at(2, 5)
    size = as_scalar(first.get("size"))
    assert (size.value, size.loc) == (3, at(3, 11))
    assert as_seq(layers.items[1]).flow is True


def test_nodes_compare_by_value_and_location() -> None:
    assert load("a: [1, 2]\n") == load(b"a: [1, 2]\n")
    assert load("a: 1\n") != load("\na: 1\n")


def test_anchors_without_aliases_are_allowed() -> None:
    root = as_map(load("a: &first 1\n"))
    assert as_scalar(root.get("a")).value == 1


def test_an_anchor_name_may_be_used_twice() -> None:
    """Anchors are never recorded (no alias may use them), so PyYAML's duplicate
    anchor check does not refuse a spec that names two values alike."""
    root = as_map(load("a: &x 1\nb: &x [2]\n"))
    assert as_scalar(root.get("a")).value == 1
    assert as_scalar(as_seq(root.get("b")).items[0]).value == 2


def test_empty_value_after_a_scalar_has_no_text() -> None:
    """`{a}` ends the key's token where the empty value starts; the value must not
    take the key's text for its own."""
    [(key, value)] = as_map(load("{a}")).entries
    assert (key.value, as_scalar(value).value) == ("a", None)
    assert key.position(0) == at(1, 2)
    assert key_text(as_scalar(value)) == "null"


def test_tagged_node_location_is_the_tag() -> None:
    value = as_scalar(as_map(load("f: !!str 12\n")).get("f"))
    assert value.value == "12"
    assert value.loc == at(1, 4)
    assert value.position(0) == at(1, 10)


def test_utf8_bom_is_ignored() -> None:
    root = as_map(load("\ufeffa: 1\n".encode()))
    assert root.entries[0][0].loc == at(1, 1)


def test_load_yaml_reads_a_file(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text("a: [1, 2]\n", encoding="utf-8")
    node = as_map(load_yaml(spec, display_path="m.yaml"))
    assert node.loc == Location("m.yaml", 1, 1)
    assert as_map(load_yaml(spec)).loc.path == str(spec)


# ----------------------------------------------------------- YScalar.position


def test_position_in_plain_scalar() -> None:
    z = as_scalar(
        as_map(as_map(as_map(load(SIMPLE)).get("model")).get("body")).get("z")
    )
    # line 7 is "    z: X @ w + b": X is column 8, so `@` (offset 2) is column 10
    assert z.position(offset_of(z, "@")) == at(7, 10)
    assert z.position(0) == z.loc
    assert z.position(len("X @ w + b")) == at(7, 17)  # just past the end


def test_position_in_single_quoted_scalar() -> None:
    z = as_scalar(as_map(load("z: 'X @ w'\n")).get("z"))
    assert z.loc == at(1, 4)  # the opening quote
    assert z.position(0) == at(1, 5)
    assert z.position(2) == at(1, 7)


def test_position_in_single_quoted_scalar_with_escaped_quote() -> None:
    z = as_scalar(as_map(load("z: 'it''s @ w'\n")).get("z"))
    assert z.value == "it's @ w"
    # source: z: 'it''s @ w'  -> `s` is column 9, `@` column 11
    assert z.position(3) == at(1, 9)
    assert z.position(offset_of(z, "@")) == at(1, 11)


def test_position_in_double_quoted_scalar() -> None:
    z = as_scalar(as_map(load('z: "X @ w"\n')).get("z"))
    assert z.position(2) == at(1, 7)
    tabbed = as_scalar(as_map(load('z: "a\\tb @ \\x41"\n')).get("z"))
    assert tabbed.value == "a\tb @ A"
    # source: z: "a\tb @ \x41"  -> `\t` at 6, `b` at 8, `@` at 10, `\x41` at 12
    assert tabbed.position(1) == at(1, 6)
    assert tabbed.position(2) == at(1, 8)
    assert tabbed.position(4) == at(1, 10)
    assert tabbed.position(6) == at(1, 12)


def test_position_in_multiline_plain_scalar() -> None:
    z = as_scalar(as_map(load("z: X @ w\n   + b\n")).get("z"))
    assert z.value == "X @ w + b"
    assert z.position(offset_of(z, "+")) == at(2, 4)
    assert z.position(offset_of(z, "b")) == at(2, 6)


def test_position_in_block_scalars() -> None:
    literal = as_scalar(as_map(load("z: |\n  first\n  x @ y\n")).get("z"))
    assert literal.value == "first\nx @ y\n"
    assert literal.position(offset_of(literal, "@")) == at(3, 5)
    folded = as_scalar(as_map(load("z: >\n  x +\n  y @ z\n")).get("z"))
    assert folded.value == "x + y @ z\n"
    assert folded.position(offset_of(folded, "@")) == at(3, 5)


def test_position_of_scalar_built_by_hand() -> None:
    node = YScalar("abc", at(4, 2))
    assert node.position(2) == at(4, 4)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "   \n\n\t\n", "\t# tab\r\n", "---\n", b""]
)
def test_empty_spec(text: str | bytes) -> None:
    assert only_refusal(text) == (1, 1, "the spec is empty")


def test_not_utf8() -> None:
    line, col, message = only_refusal(b"a: 1\nb: caf\xe9\n")
    assert (line, col) == (2, 7)
    assert message.startswith("the spec is not a UTF-8 text file")


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [("a: 1\x00\n", 1, 5), ("a: 1\nb: \x1b[31m\n", 2, 4), (b"\x00\x01", 1, 1)],
)
def test_control_characters(text: str | bytes, line: int, col: int) -> None:
    found_line, found_col, message = only_refusal(text)
    assert (found_line, found_col) == (line, col)
    assert message.startswith("the spec is not a UTF-8 text file")


@pytest.mark.parametrize("kind", [bytes, str])
def test_oversized_spec_is_refused_before_parsing(kind: type) -> None:
    text = "[" * (MAX_BYTES + 1)  # would be refused for nesting if parsed
    data = text.encode() if kind is bytes else text
    assert only_refusal(data) == (
        1,
        1,
        f"the spec is {MAX_BYTES + 1} bytes; the limit is {MAX_BYTES}",
    )


def test_oversized_file(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_bytes(b"#" * (MAX_BYTES + 10))
    with pytest.raises(SpecError) as info:
        load_yaml(spec, "big.yaml")
    [diagnostic] = info.value.diagnostics
    assert diagnostic.location == Location("big.yaml", 1, 1)
    assert (
        diagnostic.message
        == f"the spec is {MAX_BYTES + 10} bytes; the limit is {MAX_BYTES}"
    )


def test_unreadable_file(tmp_path: pathlib.Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(SpecError) as info:
            load_yaml(path, "shown.yaml")
        [diagnostic] = info.value.diagnostics
        assert diagnostic.location == Location("shown.yaml", 1, 1)
        assert diagnostic.message.startswith("cannot read the spec")


@pytest.mark.parametrize(
    ("text", "line", "col", "problem"),
    [
        ("a: [1, 2\n", 2, 1, "expected ',' or ']'"),
        ("a: b: c\n", 1, 5, "mapping values are not allowed here"),
        ("a: 'open\n", 2, 1, "found unexpected end of stream"),
        ('a: "\\q"\n', 1, 6, "found unknown escape character"),
        ("\tx: 1\n", 1, 1, "found character '\\t' that cannot start any token"),
    ],
)
def test_syntax_errors(text: str, line: int, col: int, problem: str) -> None:
    found_line, found_col, message = only_refusal(text)
    assert (found_line, found_col) == (line, col)
    assert message.startswith("invalid YAML: ")
    assert problem in message


def test_syntax_error_mentions_its_context() -> None:
    _, _, message = only_refusal("a: [1, 2\n")
    assert "(while parsing a flow sequence at line 1)" in message


@pytest.mark.parametrize("text", ["a: 1\n---\nb: 2\n", "--- a\n--- b\n"])
def test_more_than_one_document(text: str) -> None:
    line, col, message = only_refusal(text)
    assert (line, col) == (2, 1)
    assert "more than one YAML document" in message


def test_duplicate_keys_are_all_reported_at_the_second_key() -> None:
    text = "w: 1\nb: 2\nw: 3\nnested:\n  x: 1\n  x: 2\nb: 4\nw: 5\n"
    assert refusal(text) == [
        (3, 1, "duplicate key `w` (first defined at line 1)"),
        (6, 3, "duplicate key `x` (first defined at line 5)"),
        (7, 1, "duplicate key `b` (first defined at line 2)"),
        (8, 1, "duplicate key `w` (first defined at line 1)"),
    ]


def test_duplicate_keys_compare_resolved_values() -> None:
    assert refusal("yes: 1\ntrue: 2\n'1': a\n1: b\n") == [
        (2, 1, "duplicate key `true` (first defined at line 1)")
    ]
    assert refusal("{a: 1, 'a': 2}") == [
        (1, 8, "duplicate key `a` (first defined at line 1)")
    ]


def test_problems_before_a_syntax_error_are_kept() -> None:
    assert refusal("w: 1\nw: 2\nx: !!set {}\na: [1\n") == [
        (2, 1, "duplicate key `w` (first defined at line 1)"),
        (
            3,
            4,
            "the YAML tag `!!set` is not supported in specs "
            "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)",
        ),
        (
            5,
            1,
            "invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at line 4)",
        ),
    ]


def test_alias_is_refused_at_the_alias() -> None:
    assert only_refusal("a: &x [1, 2]\nb: *x\n") == (
        2,
        4,
        "YAML aliases (*name) are not supported in specs; write the value out in full",
    )


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    started = time.perf_counter()
    found = refusal("\n".join(lines) + "\n")
    assert time.perf_counter() - started < 1
    assert found == [
        (
            2,
            8,
            "YAML aliases (*name) are not supported in specs; write the value out"
            " in full (this is the first of 81)",
        )
    ]


def test_too_many_errors_stop_the_load() -> None:
    found = refusal("".join(f"k: {i}\n" for i in range(500)))
    assert len(found) == 101
    assert found[-1][2] == "too many errors (100); stopping here"


def test_merge_key_is_refused() -> None:
    assert only_refusal("base: {a: 1}\nderived:\n  <<: {b: 2}\n") == (
        3,
        3,
        "merge keys (<<) are not supported in specs",
    )


@pytest.mark.parametrize(
    ("text", "col", "tag"),
    [
        (
            "a: !!python/object/apply:os.system [ls]\n",
            4,
            "!!python/object/apply:os.system",
        ),
        ("a: !!python/object:builtins.dict {}\n", 4, "!!python/object:builtins.dict"),
        ("a: !foo x\n", 4, "!foo"),
        ("a: !!binary aGk=\n", 4, "!!binary"),
        ("a: !!timestamp 2001-01-01\n", 4, "!!timestamp"),
        ("a: !!set {x}\n", 4, "!!set"),
        ("- !!omap [a: 1]\n", 3, "!!omap"),
    ],
)
def test_unsupported_tags(text: str, col: int, tag: str) -> None:
    assert only_refusal(text) == (
        1,
        col,
        f"the YAML tag `{tag}` is not supported in specs "
        "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)",
    )


def test_tag_handle_redefinition_cannot_smuggle_a_tag() -> None:
    line, col, message = only_refusal(
        "%TAG !! tag:evil.example,2000:\n---\na: !!int 1\n"
    )
    assert (line, col) == (3, 4)
    assert "`tag:evil.example,2000:int` is not supported" in message


def test_standard_tag_on_the_wrong_kind_of_node() -> None:
    assert only_refusal("a: !!map [1]\n") == (
        1,
        4,
        "the YAML tag `!!map` cannot be used on a sequence",
    )
    assert only_refusal("a: !!seq x\n") == (
        1,
        4,
        "the YAML tag `!!seq` cannot be used on a scalar",
    )


def test_invalid_explicitly_tagged_scalars() -> None:
    assert only_refusal("a: !!int x\n") == (1, 4, "`x` is not a valid int")
    assert only_refusal("a: !!bool maybe\n") == (1, 4, "`maybe` is not a valid bool")
    assert only_refusal("a: !!float\n") == (1, 4, "an empty value is not a valid float")


def test_overlong_number_is_refused() -> None:
    # sexagesimal ints like 1:1:1:... take quadratic time to construct
    line, col, message = only_refusal("a: " + "1:" * 600 + "1\n")
    assert (line, col) == (1, 4)
    assert "is too long (1201 characters; the limit is 1000)" in message


@pytest.mark.parametrize(
    ("text", "line", "col", "kind"),
    [
        ("? [a, b]\n: 1\n", 1, 3, "a sequence"),
        ("? {a: 1}\n: 2\n", 1, 3, "a mapping"),
        ("{[a]: 1}\n", 1, 2, "a sequence"),
    ],
)
def test_non_scalar_keys(text: str, line: int, col: int, kind: str) -> None:
    assert only_refusal(text) == (
        line,
        col,
        f"mapping keys must be scalars, not {kind}",
    )


def test_nesting_limit() -> None:
    node = load("[" * 50 + "]" * 50)
    for _ in range(49):
        node = as_seq(node).items[0]
    assert as_seq(node).items == ()
    assert only_refusal("[" * 51 + "]" * 51) == (
        1,
        51,
        "the spec is nested more than 50 levels deep",
    )
    block = "".join(" " * i + "a:\n" for i in range(60))
    assert only_refusal(block)[:2] == (51, 51)


@pytest.mark.parametrize("unit", ["[", "{a: ", "- ", "[\n"])
def test_very_deep_nesting_is_refused_quickly(unit: str) -> None:
    started = time.perf_counter()
    _, _, message = only_refusal(unit * 50_000)  # within the size limit
    assert time.perf_counter() - started < 2
    assert message == "the spec is nested more than 50 levels deep"


# ------------------------------------------------------------------ robustness


def check_tree(node: YNode) -> None:
    """Walk a tree, exercising every accessor; positions must stay in the file."""
    if isinstance(node, YScalar):
        for offset in (0, len(str(node.value)), len(str(node.value)) + 2):
            position = node.position(offset)
            assert position.path == PATH and position.line >= 1 and position.col >= 1
    elif isinstance(node, YSeq):
        for item in node.items:
            check_tree(item)
    else:
        assert len(node.keys()) == len(node.entries)
        for key, value in node.entries:
            check_tree(key)
            check_tree(value)


def load_or_refuse(data: str | bytes) -> None:
    try:
        node = load(data)
    except SpecError as error:
        assert error.diagnostics
        assert all(d.location.path == PATH for d in error.diagnostics)
    else:
        check_tree(node)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_give_a_node_or_a_spec_error(data: bytes) -> None:
    load_or_refuse(data)


YAMLISH = st.lists(
    st.sampled_from(
        [
            *"[]{}:,-?'\"\\!&*#|>%\n\t ",
            "  ",
            "\r\n",
            "---",
            "...",
            "a",
            "1",
            "<<",
            "!!int",
            "!!str",
            "&x",
            "*x",
            "\\x4",
            "é",
            "\u2028",
            "\x85",
            "%TAG ! tag:x,2000:\n",
        ]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_random_yamlish_text_gives_a_node_or_a_spec_error(text: str) -> None:
    load_or_refuse(text)


def test_large_garbage_is_handled_quickly() -> None:
    garbage = ("{[:,'\"-? !&a *a |>\n" * 60_000)[:MAX_BYTES]
    started = time.perf_counter()
    refusal(garbage)
    assert time.perf_counter() - started < 2


def test_positions_in_a_long_multiline_scalar_are_computed_once() -> None:
    """A parser asks for the position of every node of an expression; tracing a
    folded scalar's characters back to the file is done once per scalar, not once
    per question (that was quadratic: seconds for one 10 000-character value)."""
    expr = " + ".join(f"x{i % 10}" for i in range(2000))
    text = 'loss: "' + expr.replace(" + ", " +\\\n  ", 400) + '"\n'
    node = load_yaml_text(text, PATH)
    assert isinstance(node, YMap)
    loss = node.get("loss")
    assert isinstance(loss, YScalar) and isinstance(loss.value, str)
    started = time.perf_counter()
    for offset in range(len(loss.value)):
        loss.position(offset)
    assert time.perf_counter() - started < 2
    last = loss.value.rindex("x")
    where = loss.position(last)
    line = text.splitlines()[where.line - 1]
    assert line[where.col - 1 :].startswith(loss.value[last : last + 2])


def test_control_character() -> None:
    assert control_character("tab\tand\nnewline are fine, é too") is None
    assert control_character("bell \x07") == 5
    assert control_character("escape \x1b[31m") == 7
    assert control_character("delete \x7f") == 7
    assert control_character("c1 \x9b") == 3
    assert control_character("surrogate \ud800") == 10


def test_show_text_and_key_text() -> None:
    assert show_text("short") == "short"
    assert show_text("x" * 50) == "x" * 40 + "..."
    assert show_text("a\nb") == "a\\nb"
    node = load_yaml_text("1: a\ntrue: b\n~: c\n0x10: d\n", PATH)
    assert isinstance(node, YMap)
    assert [key_text(k) for k, _ in node.entries] == ["1", "true", "~", "0x10"]
