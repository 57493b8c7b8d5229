"""Spec validation (`gradgen.spec`): keys, types, versions, shapes, names, the
optimizer, and expression problems reported together with the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradgen.errors import SpecError
from gradgen.limits import MAX_VECTOR
from gradgen.load import load_yaml_text
from gradgen.model import build
from gradgen.spec import Spec, Validated, read_spec, validate

GOOD = "gradgen: 1\ninputs:\n  x: [n]\nparams:\n  w: [n]\nloss: sum(x * w)\n"


def checked(text: str, name: str | None = None, stem: str = "model") -> Validated:
    return validate(load_yaml_text(text, "s.yaml"), "s.yaml", stem, name)


def spec_of(text: str, name: str | None = None, stem: str = "model") -> Spec:
    """The spec of a valid text (its expressions too)."""
    return build(checked(text, name, stem)).spec


def errors(text: str, name: str | None = None, stem: str = "model") -> list[str]:
    """`line:col: message` of every problem, through the model too."""
    with pytest.raises(SpecError) as info:
        build(checked(text, name, stem))
    return [
        f"{d.location.line}:{d.location.col}: {d.message}"
        for d in info.value.diagnostics
    ]


def with_(replace: str, by: str) -> str:
    assert replace in GOOD
    return GOOD.replace(replace, by)


def test_a_good_spec() -> None:
    spec = spec_of(GOOD)
    assert spec.name == "model"
    assert [(d.name, d.shape) for d in spec.params] == [("w", ("n",))]
    assert spec.optimizer.rule == "sgd" and spec.optimizer.hyper == (("lr", 0.01),)
    assert set(spec.dims) == {"n"}
    assert not checked(GOOD).diagnostics


def test_read_spec_uses_the_display_path(tmp_path: Path) -> None:
    path = tmp_path / "my_model.yaml"
    path.write_text(GOOD)
    spec = read_spec(path, "shown/my_model.yaml")
    assert spec.name == "my_model" and spec.path == "shown/my_model.yaml"


# ------------------------------------------------------------------ top level


def test_top_level_must_be_a_mapping() -> None:
    assert errors("- 1\n- 2\n") == [
        "1:1: a spec is a mapping of keys (gradgen, name, doc, inputs, params,"
        " define, loss, outputs, optimizer, dtype, backend, threads), not a list"
    ]
    assert errors("just text\n")[0].endswith("not the string `just text`")


def test_unknown_keys_suggest_and_list() -> None:
    assert errors(GOOD + "optimiser: adam\nzzz: 1\n") == [
        "7:1: unknown key `optimiser` (did you mean `optimizer`?)",
        "8:1: unknown key `zzz` (the keys are gradgen, name, doc, inputs, params,"
        " define, loss, outputs, optimizer, dtype, backend, threads)",
    ]


def test_a_misspelt_key_is_not_also_reported_missing() -> None:
    text = "gradgn: 1\ninputs:\n  x: [n]\nparms:\n  w: [n]\nlos: sum(x * w)\n"
    assert errors(text) == [
        "1:1: unknown key `gradgn` (did you mean `gradgen`?)",
        "4:1: unknown key `parms` (did you mean `params`?)",
        "6:1: unknown key `los` (did you mean `loss`?)",
    ]


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("2", "unsupported spec format version `2`"),
        ("1.0", "unsupported spec format version `1.0`"),
        ("'1'", "unsupported spec format version `1`"),
        ("true", "unsupported spec format version `true`"),
        ("[1]", "unsupported spec format version a list"),
        ("", "unsupported spec format version empty"),
    ],
)
def test_unsupported_versions(version: str, message: str) -> None:
    found = errors(with_("gradgen: 1", f"gradgen: {version}".rstrip()))
    assert found == [
        f"1:{10 if version else 9}: {message}; this gradgen reads version 1"
        " (`gradgen: 1`)"
    ]


def test_missing_version() -> None:
    assert errors(GOOD.replace("gradgen: 1\n", "")) == [
        "1:1: missing `gradgen: 1`: the spec format version is required"
    ]


# ------------------------------------------------------------------ module name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../../x", "is not a Python identifier"),
        ("/etc/passwd", "is not a Python identifier"),
        ("a.b", "is not a Python identifier"),
        ("naïve", "is not a Python identifier"),
        ("class", "is a Python keyword"),
        ("_private", "starts with `_`, which gradgen reserves for its own names"),
        ("os", "would shadow the standard library module `os`"),
        ("numpy", "would shadow the installed package `numpy`"),
        ("gradgen", "would shadow the installed package `gradgen`"),
        ("CON", "is a device name on Windows, where no file can have it"),
        ("x" * 101, "is 101 characters long; the limit is 100"),
    ],
)
def test_bad_module_names(name: str, problem: str) -> None:
    found = errors(f"name: '{name}'\n" + GOOD)
    shown = name if len(name) <= 40 else name[:40] + "..."
    assert found == [f"1:7: module name `{shown}` {problem}"]


def test_soft_keywords_are_ordinary_names() -> None:
    """`match` and `case` are keywords only inside a match statement."""
    assert spec_of("name: match\n" + GOOD, None, "model").name == "match"
    assert spec_of(GOOD, None, "case").name == "case"


def test_module_name_from_the_file_or_an_override() -> None:
    assert errors(GOOD, stem="my-model") == [
        "1:1: module name `my-model` is not a Python identifier"
        " (the file's name; set `name:` in the spec)"
    ]
    assert errors(GOOD, name="../x") == [
        "1:1: module name `../x` is not a Python identifier"
        " (the `name` given for this spec)"
    ]
    assert spec_of("name: good\n" + GOOD, name="better").name == "better"
    assert errors("name: 5\n" + GOOD) == [
        "1:7: `name` must be a string, not the integer `5`"
    ]


# ------------------------------------------------------------------ doc


def test_doc_is_kept_verbatim_but_stripped() -> None:
    spec = spec_of('doc: "  quotes \\" and \\\\ backslashes  "\n' + GOOD)
    assert spec.doc == 'quotes " and \\ backslashes'


def test_doc_problems() -> None:
    assert errors("doc: [a]\n" + GOOD) == ["1:6: `doc` must be a string, not a list"]
    assert errors('doc: "a\\x07b"\n' + GOOD) == [
        "1:8: `doc` contains the control character U+0007;"
        " the generated module's docstring cannot hold it"
    ]
    assert errors("doc: " + "a" * 10_001 + "\n" + GOOD) == [
        "1:6: `doc` is 10001 characters; the limit is 10000"
    ]


@pytest.mark.parametrize(
    "key", ["gradgen-version", "spec", "spec-sha256", "body-sha256"]
)
def test_doc_lines_cannot_pose_as_the_header(key: str) -> None:
    text = f"doc: |\n  Fine.\n  {key}: forged\n" + GOOD
    assert errors(text) == [
        f"3:3: a `doc` line may not start with `{key}:`: the generated module's"
        " header uses such lines (indent it, or reword it)"
    ]
    spec_of(f"doc: |\n  Fine.\n    {key}: indented is fine\n" + GOOD)


# ------------------------------------------------------------------ sections


@pytest.mark.parametrize("section", ["inputs", "params", "define", "outputs"])
def test_sections_must_be_mappings(section: str) -> None:
    text = GOOD + f"{section}: 5\n" if section in ("define", "outputs") else None
    if text is None:
        text = GOOD.replace(f"{section}:\n", f"{section}: 5\nx{section}:\n")
        found = errors(text)
    else:
        found = errors(text)
    assert any(
        f"`{section}` must be a mapping of names, not the integer `5`" in e
        for e in found
    ), found


def test_empty_and_missing_params() -> None:
    assert errors("gradgen: 1\ninputs: {x: []}\nparams:\nloss: x * x\n") == [
        "3:8: `params` is empty: nothing to differentiate"
    ]
    assert errors("gradgen: 1\ninputs: {x: []}\nparams: {}\nloss: x * x\n") == [
        "3:9: `params` is empty: nothing to differentiate"
    ]
    assert errors("gradgen: 1\ninputs: {x: []}\nloss: x * x\n") == [
        "1:1: the spec has no `params`: nothing to differentiate"
    ]


def test_loss_or_outputs_needed() -> None:
    assert errors("gradgen: 1\nparams: {w: []}\n") == [
        "1:1: a spec needs a `loss`, `outputs`, or both"
    ]
    spec_of("gradgen: 1\nparams: {w: []}\noutputs: {o: w * 2}\n")


def test_loss_independent_of_params() -> None:
    assert errors(with_("loss: sum(x * w)", "loss: sum(x)")) == [
        "6:7: the loss does not depend on any param: nothing to differentiate"
    ]
    # an output may depend on no param: its Jacobian NamedTuple is empty (issue 7)
    spec_of(GOOD + "outputs:\n  o: x * 2\n")


@pytest.mark.parametrize(
    ("shape", "col", "message"),
    [
        ("n", 6, "a shape is a list of dims like `[N, n]` or `[]`, not the string `n`"),
        (
            "5",
            6,
            "a shape is a list of dims like `[N, n]` or `[]`, not the integer `5`",
        ),
        ("[1, 2, 3, 4, 5, 6, 7]", 6, "shapes have rank 0 to 6; this one has rank 7"),
        ("[0]", 7, "a dim must be a positive integer, not 0"),
        ("[-3]", 7, "a dim must be a positive integer, not -3"),
        ("[2.5]", 7, "a dim is a name or a positive integer, not the number `2.5`"),
        ("[1e3]", 7, "dim `1e3` is not a Python identifier"),
        ("[true]", 7, "a dim is a name or a positive integer, not the boolean `true`"),
        ("[[n]]", 7, "a dim is a name or a positive integer, not a list"),
        ("[n-1]", 7, "dim `n-1` is not a Python identifier"),
        ("[for]", 7, "dim `for` is a Python keyword"),
        (
            "[_n]",
            7,
            "dim `_n` starts with `_`, which gradgen reserves for its own names",
        ),
    ],
)
def test_bad_shapes(shape: str, col: int, message: str) -> None:
    assert errors(GOOD.replace("w: [n]", f"w: {shape}")) == [f"5:{col}: {message}"]


@pytest.mark.parametrize(
    ("dim", "message"),
    [
        ("np", "dim `np` is reserved: the generated module imports numpy as `np`"),
        (
            "float",
            "dim `float` is reserved: the generated code uses Python's builtin `float`",
        ),
        ("dL_dw", "dim `dL_dw` is reserved: gradgen names gradients `dL_d<name>`"),
    ],
)
def test_reserved_dims(dim: str, message: str) -> None:
    found = errors(GOOD.replace("[n]", f"[{dim}]"))
    assert len(found) == 1 and found[0].startswith(f"3:7: {message}"), found


def test_dims_may_be_integers_and_scalars_are_empty() -> None:
    spec = spec_of(
        GOOD.replace("w: [n]", "w: [n, 3]\n  b: []").replace(
            "sum(x * w)", "sum(x @ w) + b"
        )
    )
    assert [d.shape for d in spec.params] == [("n", 3), ()]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my-weight", "`my-weight` in `params` is not a Python identifier"),
        ("'a b'", "`a b` in `params` is not a Python identifier"),
        ("lambda", "`lambda` in `params` is a Python keyword"),
        (
            "_w",
            "`_w` in `params` starts with `_`, which gradgen reserves for its own names",
        ),
        ("1", "`1` in `params` is not a name (names are Python identifiers)"),
        ("null", "`null` in `params` is not a name (names are Python identifiers)"),
        ("np", "`np` is reserved: the generated module imports numpy as `np`"),
        (
            "NamedTuple",
            "`NamedTuple` is reserved: the generated module imports `NamedTuple` from typing",
        ),
        ("loss", "`loss` is reserved: the generated module defines its own `loss`"),
        (
            "Gradients",
            "`Gradients` is reserved: the generated module defines its own `Gradients`",
        ),
        ("step", "`step` is reserved: the generated module defines its own `step`"),
        (
            "float",
            "`float` is reserved: the generated code uses Python's builtin `float`",
        ),
        (
            "tuple",
            "`tuple` is reserved: the generated code uses Python's builtin `tuple`",
        ),
        (
            "dL_dx",
            "`dL_dx` is reserved: gradgen names gradients `dL_d<name>` (this one reads as the gradient of `x`)",
        ),
        ("x", "`x` is already defined at line 3"),
        ("n", "`n` is also used as a dim (line 3)"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    text = GOOD.replace("  w: [n]\n", f"  w: [n]\n  {name}: []\n")
    found = errors(text)
    assert len(found) == 1 and found[0].endswith(message), found


def test_names_clashing_with_generated_jacobians() -> None:
    text = GOOD + "outputs:\n  a_b: w * 2\n  aB: w * 3\n"
    assert errors(text) == [
        "9:3: outputs `a_b` and `aB` would both generate `ABJacobian`; rename one of them"
    ]
    text = GOOD.replace("  x: [n]", "  x: [n]\n  jacobian_o: []") + "outputs:\n  o: w\n"
    assert errors(text) == [
        "4:3: `jacobian_o` clashes with the name generated for output `o`"
    ]
    text = GOOD.replace("[n]", "[OJacobian]") + "outputs:\n  o: w\n"
    assert errors(text)[0].endswith(
        "dim `OJacobian` clashes with the name generated for output `o`"
    )


def test_temporaries_names_are_allowed() -> None:
    """t0, t1... are numbered around the spec's own names."""
    spec_of(GOOD.replace("w: [n]", "w: [n]\n  t0: []").replace("x * w", "x * w * t0"))


