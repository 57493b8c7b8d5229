"""End-to-end tests of the command line, in temporary git-less project folders.

Most drive the real CLI in-process with Typer's CliRunner; a few run the installed
`gradgen` script (and `python -m gradgen`) in a subprocess. Every test works in its
own `tmp_path` on copies of the example specs and never writes into the repository.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gradgen import __version__, pipeline, plan, write
from gradgen.cli import Reporter, app
from gradgen.errors import Diagnostic, Location
from gradgen.stages import Stage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PYPROJECT = (
    '[project]\nname = "demo"\n\n[tool.gradgen]\nspecs = ["specs"]\nout = "gen"\n'
)
ESC = "\x1b["


def gradgen(*args: str | Path) -> Result:
    """Run the CLI in-process (stdout and stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def installed_gradgen() -> str:
    """The `gradgen` console script installed alongside this interpreter."""
    name = "gradgen.exe" if os.name == "nt" else "gradgen"
    script = Path(sysconfig.get_path("scripts")) / name
    found = str(script) if script.is_file() else shutil.which("gradgen")
    if found is None:
        pytest.fail("the gradgen script is not installed: pip install -e '.[test]'")
    return found


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with two specs in specs/ and [tool.gradgen] writing to gen/."""
    root = tmp_path / "proj"
    (root / "specs").mkdir(parents=True)
    for name in ("relu_neuron", "linear_regression"):
        shutil.copy(EXAMPLES / f"{name}.yaml", root / "specs")
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_bytes().decode("utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_bytes(text.replace(old, new, 1).encode("utf-8"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- the workflow ----------------------------------------------------------------


def test_generate_edit_check_regenerate(project: Path) -> None:
    first = gradgen("generate")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "wrote gen/linear_regression.py",
        "wrote gen/relu_neuron.py",
    ]
    assert first.stderr == ""
    assert ESC not in first.output  # not a terminal: no colour

    clean = gradgen("check")
    assert (clean.exit_code, clean.output) == (0, "")

    spec = project / "specs" / "relu_neuron.yaml"
    edit(spec, "lr: 0.01", "lr: 0.02")
    stale = gradgen("check")
    assert stale.exit_code == 1
    assert stale.stdout.splitlines() == [
        "would change gen/relu_neuron.py",
        "1 module would change; run `gradgen generate`",
    ]
    with_diff = gradgen("check", "--diff")
    assert with_diff.exit_code == 1
    lines = with_diff.stdout.splitlines()
    assert "--- a/gen/relu_neuron.py" in lines
    assert "+++ b/gen/relu_neuron.py" in lines
    assert "-    optimizer: sgd (lr=0.01)" in lines
    assert "+    optimizer: sgd (lr=0.02)" in lines
    assert not any("linear_regression" in line for line in lines)
    assert (project / "gen" / "relu_neuron.py").read_text().count("lr=0.01") >= 1

    regenerated = gradgen("generate")
    assert (regenerated.exit_code, regenerated.stdout) == (
        0,
        "wrote gen/relu_neuron.py\n",
    )
    assert "lr: float = 0.02" in (project / "gen" / "relu_neuron.py").read_text()
    verbose = gradgen("generate", "-v")
    assert verbose.stdout.splitlines() == [
        "unchanged gen/linear_regression.py",
        "unchanged gen/relu_neuron.py",
    ]
    assert gradgen("check").exit_code == 0
    assert gradgen("check", "-v").stdout.splitlines() == [
        "up to date gen/linear_regression.py",
        "up to date gen/relu_neuron.py",
    ]


def test_hand_edit_is_detected_and_repaired(project: Path) -> None:
    assert gradgen("generate").exit_code == 0
    module = project / "gen" / "linear_regression.py"
    good = module.read_bytes()
    edit(module, "import numpy as np", "import numpy as np  # tweaked")
    result = gradgen("check", "--diff")
    assert result.exit_code == 1
    assert "would change gen/linear_regression.py (edited by hand)" in result.stdout
    assert "-import numpy as np  # tweaked" in result.stdout.splitlines()
    assert gradgen("generate").stdout == "wrote gen/linear_regression.py\n"
    assert module.read_bytes() == good


def test_crlf_checkout_is_stale(project: Path) -> None:
    assert gradgen("generate").exit_code == 0
    module = project / "gen" / "relu_neuron.py"
    good = module.read_bytes()
    module.write_bytes(good.replace(b"\n", b"\r\n"))
    result = gradgen("check", "--diff")
    assert result.exit_code == 1
    assert "(edited by hand)" in result.stdout
    assert gradgen("generate").exit_code == 0
    assert module.read_bytes() == good


def test_missing_module(project: Path) -> None:
    assert gradgen("generate").exit_code == 0
    (project / "gen" / "relu_neuron.py").unlink()
    result = gradgen("check", "--diff")
    assert result.exit_code == 1
    assert "missing gen/relu_neuron.py (from specs/relu_neuron.yaml)" in result.stdout
    assert "@@ -0,0 +1," in result.stdout


def test_spec_whose_module_name_differs_from_its_stem_uses_the_fast_path(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "specs" / "relu_neuron.yaml").rename(project / "specs" / "neuron.yaml")
    shutil.copy(EXAMPLES / "total_derivative.yaml", project / "specs")  # no `name:`
    assert gradgen("generate").exit_code == 0
    assert sorted(p.name for p in (project / "gen").iterdir()) == [
        "linear_regression.py",
        "relu_neuron.py",
        "total_derivative.py",
    ]

    def no_deriving(*args: object, **kwargs: object) -> None:
        raise AssertionError("derived although the headers prove it up to date")

    monkeypatch.setattr(pipeline, "generate", no_deriving)
    result = gradgen("check", "-v")
    assert result.exit_code == 0, result.output
    assert "up to date gen/relu_neuron.py" in result.stdout


def test_fast_path_notices_a_moved_spec(project: Path) -> None:
    """Same bytes and name, but the header's `spec:` path is no longer right."""
    assert gradgen("generate").exit_code == 0
    (project / "more").mkdir()
    (project / "specs" / "relu_neuron.yaml").rename(
        project / "more" / "relu_neuron.yaml"
    )
    result = gradgen("check", "specs", "more")
    assert result.exit_code == 1
    assert "would change gen/relu_neuron.py" in result.stdout


def test_version_change_falls_back_to_deriving(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gradgen("generate").exit_code == 0
    monkeypatch.setattr(plan, "__version__", "9.9.9")
    calls: list[Path] = []
    real = pipeline.generate

    def counting(spec: Path, *args: object, **kwargs: object) -> pipeline.Generated:
        calls.append(spec)
        return real(spec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "generate", counting)
    result = gradgen("check")
    assert result.exit_code == 0  # regenerated in memory: the same bytes
    assert len(calls) == 2


# --- never lose a user's file ---------------------------------------------------------


def test_foreign_file_is_left_untouched(project: Path) -> None:
    (project / "gen").mkdir()
    precious = project / "gen" / "relu_neuron.py"
    precious.write_text("# hand-written, precious\n")
    result = gradgen("generate")
    assert result.exit_code == 2
    assert result.stderr == (
        "gen/relu_neuron.py:1:1: error: this file was not generated by gradgen;"
        " left untouched (move it away, or pass --force)\n"
    )
    assert result.stdout == "wrote gen/linear_regression.py\n"  # the others still
    assert precious.read_text() == "# hand-written, precious\n"
    checked = gradgen("check")
    assert checked.exit_code == 2
    assert (
        "gen/relu_neuron.py:1:1: error: this file was not generated" in checked.stderr
    )
    assert precious.read_text() == "# hand-written, precious\n"

    forced = gradgen("generate", "--force")
    assert (forced.exit_code, forced.stdout) == (0, "wrote gen/relu_neuron.py\n")
    assert write.is_generated(precious.read_text())


def test_folder_in_the_way_is_refused_even_with_force(project: Path) -> None:
    (project / "gen" / "relu_neuron.py").mkdir(parents=True)
    result = gradgen("generate", "--force")
    assert result.exit_code == 2
    assert "gen/relu_neuron.py:1:1: error: this file was not generated" in result.stderr
    assert "--force" not in result.stderr
    assert (project / "gen" / "relu_neuron.py").is_dir()


def test_bad_specs_write_nothing_for_them_and_the_others_still(project: Path) -> None:
    (project / "specs" / "bad.yaml").write_text(
        "gradgen: 1\nparams: {w: [3]}\nloss: sum(w * q)\n"
    )
    (project / "specs" / "worse.yaml").write_text(
        "gradgen: 1\nparams: {w: [3]}\nfoo: 1\n"
    )
    result = gradgen("generate")
    assert result.exit_code == 2
    errors = [line.partition(": error: ") for line in result.stderr.splitlines()]
    assert [(where, sep) for where, sep, _ in errors] == [  # all, in a fixed order
        ("specs/bad.yaml:3:15", ": error: "),
        ("specs/worse.yaml:1:1", ": error: "),
        ("specs/worse.yaml:3:1", ": error: "),
    ]
    assert "`q`" in errors[0][2] and "`foo`" in errors[2][2]
    assert sorted(snapshot(project / "gen")) == [
        "linear_regression.py",
        "relu_neuron.py",
    ]
    checked = gradgen("check")
    assert checked.exit_code == 2
    assert checked.stderr == result.stderr


def test_fail_fast_writes_nothing(project: Path) -> None:
    (project / "specs" / "a_bad.yaml").write_text("gradgen: 1\nparams: 3\n")
    result = gradgen("generate", "--fail-fast")
    assert result.exit_code == 2
    assert result.stderr.startswith("specs/a_bad.yaml:")
    assert not (project / "gen").exists()


def test_two_specs_writing_the_same_module_write_nothing(project: Path) -> None:
    shutil.copy(project / "specs" / "relu_neuron.yaml", project / "specs" / "copy.yaml")
    result = gradgen("generate")
    assert result.exit_code == 2
    assert result.stderr == (
        "specs/relu_neuron.yaml:1:1: error: module `relu_neuron` would overwrite the"
        " one generated from specs/copy.yaml (gen/relu_neuron.py); give one of them"
        " another `name:`\n"
    )
    assert not (project / "gen").exists()
    assert gradgen("check").exit_code == 2


def test_clash_is_found_by_check_when_one_module_is_up_to_date(project: Path) -> None:
    assert gradgen("generate").exit_code == 0
    shutil.copy(project / "specs" / "relu_neuron.yaml", project / "specs" / "copy.yaml")
    before = snapshot(project / "gen")
    assert gradgen("check").exit_code == 2
    assert gradgen("generate").exit_code == 2
    assert snapshot(project / "gen") == before


def test_interrupted_run_leaves_each_file_old_or_new(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gradgen("generate").exit_code == 0
    old = snapshot(project / "gen")
    edit(project / "specs" / "relu_neuron.yaml", "lr: 0.01", "lr: 0.02")
    edit(project / "specs" / "linear_regression.yaml", "lr: 0.05", "lr: 0.07")
    real = write.atomic_write
    writes: list[Path] = []

    def interrupted_second_write(path: Path, text: str) -> None:
        if writes:
            raise KeyboardInterrupt
        writes.append(path)
        real(path, text)

    monkeypatch.setattr(write, "atomic_write", interrupted_second_write)
    result = gradgen("generate")
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert "Traceback" not in result.output
    new = snapshot(project / "gen")
    assert sorted(new) == sorted(old)  # no temporary files left behind
    assert new["linear_regression.py"] != old["linear_regression.py"]  # new
    assert new["relu_neuron.py"] == old["relu_neuron.py"]  # old
    monkeypatch.setattr(write, "atomic_write", real)
    assert gradgen("check").exit_code == 1


def test_internal_error_is_reported_without_traceback(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "generate", broken)
    result = gradgen("generate")
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "gradgen: internal error while processing specs/linear_regression.yaml:"
        " RuntimeError: boom\n"
    )
    assert "Traceback" not in result.output
    assert not (project / "gen").exists()


# --- configuration --------------------------------------------------------------


def test_config_is_found_from_a_subfolder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    result = gradgen("generate")
    assert result.exit_code == 0, result.output
    gen = (project / "gen").resolve()
    assert sorted(snapshot(gen)) == ["linear_regression.py", "relu_neuron.py"]
    assert result.stdout.splitlines() == [
        f"wrote {gen / 'linear_regression.py'}",
        f"wrote {gen / 'relu_neuron.py'}",
    ]
    assert not (deep / "generated").exists()
    assert gradgen("check").exit_code == 0
    monkeypatch.chdir(project)
    assert gradgen("check").exit_code == 0


def test_arguments_win_over_the_config(project: Path) -> None:
    result = gradgen("generate", "specs/relu_neuron.yaml", "--out", "elsewhere")
    assert result.exit_code == 0, result.output
    assert result.stdout == "wrote elsewhere/relu_neuron.py\n"
    assert not (project / "gen").exists()
    header = write.read_header((project / "elsewhere" / "relu_neuron.py").read_text())
    assert header is not None and header.spec == "../specs/relu_neuron.yaml"
    assert gradgen("check", "specs/relu_neuron.yaml", "-o", "elsewhere").exit_code == 0
    assert gradgen("check").exit_code == 1  # the project as configured: missing


def test_per_spec_overrides(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "pyproject.toml").write_text(
        PYPROJECT + '\n[tool.gradgen.overrides."specs/relu_neuron.yaml"]\n'
        'name = "neuron_v2"\nout = "gen/nets"\n',
        encoding="utf-8",
    )
    result = gradgen("generate")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "wrote gen/linear_regression.py",
        "wrote gen/nets/neuron_v2.py",
    ]
    module = project / "gen" / "nets" / "neuron_v2.py"
    header = write.read_header(module.read_text())
    assert header is not None
    assert header.spec == "../../specs/relu_neuron.yaml"
    spec_bytes = (project / "specs" / "relu_neuron.yaml").read_bytes()
    assert header.spec_sha256 == write.spec_digest(spec_bytes, "neuron_v2")

    def no_deriving(*args: object, **kwargs: object) -> None:
        raise AssertionError("derived although the headers prove it up to date")

    monkeypatch.setattr(pipeline, "generate", no_deriving)
    assert gradgen("check").exit_code == 0
    # The override applies to a spec named on the command line too, from anywhere.
    monkeypatch.chdir(project.parent)
    assert gradgen("check", project / "specs" / "relu_neuron.yaml").exit_code == 0


def test_bad_config_exits_2(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["specs"]\nouts = 1\n'
    )
    result = gradgen("check")
    assert result.exit_code == 2
    assert result.stderr == (
        f"{(project / 'pyproject.toml').resolve()}:[tool.gradgen].outs: error:"
        " unknown key `outs`"
        " in [tool.gradgen] (did you mean `out`?)\n"
    )


# --- usage ----------------------------------------------------------------------


def test_usage_errors_exit_2(project: Path) -> None:
    assert gradgen("check", "--bogus").exit_code == 2
    assert gradgen().exit_code == 2  # no command: help, as a usage error
    dump = gradgen("generate", "--dump", "nope")
    assert dump.exit_code == 2
    choices = ", ".join(f"'{stage.value}'" for stage in Stage)
    assert "Invalid value for '--dump'" in dump.stderr
    assert f"'nope' is not one of {choices}." in dump.stderr
    missing = gradgen("check", "specs/nope.yaml")
    assert (missing.exit_code, missing.stderr) == (
        2,
        "specs/nope.yaml:1:1: error: no such file\n",
    )
    (project / "empty").mkdir()
    empty = gradgen("generate", "empty")
    assert empty.exit_code == 2
    assert "empty:1:1: error: a folder with no spec files" in empty.stderr


def test_no_specs_and_no_config(project: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    for command in ("check", "generate"):
        result = gradgen(command)
        assert result.exit_code == 2
        assert result.stderr == (
            "gradgen: error: no specs given, and no `specs` in [tool.gradgen]"
            " of a pyproject.toml\n"
        )


def test_version() -> None:
    result = gradgen("--version")
    assert (result.exit_code, result.stdout) == (0, f"gradgen {__version__}\n")


def test_order_of_arguments_does_not_matter(project: Path) -> None:
    a = gradgen("check", "-v", "specs/relu_neuron.yaml", "specs/linear_regression.yaml")
    b = gradgen("check", "-v", "specs/linear_regression.yaml", "specs", "./specs/")
    assert a.exit_code == b.exit_code == 1
    assert a.stdout == b.stdout
    assert a.stdout.count("missing") == 2


def test_dump_prints_a_stage_and_writes_nothing(project: Path) -> None:
    result = gradgen("generate", "--dump", "spec", "specs/relu_neuron.yaml")
    assert result.exit_code == 0, result.output
    assert "relu_neuron" in result.stdout
    assert not (project / "gen").exists()
    module = gradgen("generate", "-q", "--dump", "module", "specs/relu_neuron.yaml")
    assert write.body_intact(module.stdout)


def test_dump_offers_each_stage_the_pipeline_dumps(project: Path) -> None:
    """--dump's choices are the `Stage` enum, and the pipeline honours every one
    (a stage it ignored would print the same text as another)."""
    help_text = " ".join(gradgen("generate", "--help").stdout.split())
    assert (
        f"--dump <stage> Print one stage's result instead of writing: {', '.join(Stage)}."
        in help_text
    )
    dumps = {}
    for stage in Stage:
        result = gradgen("generate", "--dump", stage, "specs/relu_neuron.yaml")
        assert (result.exit_code, result.stderr) == (0, ""), stage
        dumps[stage] = result.stdout
    assert len(set(dumps.values())) == len(Stage)


# --- quiet, verbose, colour ------------------------------------------------------


def test_quiet_prints_only_errors(project: Path) -> None:
    (project / "specs" / "bad.yaml").write_text("gradgen: 1\nparams: 3\n")
    generated = gradgen("generate", "-q")
    assert generated.exit_code == 2
    assert generated.stdout == ""
    assert generated.stderr.startswith("specs/bad.yaml:")
    (project / "specs" / "bad.yaml").unlink()
    edit(project / "specs" / "relu_neuron.yaml", "lr: 0.01", "lr: 0.02")
    checked = gradgen("check", "-q")
    assert (checked.exit_code, checked.output) == (1, "")
    with_diff = gradgen("check", "-q", "--diff")  # a diff asked for is printed
    assert with_diff.stdout.startswith("--- a/gen/relu_neuron.py\n")
    assert gradgen("generate", "-q", "-v").output == ""  # quiet wins


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


Emit = Callable[[Reporter], None]
EMITTERS: dict[str, Emit] = {
    "line": lambda r: r.line("wrote gen/x.py", fg="green"),
    "diff": lambda r: r.diff("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"),
    "error": lambda r: r.error(Diagnostic(Location("x.yaml", 2, 3), "bad")),
    "usage": lambda r: r.usage("bad usage"),
}


@pytest.mark.parametrize("emit", EMITTERS.values(), ids=EMITTERS.keys())
def test_colour_only_on_a_terminal_and_without_no_color(
    monkeypatch: pytest.MonkeyPatch, emit: Emit
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    tty_out, tty_err = FakeTerminal(), FakeTerminal()
    emit(Reporter(out=tty_out, err=tty_err))
    assert ESC in tty_out.getvalue() + tty_err.getvalue()

    plain_out, plain_err = io.StringIO(), io.StringIO()
    emit(Reporter(out=plain_out, err=plain_err))
    plain = plain_out.getvalue() + plain_err.getvalue()
    assert plain and ESC not in plain

    monkeypatch.setenv("NO_COLOR", "1")
    out, err = FakeTerminal(), FakeTerminal()
    emit(Reporter(out=out, err=err))
    assert out.getvalue() + err.getvalue() == plain


def test_empty_no_color_does_not_disable_colour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_COLOR", "")
    assert Reporter.use_color(FakeTerminal())
    monkeypatch.setenv("NO_COLOR", "yes")
    assert not Reporter.use_color(FakeTerminal())


def test_error_format_on_a_terminal_keeps_the_text() -> None:
    err = FakeTerminal()
    Reporter(err=err).error(Diagnostic(Location("x.yaml", 2, 3), "bad thing"))
    text = err.getvalue()
    for code in ("\x1b[0m", "\x1b[1m", "\x1b[31m"):
        text = text.replace(code, "")
    assert text == "x.yaml:2:3: error: bad thing\n"


def test_cli_never_colours_a_pipe_even_if_forced_by_the_runner(project: Path) -> None:
    result = CliRunner().invoke(app, ["check", "-v"], color=True)
    assert result.exit_code == 1
    assert ESC not in result.output


# --- the installed script, in subprocesses -------------------------------------


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.slow
def test_installed_script_end_to_end(project: Path) -> None:
    """The console script: exit codes 0, 1 and 2 (the rest is tested in-process,
    and a stale spec through the pre-commit hooks)."""
    exe = installed_gradgen()
    assert gradgen("generate").exit_code == 0
    clean = run([exe, "check"], project)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")

    module = project / "gen" / "linear_regression.py"
    edit(module, "import numpy", "import  numpy")
    edited = run([exe, "check"], project)
    assert edited.returncode == 1
    assert "would change gen/linear_regression.py (edited by hand)" in edited.stdout

    module.write_text("# mine\n")
    refused = run([exe, "generate"], project)
    assert refused.returncode == 2
    assert refused.stderr.startswith("gen/linear_regression.py:1:1: error:")
    assert "Traceback" not in refused.stderr
    assert module.read_text() == "# mine\n"


_PROBE = """
import runpy, sys
sys.argv = ["gradgen", *sys.argv[1:]]
try:
    runpy.run_module("gradgen", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in ("sympy", "black", "jinja2", "gradgen.pipeline") if m in sys.modules)
print(code, ",".join(heavy) or "-", file=sys.stderr)
"""


def test_python_m_and_fast_check_import_nothing_heavy(project: Path) -> None:
    assert gradgen("generate").exit_code == 0
    version = run([sys.executable, "-m", "gradgen", "--version"], project)
    assert (version.returncode, version.stdout) == (0, f"gradgen {__version__}\n")
    probe = run([sys.executable, "-c", _PROBE, "check", "-v"], project)
    assert probe.stdout.splitlines() == [
        "up to date gen/linear_regression.py",
        "up to date gen/relu_neuron.py",
    ]
    assert probe.stderr.splitlines()[-1] == "0 -", probe.stderr


def test_a_long_spec_is_still_recognised_as_generated(project: Path) -> None:
    """The header sits right under the first docstring line, so a long doc and many
    `define` entries never push it out of the lines `write.read_header` reads."""
    doc = "\n".join(f"  line {i} of a long description." for i in range(60))
    define = "\n".join(f"  d{i}: w * {i + 1}" for i in range(60))
    spec = project / "specs" / "long.yaml"
    spec.write_text(
        f"gradgen: 1\ndoc: |\n{doc}\nparams: {{w: [n]}}\ndefine:\n{define}\n"
        "loss: sum(d59 * d0)\n",
        encoding="utf-8",
    )
    assert gradgen("generate", spec).exit_code == 0
    assert write.read_header((project / "gen" / "long.py").read_text()) is not None
    edit(spec, "sum(d59 * d0)", "sum(d59 * d1)")
    again = gradgen("generate", spec)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip() == f"wrote {Path('gen') / 'long.py'}"
