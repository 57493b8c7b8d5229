"""The hooks in .pre-commit-hooks.yaml, run the way pre-commit runs them: the
`entry` split like a shell command, plus the hook's `args`, from the project root,
with the hook environment's scripts folder first on PATH (pre-commit itself is not
needed)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOKS_FILE = ROOT / ".pre-commit-hooks.yaml"


def hooks() -> dict[str, dict[str, Any]]:
    with HOOKS_FILE.open(encoding="utf-8") as handle:
        listed = yaml.safe_load(handle)
    assert isinstance(listed, list)
    return {hook["id"]: hook for hook in listed}


def run_hook(hook: dict[str, Any], project: Path) -> subprocess.CompletedProcess[str]:
    command = shlex.split(hook["entry"]) + list(hook.get("args", []))
    scripts = sysconfig.get_path("scripts")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None, f"{command[0]} is not installed"
    return subprocess.run(
        [executable, *command[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hooks_are_declared() -> None:
    declared = hooks()
    assert set(declared) == {"gradgen-check", "gradgen"}
    assert declared["gradgen-check"]["entry"] == "gradgen check"
    assert declared["gradgen"]["entry"] == "gradgen generate"
    for hook in declared.values():
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False  # [tool.gradgen] drives the run
        assert hook["name"]
        files = re.compile(hook["files"])
        for path in ("specs/mlp.yaml", "a.yml", "generated/mlp.py", "pyproject.toml"):
            assert files.search(path), path
        for path in ("README.md", "notes.txt", "my_pyproject.toml"):
            assert not files.search(path), path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "examples" / "relu_neuron.yaml", tmp_path / "specs")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradgen]\nspecs = ["specs"]\nout = "generated"\n', encoding="utf-8"
    )
    return tmp_path


@pytest.mark.slow
def test_hooks_regenerate_and_check(project: Path) -> None:
    declared = hooks()
    check, regenerate = declared["gradgen-check"], declared["gradgen"]
    module = project / "generated" / "relu_neuron.py"

    missing = run_hook(check, project)
    assert missing.returncode == 1
    assert "missing generated/relu_neuron.py" in missing.stdout

    first = run_hook(regenerate, project)
    assert first.returncode == 0, first.stderr
    assert module.is_file()  # a changed file: pre-commit fails the commit once
    assert run_hook(check, project).returncode == 0

    spec = project / "specs" / "relu_neuron.yaml"
    spec.write_text(spec.read_text().replace("lr: 0.01", "lr: 0.03"))
    before = module.read_bytes()
    stale = run_hook(check, project)
    assert stale.returncode == 1
    assert "would change generated/relu_neuron.py" in stale.stdout
    assert module.read_bytes() == before  # checking never writes

    rewritten = run_hook(regenerate, project)
    assert (rewritten.returncode, rewritten.stdout) == (
        0,
        "wrote generated/relu_neuron.py\n",
    )
    assert module.read_bytes() != before
    clean = run_hook(check, project)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
