"""Planning a run, as data: which specs, where their modules go, which specs clash,
and what to do with each target file. Nothing here prints; every problem is
returned as a `Diagnostic` (or a usage message) for the CLI to report.

Importing this module is cheap on purpose: a module whose header proves it up to
date (same gradgen version, same spec hash and path, intact body) needs no
deriving, so `gradgen check` answers without the pipeline (sympy, black, jinja),
which `derive` imports only when something must be generated.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, write
from .config import Config, SpecOverride, load_config
from .errors import Diagnostic, Location, SpecError, strict
from .load import YMap, YScalar, load_yaml, read_spec_bytes
from .stages import Format, Stage

if TYPE_CHECKING:
    from .pipeline import Generated

SPEC_SUFFIXES = (".yaml", ".yml")
DEFAULT_OUT = Path("generated")


@dataclasses.dataclass(frozen=True)
class Job:
    """One spec to process: where its module goes, and its configured name."""

    spec: Path
    display: str  # the spec's path as shown in messages
    out_dir: Path
    name: str | None  # module name override from [tool.gradgen], if any
    explain: bool = False  # also write <name>.md, the explanation, beside the module
    strict: bool = False  # warnings are errors (--strict, or strict in the config)
    dtype: str | None = None  # --dtype: overrides the spec's `dtype`
    # --backend, or `backend` in [tool.gradgen] (per spec, or for all): overrides the
    # spec's `backend`
    backend: str | None = None
    threads: bool = False  # --threads or the config's: the threaded kernel


@dataclasses.dataclass(frozen=True)
class Selection:
    """The specs of a run, in a fixed order (by resolved path).

    `errors`: specs that could not be listed, or a bad configuration; `usage`: a
    problem with the command as a whole. `stop`: the run ends here (exit 2).
    """

    jobs: tuple[Job, ...] = ()
    errors: tuple[Diagnostic, ...] = ()
    usage: str | None = None
    stop: bool = False


@dataclasses.dataclass(frozen=True)
class Failed:
    """A spec that could not be derived (or read), and why."""

    job: Job
    errors: tuple[Diagnostic, ...]

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """What to report about the spec: its errors."""
        return self.errors


@dataclasses.dataclass(frozen=True)
class Target:
    """A file a job writes, its module or its explanation; `generated` is None when
    the file's header already proves it up to date (then nothing was derived)."""

    job: Job
    path: Path
    generated: Generated | None
    explanation: bool = False  # the Markdown explanation, not the module

    @property
    def text(self) -> str:
        """The file's new text (empty when nothing was derived)."""
        g = self.generated
        if g is None:
            return ""
        return (g.explanation or "") if self.explanation else g.text

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """What to report about the spec: its warnings (none when nothing was
        derived)."""
        return self.generated.warnings if self.generated is not None else ()


class Kind(enum.Enum):
    """What a target file needs."""

    UP_TO_DATE = "up to date"  # nothing: it already holds the module
    WRITE = "write"  # generate: (over)write it, missing or stale
    MISSING = "missing"  # check: it would be created ...
    STALE = "stale"  # ... or replaced,
    EDITED = "edited"  # ... and its body was edited by hand
    REFUSED = "refused"  # it must not (or cannot) be touched: see `Action.refusal`


@dataclasses.dataclass(frozen=True)
class Action:
    """What to do with one target file, decided before doing anything."""

    target: Target
    kind: Kind
    shown: str  # the target's path as shown in messages
    old: str = ""  # check: the file's current text, for a diff
    refusal: Diagnostic | None = None

    @property
    def text(self) -> str:
        """The file's new text (empty when nothing was derived)."""
        return self.target.text

    def diff(self) -> str:
        """A unified diff from the file to the new text."""
        return write.unified_diff(self.old, self.text, self.shown.replace(os.sep, "/"))


