"""The command line: parses arguments and prints; `plan.py` decides what to do.

Exit codes, like black's: 0 success / up to date; 1 `check` found a module that
would change; 2 a bad spec, a bad config, a usage error, or a refused write; 3 an
internal error (a gradgen bug, reported without a traceback); 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import __version__, plan
from .plan import Job, Kind
from .report import CHANGED, FAILED, OK, Reporter
from .report import run as _run
from .stages import Backend, DType, Format, Stage

__all__ = ["Reporter", "app"]
_STALE = {  # what `check` says of a module that would change
    Kind.MISSING: "missing {a.shown} (from {a.target.job.display})",
    Kind.STALE: "would change {a.shown}",
    Kind.EDITED: "would change {a.shown} (edited by hand)",
}

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Derive gradients of a YAML model spec and generate a standalone numpy module.",
)


def _jobs(
    specs: list[Path] | None,
    out: Path | None,
    report: Reporter,
    explain: bool | None = None,
    strict: bool = False,
    dtype: DType | None = None,
    backend: Backend | None = None,
    threads: bool = False,
) -> list[Job]:
    selection = plan.select(
        specs or [],
        out,
        explain,
        strict,
        None if dtype is None else dtype.value,
        None if backend is None else backend.value,
        threads,
    )
    report.error(*selection.errors)
    if selection.usage is not None:
        report.usage(selection.usage)
    if selection.stop:
        raise typer.Exit(FAILED)
    return list(selection.jobs)


def _targets(
    jobs: list[Job], report: Reporter, *, fail_fast: bool, trust_headers: bool
) -> list[plan.Target]:
    """What each job would write (failures are reported); exit 2 on a clash."""
    targets: list[plan.Target] = []
    for job in jobs:
        if fail_fast and report.errors:
            break
        report.job = job
        result = plan.target(job, trust_headers=trust_headers)
        if isinstance(result, plan.Failed):
            report.error(*result.errors)
        else:
            report.error(*result[0].diagnostics)  # its warnings
            targets.extend(result)
    report.job = None
    report.error(*(clashes := plan.clashes(targets)))
    if clashes:
        raise typer.Exit(FAILED)
    return targets


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print problems only (and diffs asked).")
]
Strict = Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")]


DTypeOption = Annotated[
    DType | None,
    typer.Option(
        "--dtype", help="Compute in this dtype (default: the spec's `dtype`)."
    ),
]


BackendOption = Annotated[
    Backend | None,
    typer.Option(
        "--backend",
        help="Write the module for this backend: numpy, or array-api (numpy, CuPy,"
        " torch, JAX, dask through array-api-compat). Default: [tool.gradgen], else"
        " the spec's `backend`.",
    ),
]
Threads = Annotated[
    bool,
    typer.Option(
        "--threads",
        help="loss_and_gradients over row chunks of the batch on a thread pool"
        " (default: the spec's `threads`, or [tool.gradgen] threads).",
    ),
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also print unchanged modules.")
]
FailFast = Annotated[
    bool,
    typer.Option(
        "--fail-fast",
        "-x",
        help="Stop at the first spec with an error (write nothing).",
    ),
]
Specs = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec files or folders of them (default: [tool.gradgen] specs)."
    ),
]
Explain = Annotated[
    bool | None,
    typer.Option(
        "--explain/--no-explain",
        help="Also write DIR/<name>.md, the derivation (default: [tool.gradgen] explain).",
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output folder (default: [tool.gradgen] out, else generated/).",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradgen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """gradgen: derive gradients of a YAML model spec, symbolically, into numpy code."""


@app.command(name="generate")
def generate_command(
    specs: Specs = None,
    out: Out = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite files that gradgen did not generate."),
    ] = False,
    dump: Annotated[
        Stage | None,
        typer.Option(
            help=f"Print one stage's result instead of writing: {', '.join(Stage)}.",
            metavar="<stage>",
        ),
    ] = None,
    explain: Explain = None,
    strict: Strict = False,
    dtype: DTypeOption = None,
    backend: BackendOption = None,
    threads: Threads = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Generate DIR/<name>.py for each spec (a folder means every *.yaml in it).

    Only files gradgen generated are overwritten, each atomically. A spec with an
    error writes nothing and the others are still written (exit 2); two specs that
    would write the same file write nothing at all.
    """
    with _run(quiet, verbose) as report:
        jobs = _jobs(specs, out, report, explain, strict, dtype, backend, threads)
        if dump is not None:
            for job in jobs:
                report.job = job
                result = plan.derive(job, dump=dump)
                report.error(*result.diagnostics)  # its errors, or its warnings
                if not isinstance(result, plan.Failed):
                    typer.echo(result.text, file=report.out, nl=False, color=False)
                if fail_fast and report.errors:
                    break
            raise typer.Exit(FAILED if report.errors else OK)
        targets = _targets(jobs, report, fail_fast=fail_fast, trust_headers=False)
        if fail_fast and report.errors:
            raise typer.Exit(FAILED)
        for target in targets:
            report.job = target.job
            action = plan.write_action(target, force=force)
            if action.kind is Kind.WRITE:
                action = plan.apply(action)
            if action.refusal is not None:
                report.error(action.refusal)
            elif action.kind is Kind.UP_TO_DATE:
                report.line(f"unchanged {action.shown}", detail=True)
            else:
                report.line(f"wrote {action.shown}", fg="green")
        raise typer.Exit(FAILED if report.errors else OK)