# ------------------------------------------------------------------ expressions


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "`loss` is empty; it needs an expression"),
        ("[]", "`loss` is an empty list"),
        ("{a: 1}", "`loss` must be an expression, not a mapping"),
        ("true", "`loss` must be an expression, not the boolean `true`"),
        ("[w, [x, {}]]", "`loss` must be an expression, not a mapping"),
    ],
)
def test_expression_values(expr: str, message: str) -> None:
    found = errors(with_("loss: sum(x * w)", f"loss: {expr}".rstrip()))
    assert len(found) == 1 and found[0].endswith(message), found


def test_long_yaml_vectors_are_refused() -> None:
    items = ", ".join(["w"] * (MAX_VECTOR + 1))
    text = "gradgen: 1\nparams: {w: []}\nloss: sum(v)\ndefine:\n  v: [" + items + "]\n"
    assert errors(text) == [
        f"5:6: `v` is a list of {MAX_VECTOR + 1} elements; the limit is {MAX_VECTOR}"
    ]


def test_numbers_as_expressions() -> None:
    text = "gradgen: 1\nparams: {w: []}\ndefine:\n  c: 3\nloss: w * c\n"
    spec_of(text)
    text = "gradgen: 1\nparams: {w: []}\ndefine:\n  c: .inf\nloss: w * c\n"
    assert errors(text) == ["4:6: the number `inf` is not finite"]


