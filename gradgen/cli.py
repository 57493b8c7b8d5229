"""The command line: parses arguments and prints; `plan.py` decides what to do.

Exit codes, like black's: 0 success / up to date; 1 `check` found a module that
would change; 2 a bad spec, a bad config, a usage error, or a refused write; 3 an
internal error (a gradgen bug, reported without a traceback); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, TextIO

import typer

from . import __version__, plan
from .errors import WARNING, Diagnostic
from .plan import Job, Kind
from .stages import Stage

OK, CHANGED, FAILED, INTERNAL_ERROR, INTERRUPTED = 0, 1, 2, 3, 130
Style = Callable[[str], str]
_BOLD, _RED = partial(typer.style, bold=True), partial(typer.style, fg="red", bold=True)
_MAGENTA = partial(typer.style, fg="magenta", bold=True)  # "warning: ", as gcc's
_GREEN, _CYAN, _MINUS = (partial(typer.style, fg=c) for c in ("green", "cyan", "red"))
_DIFF = {"+++": _BOLD, "---": _BOLD, "@@": _CYAN, "+": _GREEN, "-": _MINUS}
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


@dataclass
class Reporter:
    """Results to stdout, errors and warnings to stderr; colour only on a terminal
    without ``NO_COLOR`` (https://no-color.org). `quiet` drops all but errors,
    warnings and output asked for (diffs, dumps); `verbose` adds unchanged modules."""

    quiet: bool = False
    verbose: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    errors: int = field(default=0, init=False)
    job: Job | None = field(default=None, init=False)  # named if gradgen fails

    @staticmethod
    def use_color(stream: TextIO) -> bool:
        """Whether to colour output written to `stream`."""
        try:
            return not os.environ.get("NO_COLOR") and stream.isatty()
        except (AttributeError, OSError, ValueError):  # no isatty, or a closed stream
            return False

    def _echo(self, stream: TextIO, text: str, style: Style | None, nl: bool) -> None:
        color = self.use_color(stream)
        text = style(text) if color and style else text
        typer.echo(text, file=stream, nl=nl, color=color)

    def line(self, message: str, detail: bool = False, fg: str | None = None) -> None:
        """A result line on stdout; `detail` lines only with --verbose."""
        if not self.quiet and (self.verbose or not detail):
            style = partial(typer.style, fg=fg) if fg else None
            self._echo(self.out, message, style, nl=True)

    def diff(self, text: str) -> None:
        """A unified diff, printed even with --quiet; on a terminal, each line in
        the style of the first `_DIFF` prefix it starts with."""
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\n")
            style = next((s for p, s in _DIFF.items() if line.startswith(p)), None)
            self._echo(self.out, body, style, nl=False)
            typer.echo(line[len(body) :], file=self.out, nl=False)

    def error(self, *diagnostics: Diagnostic) -> None:
        """Diagnostics, `path:line:col: error: message` (or `warning:`), on stderr."""
        for d in diagnostics:
            self._echo(self.err, f"{d.location}: ", _BOLD, nl=False)
            self._error(f"{d.severity}: ", d.message, d.severity == WARNING)

    def usage(self, message: str) -> None:
        """An error about the command line or the project, not about one file."""
        self._error("gradgen: error: ", message)

    def _error(self, prefix: str, message: str, warning: bool = False) -> None:
        self.errors += not warning
        self._echo(self.err, prefix, _MAGENTA if warning else _RED, nl=False)
        self._echo(self.err, message, None, nl=True)


@contextlib.contextmanager
def _run(quiet: bool, verbose: bool) -> Iterator[Reporter]:
    """A command's reporter; a gradgen bug exits 3, Ctrl-C 130, never a traceback."""
    report = Reporter(quiet, verbose)
    try:
        yield report
        return
    except (typer.Exit, typer.Abort, BrokenPipeError):
        raise  # Typer exits with the code / quietly on a closed pipe
    except KeyboardInterrupt:
        code, message = INTERRUPTED, "interrupted; every file is either old or new"
    except Exception as exc:  # a gradgen bug: say so, without a traceback
        where = f" while processing {report.job.display}" if report.job else ""
        code, message = INTERNAL_ERROR, (
            f"internal error{where}: {type(exc).__name__}: {exc}\nThis is a bug in"
            " gradgen, not in your spec; please report it with the spec."
        )
    typer.echo(f"gradgen: {message}", file=report.err, color=False)
    raise typer.Exit(code) from None


def _jobs(specs: Specs, out: Out, report: Reporter, strict: bool) -> list[Job]:
    selection = plan.select(specs or [], out, strict)
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
        report.error(*result.diagnostics)  # its errors, or its warnings
        if not isinstance(result, plan.Failed):
            targets.append(result)
    report.job = None
    report.error(*(clashes := plan.clashes(targets)))
    if clashes:
        raise typer.Exit(FAILED)
    return targets


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print problems only (and diffs asked).")
]
Strict = Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")]
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
    fail_fast: FailFast = False,
    strict: Strict = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Generate DIR/<name>.py for each spec (a folder means every *.yaml in it).

    Only files gradgen generated are overwritten, each atomically. A spec with an
    error writes nothing and the others are still written (exit 2); two specs that
    would write the same file write nothing at all.
    """
    with _run(quiet, verbose) as report:
        jobs = _jobs(specs, out, report, strict)
        if dump is not None:
            for job in jobs:
                report.job = job
                result = plan.derive(job, dump=dump)
                report.error(*result.diagnostics)
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
    fail_fast: FailFast = False,
    strict: Strict = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Exit 1 if any generated module is stale or missing (0 if all are up to date).

    Fast: a module whose header records this gradgen version and the spec's hash
    and path, and whose body hash still matches, is up to date without deriving.
    """
    with _run(quiet, verbose) as report:
        jobs = _jobs(specs, out, report, strict)
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
