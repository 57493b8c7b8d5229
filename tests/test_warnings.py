"""Warnings: located like errors, printed to stderr, never a traceback; `--strict`
(or `strict = true` in [tool.gradgen]) makes them errors.

Each `tests/warn_specs/<name>.yaml` generates fine but warns; `<name>.expected` is
the exact stderr of `gradgen generate tests/warn_specs/<name>.yaml` run from the
repository root (`path:line:col: warning: message` lines). Without `--strict` the
CLI exits 0 and writes the module; with it, the same lines are errors, each ending
in ` [strict]`, exit 2, and nothing is written. A spec with an empty snapshot is
one that must not warn (a near miss of a warning), with or without `--strict`.
Refresh the snapshots with

    GRADGEN_UPDATE_SNAPSHOTS=1 pytest tests/test_warnings.py

and review them by eye (`git diff tests/warn_specs`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gradgen.cli import Reporter, app
from gradgen.errors import Diagnostic, Location, strict
from gradgen.load import load_yaml_text, read_spec_bytes
from gradgen.model import build
from gradgen.shapes import crossed
from gradgen.spec import validate

ROOT = Path(__file__).resolve().parent.parent
WARN = ROOT / "tests" / "warn_specs"
SPECS = sorted(WARN.glob("*.yaml"))
UPDATE = os.environ.get("GRADGEN_UPDATE_SNAPSHOTS") == "1"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOOD = sorted((ROOT / "tests" / "bad_specs" / "good").glob("*.yaml"))


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def relative(spec: Path) -> str:
    return spec.relative_to(ROOT).as_posix()


def warnings_of(text: str, path: str = "s.yaml") -> list[str]:
    """The formatted warnings of a spec given as text."""
    checked = validate(load_yaml_text(text.encode(), path), path, "s", None)
    return [w.format() for w in build(checked).warnings]


def spec(define: str, inputs: str = "X: [N, n]\n  y: [N]\n  col: [N, 1]") -> str:
    return (
        f"gradgen: 1\ninputs:\n  {inputs}\nparams:\n  w: [n]\n"
        f"define:\n  e: {define}\nloss: sum(e) + sum(X @ w) + sum(y) + sum(col)\n"
    )


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("NO_COLOR", raising=False)


# --- the snapshots ------------------------------------------------------------------


def test_each_warning_has_a_snapshot() -> None:
    texts = "".join(s.with_suffix(".expected").read_text() for s in SPECS if not UPDATE)
    for kind in ("broadcasts", "param `", "input `", "(its gradient is always zero)"):
        assert kind in texts or UPDATE, kind


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_warning_snapshot(spec_path: Path, tmp_path: Path, at_root: None) -> None:
    out = tmp_path / "out"
    result = cli("generate", relative(spec_path), "--out", out, "--no-explain")
    expected = spec_path.with_suffix(".expected")
    if UPDATE:
        expected.write_text(result.stderr, encoding="utf-8")
    assert result.exit_code == 0, result.output
    assert result.stderr == expected.read_text(encoding="utf-8")
    for line in result.stderr.splitlines():  # compiler-style, pointing into the spec
        _, line_no, col, rest = line.split(":", 3)
        assert line.startswith(f"{relative(spec_path)}:"), line
        assert int(line_no) >= 1 and int(col) >= 1
        assert rest.startswith(" warning: ")
    [written] = out.iterdir()
    assert result.stdout == f"wrote {written}\n"


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_strict_makes_warnings_errors(
    spec_path: Path, tmp_path: Path, at_root: None
) -> None:
    out = tmp_path / "out"
    result = cli(
        "generate", "--strict", relative(spec_path), "--out", out, "--no-explain"
    )
    warned = spec_path.with_suffix(".expected").read_text(encoding="utf-8")
    as_errors = "".join(
        line.replace(": warning: ", ": error: ", 1) + " [strict]\n"
        for line in warned.splitlines()
    )
    assert "Traceback" not in result.output
    if not warned:  # a spec that must not warn: --strict changes nothing
        assert (result.exit_code, result.stderr) == (0, "")
        assert len(list(out.iterdir())) == 1
        return
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == as_errors
    assert not out.exists()


def test_most_snapshots_warn() -> None:
    """The near misses are the exception: most warn_specs show a warning."""
    empty = [s for s in SPECS if not s.with_suffix(".expected").read_text()]
    assert [s.stem for s in empty] == ["pairwise_new_axes"] or UPDATE


# --- the CLI ------------------------------------------------------------------------


PYPROJECT = '[tool.gradgen]\nspecs = ["specs"]\nout = "gen"\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with one spec that warns and one that does not."""
    root = tmp_path / "proj"
    (root / "specs").mkdir(parents=True)
    (root / "specs" / "col.yaml").write_bytes((WARN / "column_param.yaml").read_bytes())
    (root / "specs" / "relu.yaml").write_bytes(
        (ROOT / "examples" / "relu_neuron.yaml").read_bytes()
    )
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.setenv("NO_COLOR", "1")
    return root