def test_expression_errors_are_reported_with_the_others() -> None:
    """A bad shape and a misspelt function, in one run; an expression that uses the
    entry with the bad shape is not reported again."""
    text = (
        "gradgen: 1\n"
        "inputs:\n  x: [n]\n"
        "params:\n  w: [-1]\n  v: [n]\n"
        "define:\n  a: rleu(x)\n  b: w * 2\n"
        "loss: sum(v * zz)\n"
    )
    assert errors(text) == [
        "5:7: a dim must be a positive integer, not -1",
        "8:6: unknown function `rleu` (did you mean `relu`?)",
        "10:15: undefined name `zz`",
    ]


def test_a_failed_definition_is_reported_once() -> None:
    text = (
        "gradgen: 1\nparams:\n  w: [n]\n"
        "define:\n  a: rleu(w)\n  b: a * 2\n"
        "loss: sum(b) + sum(a)\n"
        "outputs:\n  o: a\n"
    )
    assert errors(text) == ["5:6: unknown function `rleu` (did you mean `relu`?)"]


def test_expression_checks_skip_when_names_are_unknown() -> None:
    """With `params: 5` the names in scope are unknown: no cascade of messages."""
    text = "gradgen: 1\nparams: 5\nloss: sum(w)\n"
    assert errors(text) == [
        "2:9: `params` must be a mapping of names, not the integer `5`"
    ]


