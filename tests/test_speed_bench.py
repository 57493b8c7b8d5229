"""benchmarks/speed.py runs end to end: it measures, it asserts nothing about speed.

A smoke run (numpy implementations only, tiny sizes) checks that the workers agree
with each other before timing and that the report is produced; an implementation whose
package is missing is skipped, not failed; the plot is written where matplotlib is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import ROOT, import_file, load_generated

SCRIPT = ROOT / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    return import_file(SCRIPT, "_gradgen_speed_bench", keep=True)


def test_hand_written_elementwise_matches_generated(speed: ModuleType) -> None:
    x = np.random.default_rng(0).uniform(-3.0, 3.0, 1001)
    value, (grad,) = speed.hand_elementwise(x)
    want_value, want = load_generated("elementwise").loss_and_gradients(x)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    np.testing.assert_allclose(grad, want.x, rtol=1e-12, atol=1e-14)


def test_missing_package_is_skipped(speed: ModuleType) -> None:
    ghost = speed.Implementation(
        "ghost", "ghost", speed.build_numpy, requires=("no_such_module_for_gradgen",)
    )
    result = speed.spawn(ghost, speed.MODELS["elementwise"], [10], None)
    assert result == {
        "status": "skipped",
        "reason": "not installed: no_such_module_for_gradgen",
    }


@pytest.mark.slow
def test_quick_run_reports_a_table(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--only",
            "numpy,gradgen,threads",
            "--models",
            "elementwise,linear_regression,mlp",
            "--repeats",
            "1",
            "--min-time",
            "0.001",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "| model | N | numpy by hand (ms) | gradgen (ms) | gradgen --threads (ms) |"
        in done.stdout
    )
    results = json.loads(out.read_text())["results"]
    for model in ("elementwise", "linear_regression", "mlp"):
        for key in ("numpy", "gradgen", "threads"):
            assert results[model][key]["status"] == "ok"
            assert all(row["error"] <= 1e-10 for row in results[model][key]["rows"])


@pytest.mark.slow  # matplotlib: importing it and drawing take half a second
def test_replot_writes_a_png(speed: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    rows = [{"N": N, "median": N * 1e-8, "best": N * 1e-8} for N in (10, 100)]
    ok = {"status": "ok", "rows": rows, "info": {"numpy": "x", "threadpools": []}}
    saved = {
        "header": ["machine: test", "threads: 1"],
        "results": {
            "elementwise": {"numpy": ok, "gradgen": ok},
            "mlp": {"numpy": ok, "torch": {"status": "skipped", "reason": "r"}},
        },
    }
    source = tmp_path / "saved.json"
    source.write_text(json.dumps(saved))
    png = tmp_path / "speed.png"
    assert speed.main(["--replot", str(source), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interleaved_runs_and_checks_agreement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks/interleaved.py at a tiny size: every model's generated code and
    hand-written code agree (it raises otherwise) and a ratio is printed."""
    script = import_file(ROOT / "benchmarks" / "interleaved.py", "_interleaved")
    models = "linear_regression,relu_neuron,logistic_regression,elementwise"
    script.main(["--rows", "200", "--pairs", "2", "--models", models])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == models.split(",")
    assert all("ratio" in line for line in lines)