WARNING = "specs/col.yaml:11:19: warning: `-` broadcasts [N, 1] and [N] to [N, N]"


def test_generate_prints_warnings_before_wrote_and_writes(project: Path) -> None:
    result = cli("generate")
    assert result.exit_code == 0
    assert result.stderr.startswith(WARNING) and result.stderr.count("\n") == 1
    assert result.stdout == "wrote gen/col.py\nwrote gen/relu_neuron.py\n"
    quiet = cli("generate", "-q")  # a warning is a problem: -q still prints it
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", result.stderr)


def test_strict_writes_nothing_for_the_spec_that_warns(project: Path) -> None:
    result = cli("generate", "--strict")
    assert result.exit_code == 2
    assert result.stderr.startswith(WARNING.replace("warning:", "error:"))
    assert result.stderr.endswith(" [strict]\n")
    assert sorted(p.name for p in (project / "gen").iterdir()) == ["relu_neuron.py"]


def test_strict_in_the_config(project: Path) -> None:
    (project / "pyproject.toml").write_text(PYPROJECT + "strict = true\n")
    assert cli("generate").exit_code == 2
    assert not (project / "gen" / "col.py").exists()
    (project / "pyproject.toml").write_text(PYPROJECT + 'strict = "yes"\n')
    bad = cli("generate")
    assert bad.exit_code == 2
    assert bad.stderr.endswith(
        "pyproject.toml:[tool.gradgen].strict: error: `strict` must be true or"
        " false, not a string ('yes')\n"
    )


def test_check_warns_only_when_it_derives(project: Path) -> None:
    first = cli("check")  # missing modules: derived, so the warning shows
    assert first.exit_code == 1 and first.stderr.startswith(WARNING)
    assert cli("check", "--strict").exit_code == 2
    assert cli("generate").exit_code == 0
    fast = cli("check")  # up to date from the headers: nothing derived
    assert (fast.exit_code, fast.stderr) == (0, "")


def test_dump_prints_the_warnings_too(project: Path) -> None:
    result = cli("generate", "specs/col.yaml", "--dump", "spec")
    assert result.exit_code == 0 and result.stderr.startswith(WARNING)
    assert result.stdout.startswith("spec col")
    assert cli("generate", "specs/col.yaml", "--dump", "spec", "--strict").stdout == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_warning_colour_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    err = Terminal()
    report = Reporter(err=err)
    report.error(Diagnostic(Location("s.yaml", 6, 10), "odd", "warning"))
    assert "\x1b[35m" in err.getvalue()  # magenta, like a compiler's warnings
    assert report.errors == 0  # a warning does not fail the run


# --- no warning where none is due ---------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES + GOOD, ids=lambda p: p.stem)
def test_examples_do_not_warn(example: Path) -> None:
    shown = str(example)
    checked = validate(
        load_yaml_text(read_spec_bytes(example, shown), shown), shown, "x", None
    )
    assert build(checked).warnings == ()


LEGITIMATE = {
    "a bias row": "X + w",
    "a scalar": "2 * y - 1",
    "a per-row statistic": "X - mean(X, axis=1, keepdims=True)",
    "a per-column statistic": "X - mean(X, axis=0)",
    "a column against a matrix": "col * X",
    "same shapes": "y - X @ w",
    "an outer product of different dims": "col * w",
    "an explicit pairwise table": "col - col.T",
    "a new axis written with None": "y[:, None] * y",
    "a new axis on the right": "y * y[:, None]",
    "new axes on both sides": "y[:, None] - y[None, :]",
    "pairwise differences of rows": "X[:, None, :] - X",
    "pairwise differences, the last axis implicit": "X[:, None] - X[None]",
    "an RBF kernel": "exp(-square(y[:, None] - y))",
    "through element-wise functions": "-exp(y[:, None]) * y",
    "a comparison table": "where(y[:, None] < y, 1.0, 0.0)",
    "a new axis kept by an index": "X[:, None][..., 0] - y",
    "a column with itself": "col * col",
    "a row statistic with keepdims and a column": "sum(X, axis=1, keepdims=True) - col",
}


