"""Located errors: every problem carries the spec position it came from.

Errors are values (`Diagnostic`), collected while a stage runs and raised together
as one `SpecError`, so a user sees every problem in a spec at once, compiler-style:
``path:line:col: error: message``.

Warnings are `Diagnostic`s too, with ``severity="warning"``: code that numpy would
run without complaint but that is almost certainly a mistake (an N x N broadcast, a
param the loss ignores). A stage collects them as values and returns them with its
result; it never prints them. `--strict` turns them into errors (`strict`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """A position in a spec file; line and column are 1-based."""

    path: str
    line: int = 1
    col: int = 1

    def shifted(self, offset: int) -> Location:
        """The location `offset` characters further along the same line."""
        return Location(self.path, self.line, self.col + offset)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


ERROR, WARNING = "error", "warning"


@dataclass(frozen=True, order=True)
class Diagnostic:
    location: Location
    message: str
    severity: str = ERROR  # ERROR or WARNING

    def format(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


def strict(warnings: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Warnings as errors (`--strict`), each saying why it is one."""
    return [
        Diagnostic(w.location, f"{w.message} [strict]")
        for w in warnings
        if w.severity == WARNING
    ]


class SpecError(Exception):
    """One or more problems with a spec; `diagnostics` holds them all, in file order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class Collector:
    """Accumulates diagnostics so a stage can report everything it found."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []  # errors
        self.warnings: list[Diagnostic] = []  # returned with the stage's result

    def error(self, location: Location, message: str) -> None:
        self.diagnostics.append(Diagnostic(location, message))

    def warning(self, location: Location, message: str) -> None:
        self.warnings.append(Diagnostic(location, message, WARNING))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)

    def __bool__(self) -> bool:
        """Whether any error was found (warnings do not count)."""
        return bool(self.diagnostics)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean `x`?)' suffix naming the closest candidate, or ''."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
