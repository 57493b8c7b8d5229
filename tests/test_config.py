"""[tool.gradgen] discovery and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gradgen.config import (
    Config,
    KeyLocation,
    SpecOverride,
    find_pyproject,
    load_config,
)
from gradgen.errors import Location, SpecError


def project(root: Path, toml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(toml, encoding="utf-8")
    return pyproject


def errors_of(start: Path) -> list[tuple[Location, str]]:
    with pytest.raises(SpecError) as info:
        load_config(start)
    return [(d.location, d.message) for d in info.value.diagnostics]


FULL = """\
[project]
name = "demo"

[tool.black]
line-length = 88

[tool.gradgen]
specs = ["examples", "extra/one.yaml"]
out = "build/generated"

[tool.gradgen.overrides."examples/mlp.yaml"]
out = "generated/nets"
name = "mlp_v2"

[tool.gradgen.overrides."examples/relu.yaml"]
name = "relu"
"""


# --- discovery -----------------------------------------------------------------


def test_discovered_from_nested_subfolder(tmp_path: Path) -> None:
    pyproject = project(tmp_path / "proj", FULL)
    nested = tmp_path / "proj" / "src" / "deep" / "er"
    nested.mkdir(parents=True)
    assert find_pyproject(nested) == pyproject.resolve()
    config = load_config(nested)
    assert config is not None
    root = (tmp_path / "proj").resolve()
    assert config.root == root
    assert config.pyproject == root / "pyproject.toml"


def test_start_may_be_a_file(tmp_path: Path) -> None:
    pyproject = project(tmp_path, FULL)
    spec = tmp_path / "examples" / "mlp.yaml"
    spec.parent.mkdir()
    spec.write_text("{}\n")
    assert find_pyproject(spec) == pyproject.resolve()


def test_nearest_pyproject_wins_even_without_gradgen_table(tmp_path: Path) -> None:
    project(tmp_path, FULL)
    inner = project(tmp_path / "sub", '[project]\nname = "inner"\n')
    assert find_pyproject(tmp_path / "sub") == inner.resolve()
    assert load_config(tmp_path / "sub") is None


def test_no_pyproject_gives_none(tmp_path: Path) -> None:
    if any((p / "pyproject.toml").is_file() for p in tmp_path.parents):
        pytest.skip("a pyproject.toml exists above the temporary directory")
    (tmp_path / "a").mkdir()
    assert find_pyproject(tmp_path / "a") is None
    assert load_config(tmp_path / "a") is None


def test_directory_named_pyproject_toml_is_ignored(tmp_path: Path) -> None:
    project(tmp_path, FULL)
    (tmp_path / "sub" / "pyproject.toml").mkdir(parents=True)
    assert find_pyproject(tmp_path / "sub") == (tmp_path / "pyproject.toml").resolve()


def test_no_gradgen_table_gives_none(tmp_path: Path) -> None:
    project(tmp_path, "[tool.black]\nline-length = 100\n")
    assert load_config(tmp_path) is None
    project(tmp_path, "")
    assert load_config(tmp_path) is None


# --- values --------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    project(tmp_path, "[tool.gradgen]\n")
    config = load_config(tmp_path)
    root = tmp_path.resolve()
    assert config == Config(
        root=root,
        specs=(),
        out=root / "generated",
        overrides={},
        pyproject=root / "pyproject.toml",
    )
    assert config is not None
    assert config.override_for(Path("examples/x.yaml")) == SpecOverride()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.out = root  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.overrides[root] = SpecOverride()  # type: ignore[index]


def test_full_configuration(tmp_path: Path) -> None:
    project(tmp_path, FULL)
    config = load_config(tmp_path)
    assert config is not None
    root = tmp_path.resolve()
    assert config.specs == (root / "examples", root / "extra" / "one.yaml")
    assert all(p.is_absolute() for p in config.specs)
    assert config.out == root / "build" / "generated"
    assert dict(config.overrides) == {
        root
        / "examples"
        / "mlp.yaml": SpecOverride(out=root / "generated" / "nets", name="mlp_v2"),
        root / "examples" / "relu.yaml": SpecOverride(out=None, name="relu"),
    }
    assert config.override_for(root / "examples" / "mlp.yaml").name == "mlp_v2"
    assert config.override_for(Path("examples/../examples/relu.yaml")).name == "relu"


def test_single_spec_string_and_paths_are_normalised(tmp_path: Path) -> None:
    outside = (tmp_path / "shared").resolve()
    project(
        tmp_path / "proj",
        f'[tool.gradgen]\nspecs = "./examples/"\nout = "../out"\n'
        f"[tool.gradgen.overrides]\n"
        f'"{(outside / "x.yaml").as_posix()}" = {{ name = "x" }}\n',
    )
    config = load_config(tmp_path / "proj")
    assert config is not None
    assert config.specs == ((tmp_path / "proj" / "examples").resolve(),)
    assert config.out == (tmp_path / "out").resolve()
    assert list(config.overrides) == [outside / "x.yaml"]


def test_duplicate_specs_are_listed_once(tmp_path: Path) -> None:
    project(tmp_path, '[tool.gradgen]\nspecs = ["examples", "examples/", "x"]\n')
    config = load_config(tmp_path)
    assert config is not None
    assert config.specs == (tmp_path.resolve() / "examples", tmp_path.resolve() / "x")


def test_dotted_and_inline_forms(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool]\ngradgen.specs = ["a.yaml"]\n'
        'gradgen.overrides."a.yaml" = { out = "o", name = "a2" }\n',
    )
    config = load_config(tmp_path)
    assert config is not None
    root = tmp_path.resolve()
    assert config.override_for(Path("a.yaml")) == SpecOverride(root / "o", "a2")


# --- errors --------------------------------------------------------------------


def test_invalid_toml_is_located(tmp_path: Path) -> None:
    pyproject = project(tmp_path, '[tool.gradgen]\nspecs = ["a"\nout = "x"\n')
    [(location, message)] = errors_of(tmp_path)
    assert location.path == str(pyproject.resolve())
    assert location.line == 3
    assert message.startswith("invalid TOML: ")
    assert "(at line" not in message


def test_invalid_utf8_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.gradgen]\nout = '\xff'\n")
    [(location, message)] = errors_of(tmp_path)
    assert location.line == 1
    assert "cannot read pyproject.toml" in message


def keyed_errors(start: Path) -> list[tuple[str, str]]:
    """(key path, message) of each error, checking that every one names its key."""
    errors = errors_of(start)
    assert all(isinstance(loc, KeyLocation) for loc, _ in errors)
    return [(loc.key_path, msg) for loc, msg in errors if isinstance(loc, KeyLocation)]


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    pyproject = project(tmp_path, FULL.replace('out = "build', 'outt = "build'))
    [(location, message)] = errors_of(tmp_path)
    assert message == "unknown key `outt` in [tool.gradgen] (did you mean `out`?)"
    where = str(pyproject.resolve())
    assert location == KeyLocation(where, keys=("tool", "gradgen", "outt"))
    assert str(location) == f"{where}:[tool.gradgen].outt"


def test_unknown_override_key_is_named_in_its_own_table(tmp_path: Path) -> None:
    toml = FULL.replace('name = "relu"', 'nmae = "relu"')
    project(tmp_path, toml)
    assert keyed_errors(tmp_path) == [
        (
            '[tool.gradgen.overrides."examples/relu.yaml"].nmae',
            "unknown key `nmae` in override for `examples/relu.yaml` "
            "(did you mean `name`?)",
        )
    ]


def test_wrong_types_name_their_keys(tmp_path: Path) -> None:
    pyproject = project(
        tmp_path,
        "[tool.black]\nout = 1\n\n"
        "[tool.gradgen]\n"
        "# specs = 3 (a comment that mentions the key)\n"
        "specs = 3\n"
        "out = false\n",
    )
    assert keyed_errors(tmp_path) == [
        (
            "[tool.gradgen].out",
            "`out` must be a non-empty path string, not a boolean (False)",
        ),
        (
            "[tool.gradgen].specs",
            "`specs` must be a list of paths (strings), not an integer",
        ),
    ]
    assert all(loc.path == str(pyproject.resolve()) for loc, _ in errors_of(tmp_path))


def test_bad_spec_entries(tmp_path: Path) -> None:
    project(tmp_path, '[tool.gradgen]\nspecs = [\n  "ok",\n  1,\n  "",\n]\n')
    assert keyed_errors(tmp_path) == [
        (
            "[tool.gradgen].specs",
            "`specs` entries must be non-empty strings, not a string ('')",
        ),
        (
            "[tool.gradgen].specs",
            "`specs` entries must be non-empty strings, not an integer (1)",
        ),
    ]


def test_override_that_is_not_a_table(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool.gradgen]\nspecs = ["examples/mlp.yaml"]\n\n'
        '[tool.gradgen.overrides]\n"examples/mlp.yaml" = "mlp_v2"\n',
    )
    [(key, message)] = keyed_errors(tmp_path)
    assert message.startswith("override for `examples/mlp.yaml` must be a table")
    assert key == '[tool.gradgen.overrides]."examples/mlp.yaml"'


def test_overrides_that_is_not_a_table(tmp_path: Path) -> None:
    project(tmp_path, '[tool.gradgen]\nspecs = []\noverrides = ["x"]\n')
    [(key, message)] = keyed_errors(tmp_path)
    assert key == "[tool.gradgen].overrides"
    assert message.endswith("not an array")


def test_bad_override_values(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool.gradgen.overrides."a.yaml"]\nname = "class"\nout = 3\n\n'
        '[tool.gradgen.overrides."b.yaml"]\nname = "my-module"\n',
    )
    assert keyed_errors(tmp_path) == [
        (
            '[tool.gradgen.overrides."a.yaml"].name',
            "`name` must be a valid Python module name, not a string ('class')",
        ),
        (
            '[tool.gradgen.overrides."a.yaml"].out',
            "`out` must be a non-empty path string, not an integer (3)",
        ),
        (
            '[tool.gradgen.overrides."b.yaml"].name',
            "`name` must be a valid Python module name, not a string ('my-module')",
        ),
    ]


def test_two_overrides_for_the_same_spec(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool.gradgen.overrides."a.yaml"]\nname = "a"\n'
        '[tool.gradgen.overrides."./a.yaml"]\nname = "b"\n',
    )
    [(key, message)] = keyed_errors(tmp_path)
    assert message.startswith("overrides `a.yaml` and `./a.yaml` name the same spec")
    assert key == '[tool.gradgen.overrides]."./a.yaml"'


def test_gradgen_not_a_table(tmp_path: Path) -> None:
    project(tmp_path, '[project]\nname = "x"\n[tool]\ngradgen = "yes"\n')
    assert keyed_errors(tmp_path) == [
        ("[tool].gradgen", "`tool.gradgen` must be a table")
    ]


def test_all_errors_reported_together(tmp_path: Path) -> None:
    pyproject = project(
        tmp_path,
        '[tool.gradgen]\nspec = ["a"]\nout = 1\n'
        '[tool.gradgen.overrides."a.yaml"]\nnam = "x"\n',
    )
    with pytest.raises(SpecError) as info:
        load_config(tmp_path)
    where = pyproject.resolve()
    assert str(info.value).splitlines() == [
        f"{where}:[tool.gradgen].out: error: `out` must be a non-empty path string,"
        " not an integer (1)",
        f'{where}:[tool.gradgen.overrides."a.yaml"].nam: error: unknown key `nam`'
        " in override for `a.yaml` (did you mean `name`?)",
        f"{where}:[tool.gradgen].spec: error: unknown key `spec` in [tool.gradgen]"
        " (did you mean `specs`?)",
    ]


def test_error_in_inline_table_names_the_key(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool]\ngradgen.specs = ["a.yaml"]\n'
        'gradgen.overrides."a.yaml" = { out = "o", nmae = "a2" }\n',
    )
    [(key, message)] = keyed_errors(tmp_path)
    assert message.startswith("unknown key `nmae` in override for `a.yaml`")
    assert key == '[tool.gradgen.overrides."a.yaml"].nmae'


def test_keys_that_need_quotes_are_quoted() -> None:
    location = KeyLocation("p", keys=("tool", "gradgen", "overrides", 'a "b".yaml'))
    assert location.key_path == r'[tool.gradgen.overrides]."a \"b\".yaml"'
    assert KeyLocation("p", keys=("tool", "gradgen", "out-dir")).key_path == (
        "[tool.gradgen].out-dir"
    )
