"""Project configuration: the ``[tool.gradgen]`` table of the nearest pyproject.toml.

```toml
[tool.gradgen]
specs = ["examples"]        # spec files or folders, relative to the pyproject's folder
out = "generated"           # default output folder

[tool.gradgen.overrides."examples/mlp.yaml"]
out = "generated/nets"      # output folder for this spec
name = "mlp_v2"             # module name for this spec
```

Problems are reported as one `SpecError` located in the pyproject.toml, at the
line (and column) of the offending key where it can be found.
"""

from __future__ import annotations

import keyword
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gradgen.errors import Collector, Diagnostic, Location, SpecError, did_you_mean

__all__ = ["Config", "SpecOverride", "find_pyproject", "load_config"]

PYPROJECT = "pyproject.toml"
_KEYS = ("specs", "out", "overrides")
_OVERRIDE_KEYS = ("out", "name")
_TABLE = ("tool", "gradgen")
_TOML_POSITION = re.compile(
    r"\s*\((?:at line (?P<line>\d+), column (?P<col>\d+)|at end of document)\)$"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SpecOverride:
    """Per-spec option overrides; None means "use the project default"."""

    out: Path | None = None  # absolute, resolved against the project root
    name: str | None = None  # module name (a Python identifier)


@dataclass(frozen=True)
class Config:
    root: Path  # directory containing the pyproject.toml
    specs: tuple[Path, ...]  # absolute; files or folders, as listed
    out: Path  # absolute; default root / "generated"
    overrides: Mapping[Path, SpecOverride]  # key: absolute resolved spec file path
    pyproject: Path  # the pyproject.toml the settings came from

    def override_for(self, spec: Path) -> SpecOverride:
        """The overrides for spec file `spec` (relative paths are against root)."""
        return self.overrides.get((self.root / spec).resolve(), SpecOverride())


def find_pyproject(start: Path) -> Path | None:
    """The first pyproject.toml found walking up from `start` to the filesystem root."""
    start = Path(start).resolve()
    if start.is_file():
        start = start.parent
    for directory in (start, *start.parents):
        candidate = directory / PYPROJECT
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def load_config(start: Path) -> Config | None:
    """The gradgen configuration from the pyproject.toml nearest to `start`.

    None if there is no pyproject.toml or it has no ``[tool.gradgen]`` table (the
    search stops at the nearest pyproject.toml, like black's). Raises SpecError
    for unreadable or invalid TOML and for invalid settings, reporting all of them.
    """
    pyproject = find_pyproject(start)
    if pyproject is None:
        return None
    where = str(pyproject)
    try:
        text = pyproject.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [_diag(where, 1, 1, f"cannot read {PYPROJECT}: {exc}")]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([_toml_error(where, text, exc)]) from exc

    tool = data.get("tool")
    if not isinstance(tool, dict) or "gradgen" not in tool:
        return None
    table = tool["gradgen"]
    errors = Collector()
    locate = _Locator(where, text)
    if not isinstance(table, dict):
        errors.error(locate(_TABLE), "`tool.gradgen` must be a table")
        errors.raise_if_any()

    root = pyproject.parent
    for key in table:
        if key not in _KEYS:
            errors.error(
                locate((*_TABLE, key)),
                f"unknown key `{key}` in [tool.gradgen]{did_you_mean(key, _KEYS)}",
            )
    specs = _specs(table.get("specs", []), locate, root, errors)
    out = root / "generated"
    if "out" in table:
        out = _path(table["out"], "out", locate((*_TABLE, "out")), root, errors) or out
    overrides = _overrides(table.get("overrides", {}), locate, root, errors)
    errors.raise_if_any()
    return Config(
        root=root,
        specs=specs,
        out=out,
        overrides=MappingProxyType(overrides),
        pyproject=pyproject,
    )


def _specs(
    raw: object, locate: _Locator, root: Path, errors: Collector
) -> tuple[Path, ...]:
    """The `specs` setting: a path string or a list of them, resolved, deduplicated."""
    location = locate((*_TABLE, "specs"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        errors.error(
            location, f"`specs` must be a list of paths (strings), not {_kind(raw)}"
        )
        return ()
    specs: list[Path] = []
    for item in raw:
        if not isinstance(item, str) or not item:
            errors.error(
                location,
                f"`specs` entries must be non-empty strings, not {_show(item)}",
            )
            continue
        resolved = (root / item).resolve()
        if resolved not in specs:
            specs.append(resolved)
    return tuple(specs)


def _overrides(
    raw: object, locate: _Locator, root: Path, errors: Collector
) -> dict[Path, SpecOverride]:
    """The `overrides` table, keyed by resolved spec path."""
    if not isinstance(raw, dict):
        errors.error(
            locate((*_TABLE, "overrides")),
            "`overrides` must be a table of tables keyed by spec path, "
            f"not {_kind(raw)}",
        )
        return {}
    overrides: dict[Path, SpecOverride] = {}
    seen: dict[Path, str] = {}
    for spec_key, options in raw.items():
        keys = (*_TABLE, "overrides", spec_key)
        override = _override(spec_key, options, keys, locate, root, errors)
        if override is None:
            continue
        spec_path = (root / spec_key).resolve()
        if spec_path in seen:
            errors.error(
                locate(keys),
                f"overrides `{seen[spec_path]}` and `{spec_key}` name the same "
                f"spec ({spec_path})",
            )
            continue
        seen[spec_path] = spec_key
        overrides[spec_path] = override
    return overrides


def _override(
    spec_key: str,
    options: object,
    keys: tuple[str, ...],
    locate: _Locator,
    root: Path,
    errors: Collector,
) -> SpecOverride | None:
    """One override entry, validated; None (with errors recorded) when invalid."""
    if not spec_key.strip():
        errors.error(locate(keys), "override keys must be non-empty spec paths")
        return None
    if not isinstance(options, dict):
        errors.error(
            locate(keys),
            f"override for `{spec_key}` must be a table "
            f'([tool.gradgen.overrides."{spec_key}"]), not {_kind(options)}',
        )
        return None
    valid = True
    for key in options:
        if key not in _OVERRIDE_KEYS:
            errors.error(
                locate((*keys, key)),
                f"unknown key `{key}` in override for `{spec_key}`"
                f"{did_you_mean(key, _OVERRIDE_KEYS)}",
            )
            valid = False
    out = None
    if "out" in options:
        out = _path(options["out"], "out", locate((*keys, "out")), root, errors)
        valid = valid and out is not None
    name = options.get("name")
    if name is not None and not (
        isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
    ):
        errors.error(
            locate((*keys, "name")),
            f"`name` must be a valid Python module name, not {_show(name)}",
        )
        valid = False
    return SpecOverride(out=out, name=name) if valid else None


def _path(
    value: object, key: str, location: Location, root: Path, errors: Collector
) -> Path | None:
    """`value` as an absolute path against `root`, or None (with an error)."""
    if isinstance(value, str) and value:
        return (root / value).resolve()
    errors.error(
        location, f"`{key}` must be a non-empty path string, not {_show(value)}"
    )
    return None


def _kind(value: object) -> str:
    """A TOML-ish name for the type of `value`."""
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    for python_type, name in names.items():
        if isinstance(value, python_type):
            return name
    return "a date/time"


def _show(value: object) -> str:
    """`value` with its kind, for messages."""
    if isinstance(value, dict | list):
        return _kind(value)
    return f"{_kind(value)} ({value!r})"


def _diag(where: str, line: int, col: int, message: str) -> Diagnostic:
    return Diagnostic(Location(where, line, col), message)


def _toml_error(where: str, text: str, exc: tomllib.TOMLDecodeError) -> Diagnostic:
    """A diagnostic for a TOML syntax error, at the position tomllib reports."""
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line, col = 1, 1
    if match is not None:
        message = message[: match.start()]
        if match["line"]:
            line, col = int(match["line"]), int(match["col"])
        else:
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return _diag(where, line, col, f"invalid TOML: {message}")


class _Locator:
    """Finds the position of a (possibly nested) key in the TOML source text.

    A best-effort textual search: each key of the path is searched for after the
    previous one, as a bare or quoted key in a table header, a dotted key, an
    assignment or an inline table. Falls back to the last key found, else line 1.
    """

    def __init__(self, where: str, text: str) -> None:
        self.where = where
        self.text = text

    def __call__(self, keys: Sequence[str]) -> Location:
        position = 0
        found: int | None = None
        for key in keys:
            hit = self._find(key, position)
            if hit is None:
                hit = self._find(key, 0)
            if hit is None:
                break
            found, position = hit
        if found is None:
            return Location(self.where, 1, 1)
        line = self.text.count("\n", 0, found) + 1
        col = found - (self.text.rfind("\n", 0, found) + 1) + 1
        return Location(self.where, line, col)

    def _find(self, key: str, start: int) -> tuple[int, int] | None:
        """(start, end) of the first plausible occurrence of `key` from `start`."""
        forms = [re.escape(f'"{key}"'), re.escape(f"'{key}'")]
        if _BARE_KEY.fullmatch(key):
            forms.append(re.escape(key))
        pattern = re.compile(
            rf"(?<![\w\"'-])(?:{'|'.join(forms)})(?![\w-])[ \t]*(?P<after>[=.\]])"
        )
        for match in pattern.finditer(self.text, start):
            line_start = self.text.rfind("\n", 0, match.start()) + 1
            before = self.text[line_start : match.start()]
            if "#" in before:
                continue  # (probably) in a comment
            stripped = before.strip()
            is_header = stripped.startswith("[") and (
                stripped in ("[", "[[") or stripped.endswith(".")
            )
            if match["after"] == "]" and not is_header:
                continue  # an array element, not a table header
            if stripped and stripped[-1] not in "[.{," and not stripped.startswith("["):
                continue  # a value, not a key
            return match.start(), match.end() - 1
        return None
