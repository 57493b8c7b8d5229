"""How fast is `gradgen check` from a cold start (a pre-commit hook's situation)?

Times fresh subprocesses (median of N runs, default 7) in a temporary copy of
examples/ -- the repository is only read:

* interpreter start-up, and importing `gradgen.cli` / `gradgen.pipeline`;
* `gradgen check examples` when every module is up to date: the fast path, which
  decides from the headers alone without deriving anything;
* the same check after a whitespace edit to every spec: the slow path, which
  derives every module in memory (and exits 1, since the spec hashes changed);
* `gradgen generate examples` from nothing, for comparison.

Usage: python benchmarks/check_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gradgen_script() -> str:
    """The installed console script itself (not a shim in front of it)."""
    name = "gradgen.exe" if os.name == "nt" else "gradgen"
    script = Path(sysconfig.get_path("scripts")) / name
    if script.is_file():
        return str(script)
    found = shutil.which("gradgen")
    if found is None:
        sys.exit("gradgen is not installed: pip install -e .")
    return found


def timed(
    command: list[str], cwd: Path, runs: int, before: Callable[[], None] | None = None
) -> tuple[list[float], int]:
    """Wall-clock seconds of `runs` fresh runs, and the (last) exit code."""
    env = {**os.environ, "NO_COLOR": "1"}
    times: list[float] = []
    code = 0
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
        code = done.returncode
    return times, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    exe = gradgen_script()
    python = sys.executable
    rows: list[tuple[str, list[float], int, int]] = []

    with tempfile.TemporaryDirectory() as temp:
        project = Path(temp)
        shutil.copytree(ROOT / "examples", project / "examples")
        (project / "pyproject.toml").write_text('[project]\nname = "bench"\n')
        specs = sorted((project / "examples").glob("*.yaml"))
        out = project / "generated"

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)

        def measure(
            label: str,
            command: list[str],
            before: Callable[[], None] | None = None,
            expect: int = 0,
        ) -> None:
            times, code = timed(command, project, runs, before)
            rows.append((label, times, code, expect))

        measure("python -c pass", [python, "-c", "pass"])
        measure("import gradgen.cli", [python, "-c", "import gradgen.cli"])
        measure("import gradgen.pipeline", [python, "-c", "import gradgen.pipeline"])
        measure(
            f"gradgen generate ({len(specs)} specs, from nothing)",
            [exe, "generate", "-q", "examples"],
            before=clean,
        )
        measure("gradgen check: up to date (fast path)", [exe, "check", "examples"])
        measure(
            "python -m gradgen check: up to date",
            [python, "-m", "gradgen", "check", "examples"],
        )
        for spec in specs:
            spec.write_bytes(spec.read_bytes() + b"\n")
        measure(
            "gradgen check: specs edited (slow path)",
            [exe, "check", "examples"],
            expect=1,
        )

    width = max(len(label) for label, *_ in rows)
    print(f"{len(specs)} example specs; {runs} cold runs each; seconds of wall time")
    print(f"{'':{width}}  median     min     max  exit")
    unexpected = False
    for label, times, code, expect in rows:
        flag = "" if code == expect else f"  (expected {expect}!)"
        unexpected = unexpected or bool(flag)
        print(
            f"{label:{width}}  {statistics.median(times):6.3f}  {min(times):6.3f}"
            f"  {max(times):6.3f}  {code:4d}{flag}"
        )
    if unexpected:
        sys.exit("an unexpected exit code: the timings above do not mean much")


if __name__ == "__main__":
    main()
