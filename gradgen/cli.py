"""The command line: argument handling and reporting only; the work is in
`pipeline.py` (deriving) and `write.py` (files).

Exit codes, like black's: 0 success / up to date; 1 `check` found a module that
would change; 2 a bad spec, a bad config, a usage error, or a refused write;
3 an internal error (a bug in gradgen, reported without a traceback); 130
interrupted (Ctrl-C). Errors are printed compiler-style on stderr,
`path:line:col: error: message`, all of them.

Without spec arguments, the specs, output folder and per-spec overrides come from
``[tool.gradgen]`` of the nearest pyproject.toml above the current folder; with
arguments, the pyproject.toml is looked for above the specs given (like black),
and `--out` wins over any configured folder.

Importing this module is cheap on purpose: a module whose header proves it up to
date (same gradgen version, same spec hash and path, intact body) needs no
deriving, so `gradgen check` answers a pre-commit hook without importing the
pipeline (sympy, black, jinja), which is imported only when something must be
generated.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TextIO

import typer

from . import __version__, write
from .config import Config, SpecOverride, load_config
from .errors import Diagnostic, Location, SpecError
from .load import YMap, YScalar, load_yaml, read_spec_bytes

if TYPE_CHECKING:
    from .pipeline import Generated

#: The stages `--dump` can print: `pipeline.STAGES` (a test checks that they agree),
#: spelled out here so that importing the CLI does not import the pipeline.
STAGES: tuple[str, ...] = ("spec", "graph", "derivation", "rendered", "module")
SPEC_SUFFIXES = (".yaml", ".yml")
DEFAULT_OUT = Path("generated")
OK, CHANGED, FAILED, INTERNAL_ERROR, INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Derive gradients of a YAML model spec and generate a standalone numpy module.",
)


# --- reporting -----------------------------------------------------------------


class Reporter:
    """Prints results to stdout and errors to stderr; colour only on a terminal.

    Colour is used on a stream only if it is a terminal and ``NO_COLOR`` is unset
    or empty (https://no-color.org). `quiet` drops everything but errors and
    explicitly requested output (diffs, dumps); `verbose` adds unchanged modules.
    The streams default to the current `sys.stdout` / `sys.stderr` at each call.
    """

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.errors = 0
        self._out = out
        self._err = err

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err if self._err is not None else sys.stderr

    @staticmethod
    def use_color(stream: object) -> bool:
        """Whether to colour output written to `stream`."""
        if os.environ.get("NO_COLOR"):
            return False
        isatty = getattr(stream, "isatty", None)
        if isatty is None:
            return False
        try:
            return bool(isatty())
        except (OSError, ValueError):  # e.g. a closed stream
            return False

    def _echo(
        self,
        stream: TextIO,
        text: str,
        *,
        nl: bool = True,
        fg: str | None = None,
        bold: bool | None = None,
    ) -> None:
        color = self.use_color(stream)
        if color and (fg is not None or bold is not None):
            text = typer.style(text, fg=fg, bold=bold)
        typer.echo(text, file=stream, nl=nl, color=color)

    def line(
        self, message: str, *, detail: bool = False, fg: str | None = None
    ) -> None:
        """A result line on stdout; `detail` lines only with --verbose."""
        if self.quiet or (detail and not self.verbose):
            return
        self._echo(self.out, message, fg=fg)

    def raw(self, text: str) -> None:
        """Output the user asked for (a dump), printed as is, even with --quiet."""
        typer.echo(text, file=self.out, nl=False, color=False)

    def diff(self, text: str) -> None:
        """A unified diff, printed even with --quiet; coloured on a terminal."""
        if not self.use_color(self.out):
            typer.echo(text, file=self.out, nl=False, color=False)
            return
        styles: tuple[tuple[str, str | None, bool | None], ...] = (
            ("+++", None, True),
            ("---", None, True),
            ("@@", "cyan", None),
            ("+", "green", None),
            ("-", "red", None),
        )
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\n")
            fg, bold = next(
                ((f, b) for p, f, b in styles if line.startswith(p)), (None, None)
            )
            self._echo(self.out, body, nl=False, fg=fg, bold=bold)
            typer.echo(line[len(body) :], file=self.out, nl=False)

    def error(self, diagnostic: Diagnostic) -> None:
        """One error, `path:line:col: error: message`, on stderr."""
        self.errors += 1
        location, _, message = diagnostic.format().partition(": error: ")
        if self.use_color(self.err):
            text = (
                typer.style(location + ": ", bold=True)
                + typer.style("error: ", fg="red", bold=True)
                + message
            )
            typer.echo(text, file=self.err, color=True)
        else:
            typer.echo(diagnostic.format(), file=self.err, color=False)

    def errors_of(self, exc: SpecError) -> None:
        for d in exc.diagnostics:
            self.error(d)

    def usage(self, message: str) -> None:
        """An error about the command line or the project, not about one file."""
        self.errors += 1
        prefix = "gradgen: error: "
        if self.use_color(self.err):
            prefix = typer.style(prefix, fg="red", bold=True)
        typer.echo(prefix + message, file=self.err, color=self.use_color(self.err))

    def fatal(self, message: str) -> None:
        """A message about the run as a whole (internal error, interruption)."""
        typer.echo(message, file=self.err, color=False)


# --- jobs and plans ------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One spec to process: where its module goes, and its configured name."""

    spec: Path
    display: str  # the spec's path as shown in messages
    out_dir: Path
    name: str | None  # module name override from [tool.gradgen], if any


@dataclass(frozen=True)
class Plan:
    """What a job would write: `generated` is None when the target's header
    already proves it up to date (then nothing was derived)."""

    job: Job
    target: Path
    generated: Generated | None


class Run:
    """The state of one command: its reporter, and the spec being processed."""

    def __init__(self, report: Reporter) -> None:
        self.report = report
        self.job: Job | None = None


@contextlib.contextmanager
def _guard(run: Run) -> Iterator[None]:
    """Turn a gradgen bug into exit 3 and Ctrl-C into exit 130, never a traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort, BrokenPipeError):
        raise  # Typer exits with the code / quietly on a closed pipe
    except KeyboardInterrupt:
        run.report.fatal("gradgen: interrupted; every file is either old or new")
        raise typer.Exit(INTERRUPTED) from None
    except Exception as exc:  # a gradgen bug: say so, without a traceback
        _internal(exc, run)


def _internal(exc: BaseException, run: Run) -> NoReturn:
    where = f" while processing {run.job.display}" if run.job else ""
    run.report.fatal(
        f"gradgen: internal error{where}: {type(exc).__name__}: {exc}\n"
        "This is a bug in gradgen, not in your spec; please report it with the spec."
    )
    raise typer.Exit(INTERNAL_ERROR) from None


def _display(path: Path) -> str:
    """A path as the user will recognise it: relative to the current folder if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _config_start(specs: list[Path]) -> Path:
    """Where to look for the pyproject.toml: above the specs given, else here."""
    if not specs:
        return Path.cwd()
    folders = [p.resolve() if p.is_dir() else p.resolve().parent for p in specs]
    try:
        return Path(os.path.commonpath(folders))
    except ValueError:  # e.g. different drives
        return Path.cwd()


def _expand(path: Path) -> list[Path]:
    """The spec files of `path`: itself, or a folder's *.yaml / *.yml (not hidden).

    A folder without specs is returned as is, for `_derive` to report.
    """
    if not path.is_dir():
        return [path]
    found = sorted(
        p
        for p in path.iterdir()
        if p.suffix in SPEC_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return found or [path]


def _jobs(specs: list[Path], out: Path | None, report: Reporter) -> list[Job]:
    """The specs to process, from the arguments or else from [tool.gradgen], in a
    fixed order (by resolved path) whatever the order they were given in."""
    try:
        config: Config | None = load_config(_config_start(specs))
    except SpecError as e:
        report.errors_of(e)
        raise typer.Exit(FAILED) from None
    if not specs:
        if config is None or not config.specs:
            report.usage(
                "no specs given, and no `specs` in [tool.gradgen] of a pyproject.toml"
            )
            raise typer.Exit(FAILED)
        specs = list(config.specs)
    default_out = config.out if config is not None else DEFAULT_OUT
    jobs: dict[Path, Job] = {}
    for given in specs:
        try:
            expanded = _expand(given)
        except OSError as e:
            report.error(
                Diagnostic(Location(_display(given)), f"cannot list: {e.strerror or e}")
            )
            continue
        for spec in expanded:
            key = spec.resolve()
            override = config.override_for(key) if config else SpecOverride()
            spec_out = out if out is not None else (override.out or default_out)
            jobs.setdefault(key, Job(spec, _display(spec), spec_out, override.name))
    return [jobs[k] for k in sorted(jobs)]


def _derive(job: Job, report: Reporter, dump: str | None = None) -> Generated | None:
    """Run the pipeline on one spec; None (errors reported) when it fails."""
    if not job.spec.is_file():
        problem = (
            f"a folder with no spec files ({', '.join('*' + s for s in SPEC_SUFFIXES)})"
            if job.spec.is_dir()
            else "no such file"
        )
        report.error(Diagnostic(Location(job.display), problem))
        return None
    from . import pipeline  # heavy (sympy, black, jinja): only when deriving

    try:
        return pipeline.generate(
            job.spec, job.out_dir, name=job.name, display=job.display, dump=dump
        )
    except SpecError as e:
        report.errors_of(e)
    except OSError as e:
        report.error(
            Diagnostic(
                Location(job.display), f"cannot read the spec: {e.strerror or e}"
            )
        )
    return None


def _up_to_date_target(job: Job) -> Path | None:
    """The module's path if its header proves it up to date, without deriving.

    None when that cannot be decided cheaply (then the caller derives, and
    reports any problem).
    """
    try:
        name = job.name if job.name is not None else _declared_name(job.spec)
        if name is None or not name.isidentifier():
            return None
        target = job.out_dir / f"{name}.py"
        verdict = write.fast_verdict(
            target,
            version=__version__,
            spec_sha256=write.spec_digest(read_spec_bytes(job.spec), job.name),
            spec=write.relative_spec(job.spec, job.out_dir),
        )
    except (OSError, SpecError):
        return None
    return target if verdict is write.Verdict.UP_TO_DATE else None


def _declared_name(spec: Path) -> str | None:
    """The module name a spec declares, read cheaply; None when unsure (then derive)."""
    try:
        root = load_yaml(spec)
    except SpecError:
        return None
    if not isinstance(root, YMap):
        return None
    node = root.get("name")
    if node is None:
        return spec.stem
    return (
        node.value
        if isinstance(node, YScalar) and isinstance(node.value, str)
        else None
    )


def _plans(
    jobs: list[Job], run: Run, fail_fast: bool, *, trust_headers: bool
) -> list[Plan]:
    """What each job would write; failed jobs are reported and left out.

    With `trust_headers` (check), a module whose header proves it up to date is not
    derived again. `generate` always derives: within one version number a
    development build of gradgen may emit different code, and what generate writes
    must be exactly what this gradgen derives.
    """
    plans: list[Plan] = []
    for job in jobs:
        if fail_fast and run.report.errors:
            break
        run.job = job
        fast = trust_headers and job.spec.is_file()
        target = _up_to_date_target(job) if fast else None
        if target is not None:
            plans.append(Plan(job, target, None))
        else:
            generated = _derive(job, run.report)
            if generated is not None:
                plans.append(Plan(job, generated.target, generated))
        run.job = None
    return plans


def _clashes(plans: list[Plan], report: Reporter) -> bool:
    """Report every pair of specs that would write the same file."""
    by_target: dict[Path, Plan] = {}
    clash = False
    for plan in plans:
        first = by_target.setdefault(plan.target.resolve(), plan)
        if first is not plan:
            clash = True
            report.error(
                Diagnostic(
                    Location(plan.job.display),
                    f"module `{plan.target.stem}` would overwrite the one generated"
                    f" from {first.job.display} ({_display(plan.target)});"
                    " give one of them another `name:`",
                )
            )
    return clash


# --- commands ------------------------------------------------------------------

Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print errors only (and diffs asked for).")
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
        help="Spec files or folders of them (default: [tool.gradgen] specs).",
        show_default=False,
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output folder (default: [tool.gradgen] out, else generated/).",
        show_default=False,
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
        str | None,
        typer.Option(
            help=f"Print one stage's result instead of writing: {', '.join(STAGES)}.",
            show_default=False,
        ),
    ] = None,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Generate DIR/<name>.py for each spec (a folder means every *.yaml in it).

    Only files gradgen generated are overwritten, each atomically. A spec with an
    error writes nothing and the others are still written (exit 2); two specs that
    would write the same file write nothing at all.
    """
    report = Reporter(quiet, verbose)
    run = Run(report)
    with _guard(run):
        if dump is not None and dump not in STAGES:
            report.usage(f"--dump takes one of {', '.join(STAGES)}, not `{dump}`")
            raise typer.Exit(FAILED)
        jobs = _jobs(specs or [], out, report)
        if dump is not None:
            _dump(jobs, dump, run, fail_fast)
        plans = _plans(jobs, run, fail_fast, trust_headers=False)
        if _clashes(plans, report) or (fail_fast and report.errors):
            raise typer.Exit(FAILED)
        for plan in plans:
            run.job = plan.job
            assert plan.generated is not None  # generate always derives
            _write(plan.generated, force, report)
        run.job = None
        raise typer.Exit(FAILED if report.errors else OK)


def _dump(jobs: list[Job], stage: str, run: Run, fail_fast: bool) -> NoReturn:
    for job in jobs:
        run.job = job
        generated = _derive(job, run.report, dump=stage)
        if generated is not None:
            run.report.raw(generated.text)
        if fail_fast and run.report.errors:
            break
    run.job = None
    raise typer.Exit(FAILED if run.report.errors else OK)


def _write(g: Generated, force: bool, report: Reporter) -> None:
    shown = _display(g.target)
    try:
        verdict = write.plan_write(g.target, g.text, force=force)
        if verdict is write.Verdict.FOREIGN:
            hint = " (move it away, or pass --force)" if g.target.is_file() else ""
            report.error(
                Diagnostic(
                    Location(shown),
                    f"this file was not generated by gradgen; left untouched{hint}",
                )
            )
            return
        if verdict is write.Verdict.UP_TO_DATE:
            report.line(f"unchanged {shown}", detail=True)
            return
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
    diff: Annotated[
        bool, typer.Option("--diff", help="Print a unified diff of what would change.")
    ] = False,
    fail_fast: FailFast = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Exit 1 if any generated module is stale or missing (0 if all are up to date).

    Fast: a module whose header records this gradgen version and the spec's hash
    and path, and whose body hash still matches, is up to date without deriving.
    """
    report = Reporter(quiet, verbose)
    run = Run(report)
    with _guard(run):
        jobs = _jobs(specs or [], out, report)
        plans = _plans(jobs, run, fail_fast, trust_headers=True)
        if _clashes(plans, report):
            raise typer.Exit(FAILED)
        stale = 0
        for plan in plans:
            run.job = plan.job
            stale += _check_one(plan, diff, report)
        run.job = None
        if report.errors:
            raise typer.Exit(FAILED)
        if stale:
            s = "s" if stale > 1 else ""
            report.line(
                f"{stale} module{s} would change; run `gradgen generate`", fg="yellow"
            )
        raise typer.Exit(CHANGED if stale else OK)


def _check_one(plan: Plan, diff: bool, report: Reporter) -> int:
    """1 if the module of this plan would change, else 0 (errors are reported)."""
    shown = _display(plan.target)
    g = plan.generated
    if g is None:
        report.line(f"up to date {shown}", detail=True)
        return 0
    try:
        verdict = write.plan_write(g.target, g.text, force=False)
        # Bytes as they are (no newline translation), so a CRLF checkout shows.
        old = (
            g.target.read_bytes().decode("utf-8")
            if verdict is write.Verdict.STALE
            else ""
        )
    except OSError as e:
        report.error(Diagnostic(Location(shown), f"cannot read: {e.strerror or e}"))
        return 0
    if verdict is write.Verdict.UP_TO_DATE:
        report.line(f"up to date {shown}", detail=True)
        return 0
    if verdict is write.Verdict.FOREIGN:
        report.error(
            Diagnostic(
                Location(shown),
                "this file was not generated by gradgen;"
                " `gradgen generate` would refuse to overwrite it",
            )
        )
        return 0
    if verdict is write.Verdict.MISSING:
        report.line(f"missing {shown} (from {plan.job.display})", fg="yellow")
    else:
        edited = " (edited by hand)" if not write.body_intact(old) else ""
        report.line(f"would change {shown}{edited}", fg="yellow")
    if diff:
        report.diff(write.unified_diff(old, g.text, shown.replace(os.sep, "/")))
    return 1
