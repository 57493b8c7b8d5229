"""Formatting: the rendered module through black, pinned to one major version so
output is byte-stable (black changes its stable style only once a year)."""

from __future__ import annotations

import functools

import black
from black.mode import TargetVersion

MODE = black.Mode(target_versions={TargetVersion.PY311}, line_length=88)


@functools.lru_cache(maxsize=32)
def format_python(source: str) -> str:
    """black-formatted source; a failure here is a gradgen bug, never a user error.

    black is a pure function of the text (and MODE) and costs tens of milliseconds a
    module (it formats twice), so a process that renders the same module more than
    once (two specs with one text, a program or test suite calling the pipeline again)
    formats it once."""
    return black.format_str(source, mode=MODE)
