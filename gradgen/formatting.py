"""Formatting: the rendered module through black, pinned to one major version so
output is byte-stable (black changes its stable style only once a year)."""

from __future__ import annotations

import black
from black.mode import TargetVersion

MODE = black.Mode(target_versions={TargetVersion.PY311}, line_length=88)


def format_python(source: str) -> str:
    """black-formatted source; a failure here is a gradgen bug, never a user error."""
    return black.format_str(source, mode=MODE)