@app.command()
def check(
    specs: Specs = None,
    out: Out = None,
    diff: Annotated[
        bool, typer.Option("--diff", help="Print a unified diff of what would change.")
    ] = False,
    explain: Explain = None,
    strict: Strict = False,
    dtype: DTypeOption = None,
    backend: BackendOption = None,
    threads: Threads = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Exit 1 if any generated module is stale or missing (0 if all are up to date).

    Fast: a module whose header records this gradgen version and the spec's hash
    and path, and whose body hash still matches, is up to date without deriving.
    """
    with _run(quiet, verbose) as report:
        jobs = _jobs(specs, out, report, explain, strict, dtype, backend, threads)
        stale = 0
        for target in _targets(jobs, report, fail_fast=fail_fast, trust_headers=True):
            report.job = target.job
            action = plan.check_action(target)
            if action.refusal is not None:
                report.error(action.refusal)
            elif action.kind is Kind.UP_TO_DATE:
                report.line(f"up to date {action.shown}", detail=True)
            else:
                stale += 1
                report.line(_STALE[action.kind].format(a=action), fg="yellow")
                if diff:
                    report.diff(action.diff())
        if report.errors:
            raise typer.Exit(FAILED)
        if stale:
            modules = f"{stale} module{'s' if stale > 1 else ''}"
            report.line(f"{modules} would change; run `gradgen generate`", fg="yellow")
        raise typer.Exit(CHANGED if stale else OK)


@app.command(name="explain")
def explain_command(
    spec: Annotated[Path, typer.Argument(help="The spec file.")],
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", help="markdown, or html (one offline page)."),
    ] = Format.MARKDOWN,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to FILE.")
    ] = None,
) -> None:
    """Print the derivation in math: the intermediate variables, local derivatives,
    chain rule, closed forms and the data flow (or write it to FILE)."""
    with _run(False, False) as report:
        for job in _jobs([spec], None, report)[:1]:
            report.job = job
            result = plan.explain(job, fmt)
            report.error(*result.diagnostics)  # its errors, or its warnings
            if isinstance(result, plan.Failed) or result.explanation is None:
                continue
            if output is None:
                typer.echo(result.explanation, file=report.out, nl=False, color=False)
            elif problem := plan.write_file(output, result.explanation):
                report.error(problem)
        raise typer.Exit(FAILED if report.errors else OK)
