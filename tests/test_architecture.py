"""The package's shape: stages in order, each importing only the stages before it.

`pipeline.generate` runs the stages top to bottom; these tests keep the package
laid out that way as it grows, so that a newcomer finds a change's room by name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gradgen import pipeline
from gradgen.stages import Stage

PACKAGE = Path(__file__).resolve().parent.parent / "gradgen"

#: The modules, stage by stage, in pipeline order. A module may import modules of
#: its own layer or of an earlier one, never of a later one.
LAYERS: list[set[str]] = [
    {"errors", "limits", "stages", "naming", "optimizers"},  # what every stage shares
    {"positions", "load"},  # bytes -> located YAML nodes
    {"spec"},  # located nodes -> Spec
    {"graph", "shapes"},  # frozen nodes, shape rules
    # the rule table and the node constructors that apply it (Ops folds each new
    # node through simplify, whose factored Jacobians live in factor; rules take
    # derivatives of element-wise functions from scalar)
    {"scalar", "rules", "ops", "simplify", "factor"},
    {"parse"},  # expression text -> nodes
    {"model"},  # Spec -> graph
    {"derive"},
    {"closedform"},  # graph <-> sympy: closed forms, printed as math
    {"lower", "regions"},
    {"threads"},  # the threaded kernel's schedule
    {"buffers", "printer"},  # numpy text; arrays written in place
    {"explain", "explanation"},  # dumps of the stages above; the explain stage
    {"render"},
    {"formatting"},
    {"write"},
    {"pipeline"},
    {"config", "plan"},
    {"cli", "report", "__main__", "__init__"},
]


def _layer(module: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if module in layer]
    assert found, f"gradgen/{module}.py is in no layer of this test: add it"
    return found[0]


def _runtime_imports(path: Path) -> set[str]:
    """The gradgen modules `path` imports when it runs (not for type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found |= {alias.name for alias in node.names}
            elif node.module and node.module.startswith("gradgen."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gradgen."):
                    found.add(alias.name.split(".")[1])
    return found - {"__version__"}


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_later_stage(module: str) -> None:
    mine = _layer(module)
    later = {
        imported
        for imported in _runtime_imports(PACKAGE / f"{module}.py")
        if _layer(imported) > mine
    }
    assert not later, f"gradgen/{module}.py imports later stages: {sorted(later)}"


@pytest.mark.parametrize(
    "module", ["gradgen.load", "gradgen.spec", "gradgen.cli", "gradgen.config"]
)
def test_reading_a_spec_does_not_import_sympy(module: str) -> None:
    """Loading and validating a spec (and the CLI's fast path) stay light: no sympy,
    black or jinja2 until something is derived or rendered."""
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; "
            "print(sorted({'sympy', 'black', 'jinja2'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert heavy == "[]", f"import {module} imports {heavy}"


def test_every_stage_can_be_dumped() -> None:
    assert pipeline.STAGES == tuple(s.value for s in Stage)
    assert list(Stage)[-1] is Stage.MODULE


def test_the_readme_names_every_module() -> None:
    """The README's table of stages names every module of the package."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How gradgen derives", 1)[1].split("\n## ", 1)[0]
    missing = [
        m for m in MODULES if not m.startswith("_") and f"`{m}.py`" not in section
    ]
    assert not missing, f"README 'How gradgen derives' does not name {missing}"
