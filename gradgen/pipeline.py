"""The whole pipeline, top to bottom, in one function.

Each stage is a module named for it, and a stage imports only the stages above it:

    read      load.read_spec_bytes   the spec file's bytes, within the size limit
    YAML      load.load_yaml_text    bytes -> located YAML nodes
    spec      spec.validate          located nodes -> a `Spec` and its problems
    graph     model.build            expressions -> one hash-consed graph (chain rule
                                     step 1: intermediate variables), shapes checked
    derive    derive.derive          reverse mode for the loss's gradients, forward
                                     mode for the outputs' Jacobians (steps 2-4)
    lower     lower.lower            the module's functions: fast spellings, fresh
                                     results, names
    threads   threads.schedule       with `threads`: loss_and_gradients in phases,
                                     the element-wise ones over row chunks on threads
    print     printer.print_program  graph -> numpy statements
    explain   explanation.explain    the derivation as the article teaches it, in
                                     closed form (the module's docstrings state it)
    render    render.render_module   the printed program in the Jinja templates
    format    formatting             black
    seal      write.seal             the header's hashes

Warnings (`model.build` finds them: see `model.py`) come back on `Generated`; the
CLI prints them, or refuses the spec under `--strict`. Writing files is `write.py`'s
job, driven by the CLI. `dump` names a stage whose result is returned as text
instead (`gradgen generate --dump STAGE`). `explain` asks for the explanation too,
as Markdown (sealed like the module, for `<name>.md` beside it) or as a
self-contained HTML page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from . import __version__, write
from . import explain as dumps
from .derive import derive
from .errors import Diagnostic
from .explanation import explain as explain_derivation
from .formatting import format_python
from .load import load_yaml_text, read_spec_bytes
from .lower import lower
from .model import build
from .printer import print_program, print_threaded
from .render import render_explanation, render_module
from .spec import validate
from .stages import Stage
from .threads import schedule

STAGES = tuple(stage.value for stage in Stage)


@dataclass(frozen=True)
class Generated:
    spec: Path
    name: str
    target: Path
    text: str  # the sealed, formatted module; or the dumped stage
    spec_sha256: str
    explanation: str | None = None  # the explanation, when asked for
    warnings: tuple[Diagnostic, ...] = ()  # in file order; never printed here

    @property
    def explanation_target(self) -> Path:
        """Where the Markdown explanation goes: beside the module."""
        return self.target.with_suffix(".md")

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """What to report about the spec: its warnings."""
        return self.warnings


def generate(
    spec_path: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    display: str | None = None,
    dump: Stage | str | None = None,
    explain: str | None = None,
    dtype: str | None = None,
    backend: str | None = None,
    threads: bool = False,
) -> Generated:
    """The module for a spec (`explain`: and its explanation, "markdown" or
    "html"), or the result of stage `dump`; `dtype` and `backend` override the
    spec's, `threads` asks for the threaded `loss_and_gradients` whatever the spec
    says."""
    shown = display or str(spec_path)
    stage = None if dump is None else Stage(dump)

    def result(text: str, explanation: str | None = None) -> Generated:
        return Generated(
            spec_path,
            model.spec.name,
            target,
            text,
            digest,
            explanation,
            model.warnings,
        )

    data = read_spec_bytes(spec_path, shown)  # read once: hashed and parsed alike
    digest = write.spec_digest(data, name, dtype, backend, threads)
    checked = validate(
        load_yaml_text(data, shown), shown, spec_path.stem, name, backend
    )
    if dtype is not None and checked.spec is not None:
        checked = dataclasses.replace(
            checked, spec=dataclasses.replace(checked.spec, dtype=dtype)
        )
    if threads and checked.spec is not None:
        checked = dataclasses.replace(
            checked, spec=dataclasses.replace(checked.spec, threads=True)
        )
    model = build(checked)  # raises the spec's and its expressions' problems
    target = out_dir / f"{model.spec.name}.py"
    if stage is Stage.SPEC:
        return result(dumps.spec_text(model.spec))
    if stage is Stage.GRAPH:
        return result(dumps.graph_text(model))
    derivatives = derive(model)
    if stage is Stage.DERIVATION:
        return result(dumps.derivation_text(model, derivatives.gradients))
    program = lower(model, derivatives)
    scheduled = schedule(model, program) if model.spec.threads else None
    bodies = print_program(program)
    printed = dict(bodies)  # the module's; the explanation names after the plain code
    if scheduled is not None:
        printed[scheduled.kernel.name] = print_threaded(scheduled)
    if stage is Stage.LOWERED:
        return result(dumps.lowered_text(program, printed))
    steps = explain is not None or stage is Stage.EXPLANATION  # else: closed forms
    explained = explain_derivation(model, derivatives, program, bodies, steps=steps)
    header = {
        "version": __version__,
        "spec_rel": write.relative_spec(spec_path, out_dir),
        "spec_sha256": digest,
        "placeholder": write.PLACEHOLDER,
    }
    if stage is Stage.EXPLANATION:
        return result(write.seal(render_explanation(explained, "markdown", **header)))
    rendered = render_module(model, program, printed, explained, **header)
    if stage is Stage.RENDERED:
        return result(rendered)
    explanation = None
    if explain == "markdown":
        explanation = write.seal(render_explanation(explained, explain, **header))
    elif explain is not None:
        explanation = render_explanation(explained, explain, **header)
    return result(write.seal(format_python(rendered)), explanation)
