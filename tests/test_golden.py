"""generated/ is a golden record: regenerating every example reproduces it byte for byte,
and it is formatted exactly as `black --check` wants it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradgen import pipeline, write

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GENERATED = ROOT / "generated"


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_regenerating_reproduces_the_golden_record(spec: Path) -> None:
    g = pipeline.generate(spec, GENERATED, display=f"examples/{spec.name}")
    committed = g.target.read_text(encoding="utf-8")
    assert (
        g.text == committed
    ), f"{g.target.name} is stale: run `gradgen generate examples` and commit generated/"


def test_every_generated_module_comes_from_an_example() -> None:
    # The target is named at the spec stage: no need to derive every example again
    # (test_regenerating_reproduces_the_golden_record derives them).
    made = {pipeline.generate(s, GENERATED, dump="spec").target.name for s in EXAMPLES}
    present = {p.name for p in GENERATED.glob("*.py")}
    assert present == made


@pytest.mark.parametrize("module", sorted(GENERATED.glob("*.py")), ids=lambda p: p.stem)
def test_golden_modules_are_sealed(module: Path) -> None:
    text = module.read_text(encoding="utf-8")
    header = write.read_header(text)
    assert header is not None and write.body_intact(text)
    assert header.spec.startswith("../examples/")


def test_generated_is_black_clean() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "black", "--check", "--quiet", str(GENERATED)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def test_readme_shows_the_real_generated_code() -> None:
    """The README's excerpt of generated/relu_neuron.py is the file's own text."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    excerpt = readme.split("```python\ndef loss_and_gradients(", 1)[1].split("```", 1)[
        0
    ]
    module = (GENERATED / "relu_neuron.py").read_text(encoding="utf-8")
    assert "def loss_and_gradients(" + excerpt in module
