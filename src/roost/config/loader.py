"""Read roost.toml (or built-in defaults), apply command-line overrides, validate, explain mistakes.

Every error names the file, the key, what was expected and what was found, and suggests the nearest
valid spelling for unknown keys, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from roost.config.schema import (
    BASE_DIR_CONTEXT,
    CORE_SECTIONS,
    Config,
    ModuleOptions,
    registered_sections,
)

__all__ = ["CONFIG_ENV_VAR", "ConfigError", "ConfigProblem", "discover_modules", "load_config"]

#: Environment variable naming the config file when none is given.
CONFIG_ENV_VAR = "ROOST_CONFIG"

#: Where errors in ``--set``-style overrides are said to come from.
OVERRIDE_SOURCE = "command line"
DEFAULTS_SOURCE = "built-in defaults"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake: where it is (source file, dotted key) and what is wrong."""

    source: str
    key: str  # dotted, e.g. "c2s.max_stanza_bytes"; "" for the whole file
    message: str

    def __str__(self) -> str:
        if not self.key:
            return f"{self.source}: {self.message}"
        section, _, rest = self.key.partition(".")
        where = f"[{section}] {rest}" if rest else f"[{section}]"
        return f"{self.source}: {where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` explains every problem, one per line."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, source: str, key: str, message: str) -> ConfigError:
        return cls([ConfigProblem(source, key, message)])

    @property
    def key(self) -> str:
        """Dotted key of the first problem."""
        return self.problems[0].key if self.problems else ""


