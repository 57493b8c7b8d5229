"""The command line: argument handling and reporting only; the work is in
`pipeline.py` (deriving) and `write.py` (files).

Exit codes, like black's: 0 success / up to date; 1 `check` found a module that
would change; 2 a bad spec, a bad config, a usage error, or a refused write.
Errors are printed compiler-style, `path:line:col: error: message`, all of them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from . import __version__, write
from .config import Config, load_config
from .errors import Diagnostic, Location, SpecError
from .pipeline import STAGES, Generated, generate, relative_spec, spec_digest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Derive gradients of a YAML model spec and generate a standalone numpy module.",
)

SPEC_SUFFIXES = (".yaml", ".yml")
INTERNAL_ERROR = 3


class Reporter:
    """Prints results to stdout and errors to stderr; colour only on a terminal."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.errors = 0

    def _color(self, stream: object) -> bool:
        isatty = getattr(stream, "isatty", None)
        return "NO_COLOR" not in os.environ and bool(isatty and isatty())

    def line(self, message: str, *, detail: bool = False, fg: str | None = None) -> None:
        if self.quiet or (detail and not self.verbose):
            return
        color = self._color(sys.stdout)
        typer.secho(message, fg=fg if color else None, color=color)

    def raw(self, text: str) -> None:
        typer.echo(text, nl=False)

    def error(self, diagnostic: Diagnostic) -> None:
        self.errors += 1
        color = self._color(sys.stderr)
        location, _, message = diagnostic.format().partition(": error: ")
        if color:
            text = typer.style(location + ": ", bold=True) + typer.style("error: ", fg="red", bold=True) + message
        else:
            text = diagnostic.format()
        typer.echo(text, err=True, color=color)

    def errors_of(self, exc: SpecError) -> None:
        for d in exc.diagnostics:
            self.error(d)


@dataclass(frozen=True)
class Job:
    spec: Path
    display: str
    out_dir: Path
    name: str | None


def _display(path: Path) -> str:
    """A path as the user will recognise it: relative to the current folder if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
    return [path]


def _jobs(specs: list[Path], out: Path | None, report: Reporter) -> list[Job]:
    """The specs to process, from the arguments or else from [tool.gradgen]."""
    try:
        config: Config | None = load_config(Path.cwd())
    except SpecError as e:
        report.errors_of(e)
        raise typer.Exit(2) from None
    if not specs:
        if config is None or not config.specs:
            report.error(
                Diagnostic(
                    Location("gradgen"),
                    "no specs given, and no `specs` in [tool.gradgen] of a pyproject.toml",
                )
            )
            raise typer.Exit(2)
        specs = list(config.specs)
    out_dir = out if out is not None else (config.out if config else Path("generated"))
    jobs: dict[Path, Job] = {}
    for given in specs:
        for spec in _expand(given):
            override = config.override_for(spec) if config else None
            spec_out = out if out is not None else (override.out if override and override.out else out_dir)
            key = spec.resolve()
            if key not in jobs:
                jobs[key] = Job(spec, _display(spec), spec_out, override.name if override else None)
    return [jobs[k] for k in sorted(jobs)]


def _run(job: Job, report: Reporter) -> Generated | None:
    if not job.spec.is_file():
        problem = "is a folder with no spec files" if job.spec.is_dir() else "no such file"
        report.error(Diagnostic(Location(job.display), problem))
        return None
    try:
        return generate(job.spec, job.out_dir, name=job.name, display=job.display)
    except SpecError as e:
        report.errors_of(e)
    except OSError as e:
        report.error(Diagnostic(Location(job.display), f"cannot read the spec: {e.strerror or e}"))
    return None


def _duplicates(results: list[Generated], report: Reporter) -> bool:
    by_target: dict[Path, Generated] = {}
    clash = False
    for g in results:
        first = by_target.setdefault(g.target.resolve(), g)
        if first is not g:
            clash = True
            report.error(
                Diagnostic(
                    Location(_display(g.spec)),
                    f"module `{g.name}` would overwrite the one generated from"
                    f" {_display(first.spec)} ({_display(g.target)}); give one of them another `name:`",
                )
            )
    return clash


def _internal(exc: BaseException, job: Job | None) -> NoReturn:
    where = f" while processing {job.display}" if job else ""
    typer.echo(
        f"gradgen: internal error{where}: {type(exc).__name__}: {exc}\n"
        "This is a bug in gradgen, not in your spec; please report it with the spec.",
        err=True,
    )
    raise typer.Exit(INTERNAL_ERROR)


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also print unchanged modules.")]
Specs = Annotated[
    list[Path] | None,
    typer.Argument(help="Spec files or folders of them (default: [tool.gradgen] specs).", show_default=False),
]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Output folder (default: [tool.gradgen] out, else generated/).", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradgen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """gradgen: derive gradients of a YAML model spec, symbolically, into numpy code."""


@app.command(name="generate")
def generate_command(
    specs: Specs = None,
    out: Out = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files that gradgen did not generate.")
    ] = False,
    dump: Annotated[
        str | None,
        typer.Option(help=f"Print one stage's result instead of writing: {', '.join(STAGES)}.", show_default=False),
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Generate DIR/<name>.py for each spec (a folder means every *.yaml in it)."""
    report = Reporter(quiet, verbose)
    if dump is not None and dump not in STAGES:
        report.error(Diagnostic(Location("gradgen"), f"--dump takes one of {', '.join(STAGES)}, not `{dump}`"))
        raise typer.Exit(2)
    jobs = _jobs(specs or [], out, report)
    results: list[Generated] = []
    job: Job | None = None
    try:
        for job in jobs:
            if dump is not None:
                job = Job(job.spec, job.display, job.out_dir, job.name)
                try:
                    report.raw(generate(job.spec, job.out_dir, name=job.name, display=job.display, dump=dump).text)
                except SpecError as e:
                    report.errors_of(e)
                continue
            result = _run(job, report)
            if result is not None:
                results.append(result)
        job = None
    except Exception as exc:  # a gradgen bug: say so, without a traceback
        _internal(exc, job)
    if dump is None and not _duplicates(results, report):
        for g in results:
            _write(g, force, report)
    raise typer.Exit(2 if report.errors else 0)


