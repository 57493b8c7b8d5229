"""Project configuration: the ``[tool.gradgen]`` table of the nearest pyproject.toml.

```toml
[tool.gradgen]
specs = ["examples"]        # spec files or folders, relative to the pyproject's folder
out = "generated"           # default output folder
explain = true              # also write <name>.md, the derivation, beside each module
strict = true               # warnings are errors, as with --strict (default false)
backend = "array-api"       # write every module for this backend (default: each
                            # spec's own `backend`)
threads = true              # threaded loss_and_gradients, as with --threads

[tool.gradgen.overrides."examples/mlp.yaml"]
out = "generated/nets"      # output folder for this spec
name = "mlp_v2"             # module name for this spec
backend = "numpy"           # backend for this spec
threads = false             # this spec's module is plain (or true: threaded)
```

Problems are reported as one `SpecError` in the pyproject.toml, each naming the
offending key by its path, as black does: ``[tool.gradgen.overrides."x.yaml"].out``
(a TOML syntax error, found before any key, keeps tomllib's line and column).
"""

from __future__ import annotations

import keyword
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gradgen.errors import Collector, Diagnostic, Location, SpecError, did_you_mean

__all__ = ["Config", "KeyLocation", "SpecOverride", "find_pyproject", "load_config"]

PYPROJECT = "pyproject.toml"
_KEYS = ("specs", "out", "explain", "strict", "backend", "threads", "overrides")
_OVERRIDE_KEYS = ("out", "name", "backend", "threads")
#: The backends a module can be written for (`spec.BACKENDS`, not imported: reading
#: the configuration stays cheap).
_BACKENDS = ("numpy", "array-api")
_TABLE = ("tool", "gradgen")
_TOML_POSITION = re.compile(
    r"\s*\((?:at line (?P<line>\d+), column (?P<col>\d+)|at end of document)\)$"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, order=True)
class KeyLocation(Location):
    """A key of the pyproject.toml, named by its path instead of a line and column:
    ``pyproject.toml:[tool.gradgen.overrides."x.yaml"].out``."""

    keys: tuple[str, ...] = ()

    @property
    def key_path(self) -> str:
        """The key in its table: ``[tool.gradgen].out``; ``[tool]`` for ("tool",)."""
        *table, key = [_toml_key(k) for k in self.keys] or [""]
        return f"[{'.'.join(table)}].{key}" if table else f"[{key}]"

    def __str__(self) -> str:
        return f"{self.path}:{self.key_path}"


def _toml_key(key: str) -> str:
    """`key` as written in TOML: bare if it can be, else a quoted basic string."""
    if _BARE_KEY.fullmatch(key):
        return key
    escaped = (
        {'"': '\\"', "\\": "\\\\"}.get(c, c if c.isprintable() else f"\\U{ord(c):08x}")
        for c in key
    )
    return f'"{"".join(escaped)}"'


@dataclass(frozen=True)
class SpecOverride:
    """Per-spec option overrides; None means "use the project default"."""

    out: Path | None = None  # absolute, resolved against the project root
    name: str | None = None  # module name (a Python identifier)
    backend: str | None = None  # "numpy" or "array-api": overrides the spec's
    threads: bool | None = None  # the threaded loss_and_gradients


