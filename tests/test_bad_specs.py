"""Every bad spec in tests/bad_specs/ gets exactly its snapshotted, located errors.

Each `tests/bad_specs/<name>.yaml` sits next to `<name>.expected`, the exact stderr
of `gradgen generate tests/bad_specs/<name>.yaml` run from the repository root:
`path:line:col: error: message` lines. The CLI must exit 2, print no traceback and
write nothing. To refresh the snapshots after changing a message on purpose, run

    GRADGEN_UPDATE_SNAPSHOTS=1 pytest tests/test_bad_specs.py

and review every changed `.expected` file by eye (`git diff tests/bad_specs`): each
message must name the file, line and column of the offending character and say
what is wrong precisely.

`tests/bad_specs/good/` holds hostile specs that are valid: they must generate a
module that imports without running anything but its definitions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import import_file
from typer.testing import CliRunner

from gradgen.cli import app

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "bad_specs"
GOOD = BAD / "good"
SPECS = sorted(BAD.glob("*.yaml"))
UPDATE = os.environ.get("GRADGEN_UPDATE_SNAPSHOTS") == "1"

#: One spec per failure the issue lists; each must have a snapshot.
REQUIRED = {
    "yaml_syntax",
    "duplicate_key",
    "unknown_key",
    "params_not_mapping",
    "missing_version",
    "unsupported_version",
    "negative_dim",
    "float_dim",
    "shape_not_list",
    "name_not_identifier",
    "name_keyword",
    "name_clashes_generated",
    "name_clashes_builtin",
    "name_clashes_stdlib_module",
    "module_name_path_traversal",
    "undefined_name",
    "unknown_function",
    "wrong_arg_count",
    "shape_mismatch",
    "matmul_mismatch",
    "nonscalar_loss",
    "forward_reference",
    "cycle",
    "nothing_to_differentiate",
    "loss_independent_of_params",
    "unknown_optimizer",
    "negative_lr",
    "beta_out_of_range",
    "several_errors",
    "attribute_access",
    "subscript",
    "lambda_expression",
    "comprehension",
    "string_literal",
    "keyword_argument",
    "dunder_import",
    "huge_exponent",
    "huge_power",
    "deep_nesting",
    "long_expression",
    "billion_laughs",
    "empty",
    "binary_garbage",
    "block_scalar_expression",
}


def relative(spec: Path) -> str:
    return spec.relative_to(ROOT).as_posix()


def run_cli(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_every_listed_failure_has_a_spec_and_a_snapshot() -> None:
    present = {p.stem for p in SPECS}
    assert REQUIRED <= present, sorted(REQUIRED - present)
    for spec in SPECS:
        assert spec.with_suffix(".expected").is_file() or UPDATE, spec


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_bad_spec(spec: Path, tmp_path: Path, at_root: None) -> None:
    out = tmp_path / "out"
    before = tree(tmp_path)
    started = time.perf_counter()
    code, stdout, stderr = run_cli(["generate", relative(spec), "--out", str(out)])
    elapsed = time.perf_counter() - started
    expected = spec.with_suffix(".expected")
    if UPDATE:
        expected.write_text(stderr, encoding="utf-8")
    assert "Traceback" not in stdout + stderr
    assert code == 2, stdout + stderr
    assert stderr == expected.read_text(encoding="utf-8")
    assert stdout == ""
    for line in stderr.splitlines():  # compiler-style, pointing into this file
        assert line.startswith(f"{relative(spec)}:"), line
        _, line_no, col, rest = line.split(":", 3)
        assert int(line_no) >= 1 and int(col) >= 1
        assert rest.startswith(" error: ")
    assert tree(tmp_path) == before  # nothing written, not even the out folder
    assert elapsed < 5, f"{spec.name} took {elapsed:.1f} s"


@pytest.mark.slow  # a process of its own; test_bad_spec checks each message in-process
def test_all_bad_specs_in_one_real_process(tmp_path: Path) -> None:
    """The installed entry point, as a build pipeline runs it: one process, every
    bad spec (a folder argument), every message, exit 2, nothing written."""
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradgen",
            "generate",
            "tests/bad_specs",
            "-o",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    expected = "".join(
        s.with_suffix(".expected").read_text(encoding="utf-8") for s in SPECS
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2
    assert result.stderr == expected
    assert not out.exists()


def test_path_traversal_writes_nothing_anywhere(tmp_path: Path, at_root: None) -> None:
    """`name: ../../x` (and an absolute path) are refused; the folders around the
    output folder are left as they were."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    before = tree(tmp_path)
    for stem in ("module_name_path_traversal", "module_name_absolute_path"):
        spec = relative(BAD / f"{stem}.yaml")
        code, _, stderr = run_cli(["generate", spec, "--out", str(work / "out")])
        assert code == 2 and "is not a Python identifier" in stderr
    assert tree(tmp_path) == before
    assert not Path("/tmp/evil.py").exists()


def test_oversized_spec_is_refused_quickly(tmp_path: Path, at_root: None) -> None:
    """An enormous YAML file is refused by its size, before any parsing."""
    spec = tmp_path / "huge.yaml"
    spec.write_text("gradgen: 1\n" + "# padding\n" * 100_000)
    started = time.perf_counter()
    code, _, stderr = run_cli(["generate", str(spec), "--out", str(tmp_path / "o")])
    assert time.perf_counter() - started < 5
    assert code == 2
    assert stderr.endswith(": error: the spec is 1000011 bytes; the limit is 262144\n")


# ------------------------------------------------------------------ good hostile


def test_doc_injection_generates_an_inert_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quotes, backslashes, escapes and template syntax in `doc` and in expression
    comments end up as text in the docstring; importing the module runs nothing
    but its definitions."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    spec = GOOD / "doc_injection.yaml"
    code, stdout, stderr = run_cli(["generate", relative(spec), "--out", str(out)])
    assert (code, stderr) == (0, ""), stdout + stderr
    # this repository's [tool.gradgen] asks for explanations: the .md comes too
    written = ["out", "out/doc_injection.md", "out/doc_injection.py"]
    assert tree(tmp_path) == written
    monkeypatch.chdir(tmp_path)  # anything the import might write would land here
    module = import_file(out / "doc_injection.py", "doc_injection_module")
    assert tree(tmp_path) == written
    doc = module.__doc__
    assert isinstance(doc, str)
    for text in (
        'Ends the docstring early: """ then runs code:',
        '__import__("pathlib").Path("PWNED").write_text("x")',
        "a raw backslash \\\n",
        "\\N{BULLET} \\x41 \\u0041 \\' \\\" \\\\ \\0",
        "{{ version }} {% if x %} {# c #}",
        "漢字 🙂",
        '# """; __import__("os").system("touch PWNED"); """',
    ):
        assert text in doc
    public = sorted(n for n in vars(module) if not n.startswith("__"))
    assert public == [
        "Gradients",
        "NamedTuple",
        "Params",
        "State",
        "gradients",
        "init_state",
        "loss",
        "loss_and_gradient_flat",
        "loss_and_gradients",
        "np",
        "pack",
        "step",
        "unpack",
    ]
    x, w = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    assert np.allclose(module.gradients(x, w).w, 2 * x * x * w)
