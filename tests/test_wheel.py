"""The wheel is what users install: built from this repo and installed into a fresh
virtual environment, its `gradgen generate` works from any folder (the templates ship
inside it) and reproduces the golden record byte for byte.

The wheel is built from a copy of the sources in a temporary folder: setuptools writes
`build/` and `*.egg-info` next to what it builds, and a stale `build/` in the checkout
could leak deleted files into the wheel."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Not sources: version control, build products, caches.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def copy_sources(dest: Path) -> Path:
    """The checkout's files, without its build products, caches and virtual
    environments (any folder with a pyvenv.cfg)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        venvs = {n for n in names if (Path(folder) / n / "pyvenv.cfg").is_file()}
        return set(NOT_SOURCES(folder, names)) | venvs

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_declares_every_template() -> None:
    """Every file of templates/ is a module of the package or its package data, so
    the wheel ships it (the slow test below finds a missing one only by building)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    setuptools = tool["setuptools"]
    assert "gradgen.templates" in setuptools["packages"]
    assert setuptools["package-dir"]["gradgen.templates"] == "templates"
    data = setuptools["package-data"]["gradgen.templates"]
    files = sorted(p.name for p in (ROOT / "templates").iterdir() if p.is_file())
    assert any(name.endswith(".jinja") for name in files)
    missing = [
        name
        for name in files
        if not name.endswith(".py")
        and not any(fnmatch.fnmatch(name, pattern) for pattern in data)
    ]
    assert not missing, f"not package data, so not in the wheel: {missing}"


@pytest.mark.slow
def test_wheel_installs_and_generates(tmp_path: Path) -> None:
    source = copy_sources(tmp_path / "source")
    dist = tmp_path / "dist"
    run(
        sys.executable, "-m", "build", "--wheel", "--outdir", dist, source, cwd=tmp_path
    )
    (wheel,) = dist.glob("gradgen-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    run(
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        wheel,
        cwd=tmp_path,
        env=clean,
    )

    project = tmp_path / "project"
    (project / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "relu_neuron.yaml", project / "examples")
    out = run(
        bin_dir / "gradgen",
        "generate",
        "examples/relu_neuron.yaml",
        cwd=project,
        env=clean,
    )
    assert out.strip() == f"wrote {Path('generated') / 'relu_neuron.py'}"
    made = (project / "generated" / "relu_neuron.py").read_bytes()
    assert made == (ROOT / "generated" / "relu_neuron.py").read_bytes()

    # The installed gradgen is the wheel's, not this checkout's.
    where = run(
        bin_dir / "python",
        "-c",
        "import gradgen; print(gradgen.__file__)",
        cwd=project,
        env=clean,
    )
    assert Path(where.strip()).is_relative_to(env_dir)
    run(
        bin_dir / "gradgen",
        "check",
        "examples/relu_neuron.yaml",
        cwd=project,
        env=clean,
    )