@pytest.mark.parametrize("expression", LEGITIMATE.values(), ids=LEGITIMATE.keys())
def test_legitimate_broadcasts_do_not_warn(expression: str) -> None:
    assert warnings_of(spec(expression)) == []


BUGS = {
    "a column minus a vector": ("col - y", "`-`", 9, 10),
    "a vector times a column": ("y * col", "`*`", 9, 8),
    "keepdims then a vector": ("sum(X, axis=1, keepdims=True) / y", "`/`", 9, 36),
    "a comparison": ("where(col > y, 1.0, 0.0)", "`>`", 9, 16),
    "a chained comparison": ("where(0 < col < y, 1.0, 0.0)", "`<`", 9, 20),
    "max of two": ("max(col, y)", "`max`", 9, 6),
    "a condition &": ("where((col > 0) & (y > 0), 1.0, 0.0)", "`&`", 9, 22),
    "a power": ("col ** y", "`**`", 9, 10),
    "a scalar does not hide it": ("2 * y + col", "`+`", 9, 12),
    "a keepdims statistic of a new axis": (
        "mean(y[:, None], axis=1, keepdims=True) - y",
        "`-`",
        9,
        46,
    ),
}


@pytest.mark.parametrize("case", BUGS.values(), ids=BUGS.keys())
def test_a_dim_paired_with_itself_warns_at_the_operator(
    case: tuple[str, str, int, int],
) -> None:
    expression, operator, line, col = case
    [warning] = warnings_of(spec(expression))
    assert warning.startswith(f"s.yaml:{line}:{col}: warning: {operator} broadcasts ")
    assert "to [N, N], pairing each of the N entries" in warning


def test_a_new_axis_elsewhere_does_not_hide_a_column() -> None:
    """`col[None]` is [1, N, 1]: its written axis is not the 1 that meets y's N."""
    [warning] = warnings_of(spec("col[None] - y"))
    assert "broadcasts [1, N, 1] and [N] to [1, N, N]" in warning


def test_crossed() -> None:
    assert crossed(("N", 1), ("N",)) == "N"
    assert crossed((3,), (3, 1)) == 3
    assert crossed(("N", 1), ("k",)) is None  # an outer product of different dims
    assert crossed(("N", 1), (1, "N")) is None  # explicit on both sides
    assert crossed(("N", "h"), ("h",)) is None
    assert crossed((), ("N", "N")) is None
    assert crossed((1,), ("N", 1)) is None
    # a 1 written with None (`d[:, None] * d`, `X[:, None, :] - X`) is deliberate
    assert crossed(("N", 1), ("N",), frozenset({-1})) is None
    assert crossed(("N",), ("N", 1), new_b=frozenset({-1})) is None
    assert crossed(("N", 1, "d"), ("N", "d"), frozenset({-2})) is None
    # ... where it is the 1 that meets the other operand's dim, not elsewhere
    assert crossed((1, "N", 1), ("N",), frozenset({-3})) == "N"


def test_unused_params_and_inputs() -> None:
    text = (
        "gradgen: 1\ninputs:\n  X: [N, n]\n  z: [n]\n  batch: [B]\nparams:\n"
        "  w: [n]\n  v: []\noutputs:\n  o: X @ w\nloss: sum(w**2) / B\n"
    )
    assert warnings_of(text) == [
        "s.yaml:4:3: warning: input `z` is not used by the loss or any output",
        "s.yaml:8:3: warning: param `v` is not used by the loss or any output"
        " (its gradient is always zero)",
    ]  # `batch` gives the loss its dim B; `X` is used by the output only


def test_a_spec_with_errors_reports_no_warnings(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(spec("col - y").replace("sum(e)", "sum(e) + nope"))
    result = cli("generate", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "warning" not in result.stderr and "undefined name `nope`" in result.stderr


def test_strict_turns_only_warnings_into_errors() -> None:
    error = Diagnostic(Location("a.yaml"), "bad")
    warning = Diagnostic(Location("a.yaml", 2), "odd", "warning")
    assert strict([error, warning]) == [
        Diagnostic(Location("a.yaml", 2), "odd [strict]")
    ]
    assert error.format() == "a.yaml:1:1: error: bad"
    assert warning.format() == "a.yaml:2:1: warning: odd"
