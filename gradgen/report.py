"""How the command line reports: results to stdout, errors to stderr, colour only on
a terminal, and a gradgen bug or Ctrl-C as an exit code, never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

import typer

from .errors import WARNING, Diagnostic
from .plan import Job

OK, CHANGED, FAILED, INTERNAL_ERROR, INTERRUPTED = 0, 1, 2, 3, 130
Style = Callable[[str], str]
_BOLD, _RED = partial(typer.style, bold=True), partial(typer.style, fg="red", bold=True)
_MAGENTA = partial(typer.style, fg="magenta", bold=True)  # "warning: ", as gcc's
_GREEN, _CYAN, _MINUS = (partial(typer.style, fg=c) for c in ("green", "cyan", "red"))
_DIFF = {"+++": _BOLD, "---": _BOLD, "@@": _CYAN, "+": _GREEN, "-": _MINUS}


@dataclass
class Reporter:
    """Results to stdout, errors and warnings to stderr; colour only on a terminal without
    ``NO_COLOR`` (https://no-color.org). `quiet` drops all but errors and output
    asked for (diffs, dumps); `verbose` adds unchanged modules."""

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
def run(quiet: bool, verbose: bool) -> Iterator[Reporter]:
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