def _write(g: Generated, force: bool, report: Reporter) -> None:
    shown = _display(g.target)
    verdict = write.plan_write(g.target, g.text, force=force)
    if verdict is write.Verdict.FOREIGN:
        report.error(
            Diagnostic(
                Location(shown),
                "a file that gradgen did not generate is in the way; left untouched"
                " (move it, or pass --force to overwrite it)",
            )
        )
        return
    if verdict is write.Verdict.UP_TO_DATE:
        report.line(f"unchanged {shown}", detail=True)
        return
    try:
        g.target.parent.mkdir(parents=True, exist_ok=True)
        write.atomic_write(g.target, g.text)
    except OSError as e:
        report.error(Diagnostic(Location(shown), f"cannot write: {e.strerror or e}"))
        return
    report.line(f"wrote {shown}", fg="green")


@app.command()
def check(
    specs: Specs = None,
    out: Out = None,
    diff: Annotated[bool, typer.Option("--diff", help="Print a unified diff of what would change.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Exit 1 if any generated module is stale or missing (0 if all are up to date).

    Fast: a module whose header records this gradgen version and the spec's hash,
    and whose body hash still matches, is up to date without deriving anything.
    """
    report = Reporter(quiet, verbose)
    jobs = _jobs(specs or [], out, report)
    stale = 0
    job: Job | None = None
    try:
        for job in jobs:
            stale += _check_one(job, diff, report)
        job = None
    except Exception as exc:
        _internal(exc, job)
    if report.errors:
        raise typer.Exit(2)
    if stale:
        report.line(f"{stale} module{'s' if stale > 1 else ''} would change; run `gradgen generate`", fg="yellow")
    raise typer.Exit(1 if stale else 0)


def _check_one(job: Job, diff: bool, report: Reporter) -> int:
    """1 if the module for this spec would change, else 0 (errors are reported)."""
    if job.spec.is_file():
        target_guess = _fast_target(job)
        if target_guess is not None:
            report.line(f"up to date {_display(target_guess)}", detail=True)
            return 0
    g = _run(job, report)
    if g is None:
        return 0
    shown = _display(g.target)
    verdict = write.plan_write(g.target, g.text, force=False)
    if verdict is write.Verdict.UP_TO_DATE:
        report.line(f"up to date {shown}", detail=True)
        return 0
    if verdict is write.Verdict.FOREIGN:
        report.error(Diagnostic(Location(shown), "a file that gradgen did not generate is in the way"))
        return 0
    if verdict is write.Verdict.MISSING:
        report.line(f"missing {shown} (from {job.display})", fg="yellow")
        old = ""
    else:
        old_text = g.target.read_text(encoding="utf-8")
        edited = not write.body_intact(old_text)
        report.line(f"would change {shown}" + (" (edited by hand)" if edited else ""), fg="yellow")
        old = old_text
    if diff:
        report.raw(write.unified_diff(old, g.text, shown.replace(os.sep, "/")))
    return 1


def _fast_target(job: Job) -> Path | None:
    """The module's path if its header proves it up to date, without deriving."""
    name = job.name
    if name is None:
        name = _declared_name(job.spec)
    if name is None:
        return None
    target = job.out_dir / f"{name}.py"
    digest = spec_digest(job.spec.read_bytes(), job.name)
    verdict = write.fast_verdict(
        target, version=__version__, spec_sha256=digest, spec=relative_spec(job.spec, job.out_dir)
    )
    return target if verdict is write.Verdict.UP_TO_DATE else None


def _declared_name(spec: Path) -> str | None:
    """The module name a spec declares, read cheaply; None when unsure (then derive)."""
    try:
        from .load import YMap, YScalar, load_yaml

        root = load_yaml(spec)
    except SpecError:
        return None
    if not isinstance(root, YMap):
        return None
    node = root.get("name")
    if node is None:
        return spec.stem
    return node.value if isinstance(node, YScalar) and isinstance(node.value, str) else None
