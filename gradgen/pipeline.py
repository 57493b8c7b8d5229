"""The whole pipeline, top to bottom, in one function.

spec (YAML -> Spec) -> graph (expressions -> nodes, shapes checked) -> derivation
(reverse mode; forward mode for Jacobians) -> printing + rendering (numpy text in
Jinja templates) -> formatting (black) -> sealing (hashes in the header). Writing
files is `write.py`'s job, driven by the CLI. `dump` names a stage whose result is
returned as text, for debugging (`gradgen generate --dump STAGE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import __version__, derive, explain, write
from .formatting import format_python
from .load import read_spec_bytes
from .model import build
from .render import render_module
from .spec import read_spec
from .stages import Stage
from .write import relative_spec, spec_digest

STAGES = tuple(stage.value for stage in Stage)


@dataclass(frozen=True)
class Generated:
    spec: Path
    name: str
    target: Path
    text: str  # the sealed, formatted module; or the dumped stage
    spec_sha256: str


def generate(
    spec_path: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    display: str | None = None,
    dump: str | None = None,
) -> Generated:
    shown = display or str(spec_path)
    data = read_spec_bytes(spec_path, shown)  # read once: hashed and parsed alike
    digest = spec_digest(data, name)
    spec = read_spec(spec_path, shown, name, data)
    target = out_dir / f"{spec.name}.py"
    if dump == "spec":
        return Generated(spec_path, spec.name, target, explain.spec_text(spec), digest)
    model = build(spec)
    if dump == "graph":
        return Generated(
            spec_path, spec.name, target, explain.graph_text(model), digest
        )
    derivation = (
        derive.gradients(model.ops, model.loss, list(model.params.values()))
        if model.loss is not None
        else None
    )
    if dump == "derivation":
        return Generated(
            spec_path,
            spec.name,
            target,
            explain.derivation_text(model, derivation),
            digest,
        )
    rendered = render_module(
        model,
        derivation,
        version=__version__,
        spec_rel=relative_spec(spec_path, out_dir),
        spec_sha256=digest,
    )
    if dump == "rendered":
        return Generated(spec_path, spec.name, target, rendered, digest)
    text = write.seal(format_python(rendered))
    return Generated(spec_path, spec.name, target, text, digest)