def load_config(path: Path | None = None, *, overrides: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration.

    ``path`` None means the file named by ``$ROOST_CONFIG``, else built-in defaults (no file).
    ``overrides`` maps dotted keys to values in TOML syntax (``{"c2s.max_stanza_bytes": "65536"}``);
    a value that is not valid TOML is taken as a string (``{"log.level": "debug"}``).
    """
    if path is None:
        env = os.environ.get(CONFIG_ENV_VAR, "").strip()
        path = Path(env) if env else None
    if path is None:
        source, data, base_dir = DEFAULTS_SOURCE, {}, Path.cwd()
    else:
        source, data = str(path), _read_toml(path)
        path = path.expanduser().absolute()
        base_dir = path.parent
    overridden = _apply_overrides(data, overrides or {})
    return _validate(data, source=source, path=path, base_dir=base_dir, overridden=overridden)


# --- reading -----------------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        raw = path.expanduser().read_bytes()
    except FileNotFoundError:
        raise ConfigError.single(source, "", f"config file not found (looked for {path.absolute()})")
    except IsADirectoryError:
        raise ConfigError.single(source, "", "is a directory, not a config file")
    except OSError as e:
        raise ConfigError.single(source, "", f"cannot read config file: {e.strerror or e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError.single(source, "", f"line {line}: not UTF-8 text (TOML files are UTF-8)")
    if _LISTEN_TABLE.search(text) and _LISTEN_ARRAY.search(text):
        raise ConfigError.single(
            source,
            "listen",
            "uses both the [listen] table (c2s = …, c2s_tls = …) and [[listen]] entries; keep one "
            "form: either [listen] with c2s/c2s_tls, or one [[listen]] entry per listener "
            '(kind = "c2s", address = …)',
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_POSITION.search(message)
        if match:
            reason = message[: match.start()]
            where = f"line {match.group(1)}, column {match.group(2)}"
            raise ConfigError.single(source, "", f"{where}: invalid TOML: {reason}")
        raise ConfigError.single(source, "", f"invalid TOML: {message}")


_LISTEN_TABLE = re.compile(r"^[ \t]*\[[ \t]*listen[ \t]*\][ \t]*(#.*)?$", re.M)
_LISTEN_ARRAY = re.compile(r"^[ \t]*\[\[[ \t]*listen[ \t]*\]\][ \t]*(#.*)?$", re.M)


def _parse_override_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, str]) -> set[str]:
    """Merge ``section.key=value`` overrides into the parsed file; return the keys set."""
    applied: set[str] = set()
    for dotted, text in overrides.items():
        parts = dotted.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError.single(
                OVERRIDE_SOURCE, "", f"{dotted!r}: expected section.key, e.g. 'log.level'"
            )
        table = data
        for i, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError.single(OVERRIDE_SOURCE, where, "is a value, not a table")
            table = child
        table[parts[-1]] = _parse_override_value(text)
        applied.add(".".join(parts))
    return applied


# --- validating --------------------------------------------------------------------------------


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _discover_module(name: str) -> None:
    """Import the feature module that declares ``[name]``, so its section gets registered.

    A module's options live next to its code; the loader cannot know them until it is imported.
    ``roost.modules.<name>`` is tried first, then every built-in module.
    """
    module_name = f"roost.modules.{name}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        importlib.import_module(module_name)
    if name not in registered_sections():
        discover_modules()


_discovered = False


def discover_modules() -> None:
    """Import every built-in feature module once (``roost.modules.all_modules()``, else all files)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    try:
        package = importlib.import_module("roost.modules")
    except ImportError:
        return
    all_modules = getattr(package, "all_modules", None)
    if callable(all_modules):
        all_modules()
        return
    for info in pkgutil.walk_packages(package.__path__, prefix="roost.modules."):
        importlib.import_module(info.name)


def _validate(
    data: dict[str, Any], *, source: str, path: Path | None, base_dir: Path, overridden: set[str]
) -> Config:
    problems: list[ConfigProblem] = []

    def problem(key: str, message: str) -> None:
        is_override = key in overridden or any(key.startswith(k + ".") for k in overridden)
        problems.append(ConfigProblem(OVERRIDE_SOURCE if is_override else source, key, message))

    context = {BASE_DIR_CONTEXT: base_dir}
    # Absent sections are validated too (from {}), so their defaults see the base directory.
    core: dict[str, Any] = {name: {} for name in CORE_SECTIONS}
    modules: dict[str, ModuleOptions] = {}
    for name, value in data.items():
        if name not in CORE_SECTIONS and name not in registered_sections():
            _discover_module(name)
        sections = registered_sections()
        if name in CORE_SECTIONS:
            model: type[BaseModel] = CORE_SECTIONS[name]
        elif name in sections:
            model = sections[name]
        else:
            valid = [*CORE_SECTIONS, *sorted(sections)]
            problem(name, "unknown section" + _suggest(name, valid))
            continue
        if name == "listen" and isinstance(value, list):
            core[name] = value  # [[listen]] entries: checked with the rest of the core below
            continue
        if not isinstance(value, dict):
            problem(name, f"expected a table ([{name}] header), found {_describe(value)}")
            continue
        if name in CORE_SECTIONS:
            core[name] = value
            continue
        try:
            validated = model.model_validate(value, context=context)
        except ValidationError as e:
            for key, message in _explain(e, model, prefix=(name,)):
                problem(key, message)
        else:
            assert isinstance(validated, ModuleOptions)
            modules[name] = validated

    config: Config | None = None
    try:
        config = Config.model_validate(
            {**core, "modules": modules, "path": path, "base_dir": base_dir}, context=context
        )
    except ValidationError as e:
        for key, message in _explain(e, Config, prefix=()):
            problem(key, message)
    if config is not None:
        for key, message in config.consistency_problems():
            problem(key, message)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _describe(value: Any) -> str:
    """A found value as the operator wrote it (TOML-ish), with its kind for non-scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list {_short(value)}"
    return _short(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "path_type": "a path (string)",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


#: How pydantic names the two forms of ``listen`` in error locations.
_LISTEN_FORMS = ("ListenSection", "list[ListenEntry]")


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that owns the last element of ``loc`` (for "did you mean" on unknown keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
        if isinstance(current, type) and issubclass(current, BaseModel):
            continue
        return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _explain(
    error: ValidationError, model: type[BaseModel], prefix: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(dotted key, message)`` an operator understands."""
    out: list[tuple[str, str]] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        if len(loc) >= 2 and loc[1] in _LISTEN_FORMS:
            # [listen] is a table or an array of tables: report only the form the file used.
            if len(loc) == 2 and err["type"] in ("list_type", "model_type", "model_attributes_type"):
                continue
            loc = (loc[0], *loc[2:])
        key = _dotted(prefix + tuple(loc))
        kind = err["type"]
        found = _describe(err.get("input"))
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            choices = list(owner.model_fields) if owner else []
            out.append((key, "unknown key" + _suggest(str(loc[-1]), choices)))
        elif kind == "missing":
            out.append((key, "missing required key"))
        elif kind in _KIND:
            out.append((key, f"expected {_KIND[kind]}, found {found}"))
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            bound = {
                "greater_than_equal": f"at least {_number(ctx.get('ge'))}",
                "greater_than": f"more than {_number(ctx.get('gt'))}",
                "less_than_equal": f"at most {_number(ctx.get('le'))}",
                "less_than": f"less than {_number(ctx.get('lt'))}",
            }[kind]
            bounds = _bounds(model, loc)
            out.append((key, f"expected {bounds or bound}, found {found}"))
        elif kind == "literal_error":
            out.append((key, f"expected one of {ctx.get('expected')}, found {found}"))
        elif kind == "too_short":
            n = ctx.get("min_length")
            out.append((key, f"expected at least {n} item{'s' if n != 1 else ''}, found an empty list"))
        elif kind == "too_long":
            out.append((key, f"expected at most {ctx.get('max_length')} items"))
        elif kind in ("value_error", "assertion_error"):
            cause = ctx.get("error")
            out.append((key, str(cause) if cause is not None else err["msg"]))
        else:
            out.append((key, f"{err['msg']}, found {found}"))
    return out


def _number(value: Any) -> str:
    """0.0 → "0": bounds read as the operator would write them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """``"a value from 1024 to 16777216"`` when a field has both bounds, else ""."""
    owner = _model_at(model, loc)
    if owner is None or not loc or not isinstance(loc[-1], str):
        return ""
    field = owner.model_fields.get(loc[-1])
    if field is None:
        return ""
    low = high = None
    for meta in field.metadata:
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
    if low is None or high is None:
        return ""
    return f"a value from {_number(low)} to {_number(high)}"


def _dotted(loc: tuple[Any, ...]) -> str:
    """("server", "domains", 1) → "server.domains[1]"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