def test_names_under_a_misspelt_key_are_not_undefined() -> None:
    text = "gradgen: 1\nparms:\n  w: [n]\nloss: sum(w)\n"
    assert errors(text) == ["2:1: unknown key `parms` (did you mean `params`?)"]


def test_forward_references_cycles_and_self_references() -> None:
    base = "gradgen: 1\nparams:\n  w: []\ndefine:\n"
    assert errors(base + "  a: b * 2\n  b: w * w\nloss: a\n") == [
        "5:6: `b` is defined later in `define` (line 6);"
        " an entry may only use the entries above it"
    ]
    assert errors(base + "  a: w + b\n  b: a * 2\nloss: a\n") == [
        "5:10: a cycle in `define`: a -> b -> a;"
        " an entry may only use the entries above it"
    ]
    assert errors(base + "  a: c\n  b: a\n  c: [b, w]\nloss: sum(c)\n") == [
        "5:6: a cycle in `define`: a -> c -> b -> a;"
        " an entry may only use the entries above it"
    ]
    assert errors(base + "  a: a + w\nloss: a\n") == [
        "5:6: `a` refers to itself; `define` cannot have cycles"
    ]


def test_nonscalar_loss() -> None:
    assert errors(with_("sum(x * w)", "x * w")) == [
        "6:7: the loss must be a scalar; this one has shape [n]"
        " (reduce it with sum(...) or mean(...))"
    ]