def display(path: Path) -> str:
    """A path as the user will recognise it: relative to the current folder if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _os_error(shown: str, doing: str, e: OSError) -> Diagnostic:
    return Diagnostic(Location(shown), f"{doing}: {e.strerror or e}")


def _refused(t: Target, shown: str, why: Diagnostic | str) -> Action:
    refusal = why if isinstance(why, Diagnostic) else Diagnostic(Location(shown), why)
    return Action(t, Kind.REFUSED, shown, refusal=refusal)


# --- which specs ----------------------------------------------------------------------


def _config_start(specs: Sequence[Path]) -> Path:
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

    A folder without specs is returned as is, for `derive` to report.
    """
    if not path.is_dir():
        return [path]
    found = sorted(
        p
        for p in path.iterdir()
        if p.suffix in SPEC_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    return found or [path]


def select(
    specs: Sequence[Path],
    out: Path | None,
    explain: bool | None = None,
    strict: bool = False,
    dtype: str | None = None,
    backend: str | None = None,
    threads: bool = False,
) -> Selection:
    """The specs to process, from the arguments or else from [tool.gradgen], in a
    fixed order (by resolved path) whatever the order they were given in.
    `explain`: write each module's explanation too (None: as [tool.gradgen] says);
    `strict` (or the config's) makes every job treat warnings as errors. The
    backend is the command line's, else the spec's override in the config, else the
    config's, else (None) the spec's own; `threads` (or the config's, or a spec's
    override) asks for the threaded kernel."""
    try:
        config: Config | None = load_config(_config_start(specs))
    except SpecError as e:
        return Selection(errors=tuple(e.diagnostics), stop=True)
    if not specs:
        if config is None or not config.specs:
            return Selection(
                usage="no specs given, and no `specs` in [tool.gradgen] of a"
                " pyproject.toml",
                stop=True,
            )
        specs = config.specs
    default_out = config.out if config is not None else DEFAULT_OUT
    if explain is None:
        explain = config is not None and config.explain
    strict = strict or (config is not None and config.strict)
    jobs: dict[Path, Job] = {}
    errors: list[Diagnostic] = []
    for given in specs:
        try:
            expanded = _expand(given)
        except OSError as e:
            errors.append(_os_error(display(given), "cannot list", e))
            continue
        for spec in expanded:
            key = spec.resolve()
            override = config.override_for(key) if config else SpecOverride()
            spec_out = out if out is not None else (override.out or default_out)
            threaded = threads or (
                override.threads
                if override.threads is not None
                else config is not None and config.threads
            )
            job = Job(
                spec,
                display(spec),
                spec_out,
                override.name,
                explain,
                strict,
                dtype,
                backend
                or override.backend
                or (config.backend if config is not None else None),
                threaded,
            )
            jobs.setdefault(key, job)
    return Selection(tuple(jobs[k] for k in sorted(jobs)), tuple(errors))


# --- which targets --------------------------------------------------------------------


def derive(
    job: Job, dump: Stage | None = None, explain: Format | None = None
) -> Generated | Failed:
    """Run the pipeline on one spec (or up to stage `dump`); the explanation too in
    format `explain`, or as Markdown when the job writes one. A strict job fails on
    warnings, as errors."""
    if not job.spec.is_file():
        problem = (
            f"a folder with no spec files ({', '.join('*' + s for s in SPEC_SUFFIXES)})"
            if job.spec.is_dir()
            else "no such file"
        )
        return Failed(job, (Diagnostic(Location(job.display), problem),))
    from . import pipeline  # heavy (sympy, black, jinja): only when deriving

    if explain is None and job.explain and dump is None:
        explain = Format.MARKDOWN
    try:
        generated = pipeline.generate(
            job.spec,
            job.out_dir,
            name=job.name,
            display=job.display,
            dump=dump,
            explain=explain,
            dtype=job.dtype,
            backend=job.backend,
            threads=job.threads,
        )
        if job.strict and generated.warnings:
            return Failed(job, tuple(strict(generated.warnings)))
        return generated
    except SpecError as e:
        return Failed(job, tuple(e.diagnostics))
    except OSError as e:
        return Failed(job, (_os_error(job.display, "cannot read the spec", e),))


def target(job: Job, *, trust_headers: bool) -> list[Target] | Failed:
    """The files `job` writes (its module, and its explanation if asked for),
    derived unless `trust_headers` and their headers prove them up to date.

    Only `check` trusts headers. `generate` always derives: within one version
    number a development build of gradgen may emit different code, and what
    generate writes must be exactly what this gradgen derives.
    """
    suffixes = (".py", ".md") if job.explain else (".py",)
    if trust_headers and job.spec.is_file():
        paths = [_up_to_date_target(job, suffix) for suffix in suffixes]
        if all(paths):
            return [
                Target(job, p, None, explanation=p.suffix == ".md")
                for p in paths
                if p is not None
            ]
    generated = derive(job)
    if isinstance(generated, Failed):
        return generated
    found = [Target(job, generated.target, generated)]
    if job.explain:
        found.append(Target(job, generated.explanation_target, generated, True))
    return found


def _up_to_date_target(job: Job, suffix: str = ".py") -> Path | None:
    """The module's (or explanation's) path if its header proves it up to date,
    without deriving.

    None when that cannot be decided cheaply (then the caller derives, and
    reports any problem).
    """
    try:
        name = job.name if job.name is not None else _declared_name(job.spec)
        if name is None or not name.isidentifier():
            return None
        path = job.out_dir / f"{name}{suffix}"
        verdict = write.fast_verdict(
            path,
            version=__version__,
            spec_sha256=write.spec_digest(
                read_spec_bytes(job.spec), job.name, job.dtype, job.backend, job.threads
            ),
            spec=write.relative_spec(job.spec, job.out_dir),
        )
    except (OSError, SpecError):
        return None
    return path if verdict is write.Verdict.UP_TO_DATE else None


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


def clashes(targets: Sequence[Target]) -> tuple[Diagnostic, ...]:
    """One error for every spec that would write the same file as an earlier one."""
    by_path: dict[Path, Target] = {}
    errors: list[Diagnostic] = []
    for t in targets:
        first = by_path.setdefault(t.path.resolve(), t)
        if first is not t:
            errors.append(
                Diagnostic(
                    Location(t.job.display),
                    f"module `{t.path.stem}` would overwrite the one generated"
                    f" from {first.job.display} ({display(t.path)});"
                    " give one of them another `name:`",
                )
            )
    return tuple(errors)


# --- what to do with each target ------------------------------------------------------


def write_action(t: Target, *, force: bool) -> Action:
    """For `generate`: WRITE, UP_TO_DATE, or REFUSED (a file gradgen did not
    generate, unless `force`; or one it cannot read)."""
    shown = display(t.path)
    assert t.generated is not None, "generate always derives"
    try:
        verdict = write.plan_write(t.path, t.text, force=force)
    except OSError as e:
        return _refused(t, shown, _os_error(shown, "cannot write", e))
    if verdict is write.Verdict.FOREIGN:
        hint = " (move it away, or pass --force)" if t.path.is_file() else ""
        return _refused(
            t, shown, f"this file was not generated by gradgen; left untouched{hint}"
        )
    if verdict is write.Verdict.UP_TO_DATE:
        return Action(t, Kind.UP_TO_DATE, shown)
    return Action(t, Kind.WRITE, shown)


def apply(action: Action) -> Action:
    """Carry out a WRITE action, atomically: the action done, or refused with the
    error that stopped it."""
    path = action.target.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write.atomic_write(path, action.text)
    except OSError as e:
        return _refused(
            action.target, action.shown, _os_error(action.shown, "cannot write", e)
        )
    return action


def check_action(t: Target) -> Action:
    """For `check`: UP_TO_DATE, MISSING, STALE, EDITED, or REFUSED (a file that
    `generate` would refuse to overwrite, or one that cannot be read)."""
    shown = display(t.path)
    if t.generated is None:
        return Action(t, Kind.UP_TO_DATE, shown)
    try:
        verdict = write.plan_write(t.path, t.text, force=False)
        # Bytes as they are (no newline translation), so a CRLF checkout shows.
        old = (
            t.path.read_bytes().decode("utf-8")
            if verdict is write.Verdict.STALE
            else ""
        )
    except OSError as e:
        return _refused(t, shown, _os_error(shown, "cannot read", e))
    if verdict is write.Verdict.FOREIGN:
        return _refused(
            t,
            shown,
            "this file was not generated by gradgen;"
            " `gradgen generate` would refuse to overwrite it",
        )
    if verdict is write.Verdict.UP_TO_DATE:
        return Action(t, Kind.UP_TO_DATE, shown)
    if verdict is write.Verdict.MISSING:
        return Action(t, Kind.MISSING, shown)
    return Action(t, Kind.STALE if write.body_intact(old) else Kind.EDITED, shown, old)


def explain(job: Job, fmt: Format) -> Generated | Failed:
    """The explanation of one spec, in format `fmt` (`gradgen explain`)."""
    return derive(job, explain=fmt)


def write_file(path: Path, text: str) -> Diagnostic | None:
    """Write `text` to a file the user named (`gradgen explain -o FILE`), atomically;
    the problem if it cannot be written."""
    shown = display(path)
    try:
        write.atomic_write(path, text)
    except OSError as e:
        return _os_error(shown, "cannot write", e)
    return None