@dataclass(frozen=True)
class Config:
    root: Path  # directory containing the pyproject.toml
    specs: tuple[Path, ...]  # absolute; files or folders, as listed
    out: Path  # absolute; default root / "generated"
    overrides: Mapping[Path, SpecOverride]  # key: absolute resolved spec file path
    pyproject: Path  # the pyproject.toml the settings came from
    explain: bool = False  # write <name>.md, the explanation, beside each module
    strict: bool = False  # warnings are errors, as with --strict
    backend: str | None = None  # every module's backend, overriding the specs'
    threads: bool = False  # threaded loss_and_gradients, as with --threads

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
    if not isinstance(table, dict):
        errors.error(KeyLocation(where, keys=_TABLE), "`tool.gradgen` must be a table")
        errors.raise_if_any()

    root = pyproject.parent
    for key in table:
        if key not in _KEYS:
            errors.error(
                KeyLocation(where, keys=(*_TABLE, key)),
                f"unknown key `{key}` in [tool.gradgen]{did_you_mean(key, _KEYS)}",
            )
    specs = _specs(table.get("specs", []), where, root, errors)
    out = root / "generated"
    if "out" in table:
        at = KeyLocation(where, keys=(*_TABLE, "out"))
        out = _path(table["out"], "out", at, root, errors) or out
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        errors.error(
            KeyLocation(where, keys=(*_TABLE, "strict")),
            f"`strict` must be true or false, not {_show(strict)}",
        )
    backend = _backend(
        table.get("backend"), KeyLocation(where, keys=(*_TABLE, "backend")), errors
    )
    threads = table.get("threads", False)
    if not isinstance(threads, bool):
        errors.error(
            KeyLocation(where, keys=(*_TABLE, "threads")),
            f"`threads` must be true or false, not {_show(threads)}",
        )
    overrides = _overrides(table.get("overrides", {}), where, root, errors)
    explain = table.get("explain", False)
    if not isinstance(explain, bool):
        errors.error(
            KeyLocation(where, keys=(*_TABLE, "explain")),
            f"`explain` must be a boolean (true or false), not {_show(explain)}",
        )
    errors.raise_if_any()
    return Config(
        root=root,
        specs=specs,
        out=out,
        overrides=MappingProxyType(overrides),
        pyproject=pyproject,
        explain=explain is True,
        strict=strict is True,
        backend=backend,
        threads=threads is True,
    )


def _backend(value: object, location: Location, errors: Collector) -> str | None:
    """A `backend` setting: "numpy" or "array-api" (None when absent or invalid)."""
    if value is None:
        return None
    if value not in _BACKENDS:
        errors.error(
            location, f'`backend` must be "numpy" or "array-api", not {_show(value)}'
        )
        return None
    return str(value)


def _specs(raw: object, where: str, root: Path, errors: Collector) -> tuple[Path, ...]:
    """The `specs` setting: a path string or a list of them, resolved, deduplicated."""
    location = KeyLocation(where, keys=(*_TABLE, "specs"))
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
    raw: object, where: str, root: Path, errors: Collector
) -> dict[Path, SpecOverride]:
    """The `overrides` table, keyed by resolved spec path."""
    if not isinstance(raw, dict):
        errors.error(
            KeyLocation(where, keys=(*_TABLE, "overrides")),
            "`overrides` must be a table of tables keyed by spec path, "
            f"not {_kind(raw)}",
        )
        return {}
    overrides: dict[Path, SpecOverride] = {}
    seen: dict[Path, str] = {}
    for spec_key, options in raw.items():
        at = KeyLocation(where, keys=(*_TABLE, "overrides", spec_key))
        override = _override(spec_key, options, at, root, errors)
        if override is None:
            continue
        spec_path = (root / spec_key).resolve()
        if spec_path in seen:
            errors.error(
                at,
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
    at: KeyLocation,
    root: Path,
    errors: Collector,
) -> SpecOverride | None:
    """One override entry, validated; None (with errors recorded) when invalid."""
    if not spec_key.strip():
        errors.error(at, "override keys must be non-empty spec paths")
        return None
    if not isinstance(options, dict):
        errors.error(
            at,
            f"override for `{spec_key}` must be a table "
            f'([tool.gradgen.overrides."{spec_key}"]), not {_kind(options)}',
        )
        return None
    valid = True
    for key in options:
        if key not in _OVERRIDE_KEYS:
            errors.error(
                _inner(at, key),
                f"unknown key `{key}` in override for `{spec_key}`"
                f"{did_you_mean(key, _OVERRIDE_KEYS)}",
            )
            valid = False
    out = None
    if "out" in options:
        out = _path(options["out"], "out", _inner(at, "out"), root, errors)
        valid = valid and out is not None
    name = options.get("name")
    if name is not None and not (
        isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
    ):
        errors.error(
            _inner(at, "name"),
            f"`name` must be a valid Python module name, not {_show(name)}",
        )
        valid = False
    backend = _backend(options.get("backend"), _inner(at, "backend"), errors)
    valid = valid and (backend is not None or "backend" not in options)
    threads = options.get("threads")
    if threads is not None and not isinstance(threads, bool):
        errors.error(
            _inner(at, "threads"),
            f"`threads` must be true or false, not {_show(threads)}",
        )
        valid = False
    if not valid:
        return None
    return SpecOverride(out=out, name=name, backend=backend, threads=threads)


def _inner(table: KeyLocation, key: str) -> KeyLocation:
    """The location of `key` inside the table at `table`."""
    return KeyLocation(table.path, keys=(*table.keys, key))


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