def test_too_many_operations() -> None:
    lines = ["gradgen: 1", "params: {w: [], u: []}", "define:", "  d0: w * u"]
    lines += [f"  d{i}: sin(d{i - 1}) * w + cos(d{i - 1}) * u" for i in range(1, 1000)]
    lines.append("loss: d999")
    found = errors("\n".join(lines) + "\n")
    assert len(found) == 1
    assert "the spec is too large: with this expression it has" in found[0]


# ------------------------------------------------------------------ optimizer


def test_optimizer_forms_and_defaults() -> None:
    spec = spec_of(GOOD + "optimizer: adam\n")
    assert spec.optimizer.rule == "adam"
    assert dict(spec.optimizer.hyper) == {
        "lr": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }
    spec = spec_of(GOOD + "optimizer: {rule: adam, eps: 1e-6, lr: 2}\n")
    assert dict(spec.optimizer.hyper)["eps"] == 1e-6  # YAML 1.1 reads 1e-6 as text
    assert dict(spec.optimizer.hyper)["lr"] == 2.0
    spec = spec_of(GOOD + "optimizer: {lr: 0.5}\n")
    assert spec.optimizer.rule == "sgd" and spec.optimizer.hyper == (("lr", 0.5),)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (
            "{rule: adma}",
            "unknown optimizer rule `adma` (did you mean `adam`?); the rules are sgd, momentum, adam",
        ),
        (
            "{rule: [adam]}",
            "the optimizer `rule` is one of sgd, momentum, adam, not a list",
        ),
        (
            "5",
            "`optimizer` must be a mapping like `{rule: sgd, lr: 0.01}`, not the integer `5`",
        ),
        ("{rule: sgd, lr: -0.1}", "`lr` must be positive, not -0.1"),
        ("{rule: sgd, lr: 0}", "`lr` must be positive, not 0"),
        (
            "{rule: sgd, lr: .nan}",
            "`lr` must be a finite number, not the number `.nan`",
        ),
        (
            "{rule: sgd, lr: fast}",
            "`lr` must be a finite number, not the string `fast`",
        ),
        ("{rule: adam, eps: 0}", "`eps` must be positive, not 0"),
        ("{rule: momentum, beta: 1}", "`beta` must be in [0, 1), not 1"),
        ("{rule: momentum, beta: -0.1}", "`beta` must be in [0, 1), not -0.1"),
        ("{rule: adam, beta2: 1.5}", "`beta2` must be in [0, 1), not 1.5"),
        (
            "{rule: sgd, beta: 0.9}",
            "`beta` is not a hyperparameter of `sgd`; it takes lr",
        ),
        (
            "{rule: momentum, betta: 0.9}",
            "`betta` is not a hyperparameter of `momentum` (did you mean `beta`?); it takes lr, beta",
        ),
    ],
)
def test_bad_optimizers(optimizer: str, message: str) -> None:
    found = errors(GOOD + f"optimizer: {optimizer}\n")
    assert len(found) == 1 and found[0].endswith(message), found


def test_too_many_printed_operations() -> None:
    """A thousand small outputs: each prints its value and one Jacobian per param."""
    lines = ["gradgen: 1", "inputs: {x: [n]}", "params: {w: [n], s: []}", "outputs:"]
    lines += [f"  o{i}: w * s + x * {i}" for i in range(1000)]
    assert errors("\n".join(lines) + "\n") == [
        "386:9: the spec is too large: with this output, the generated module would"
        " compute 8016 operations (the loss counts twice, an output once more per"
        " param for its Jacobian); the limit is 8000"
    ]  # 7 operations, 3 times over, per output: the 382nd crosses the limit


def test_a_declaration_mapping_needs_a_shape_and_known_keys() -> None:
    assert errors(GOOD.replace("w: [n]", "w: {a: 1}")) == [
        "5:6: a declaration mapping needs a `shape`: `{shape: [N], dtype: int}`",
        "5:7: unknown key `a` (a declaration is a shape, or `{shape: [...], dtype: int}`)",
    ]
    spec = spec_of(
        GOOD.replace("x: [n]", "x: [n]\n  y: {shape: [n], dtype: int}").replace(
            "sum(x * w)", "sum(x * w) + sum(w[y])"
        )
    )
    assert [(d.name, d.dtype) for d in spec.inputs] == [("x", "float"), ("y", "int")]
