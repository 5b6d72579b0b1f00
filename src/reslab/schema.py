"""How a config section is declared and checked: dataclass fields with ``option(default, check, doc)``, and
``read_section(cls, raw, where)``, which turns a plain mapping into that dataclass or raises one ``ConfigError``
naming the key path at fault. Every config section of reslab (data, train, and the plug-ins' ResBuilder,
analysis and distillation sections) uses it; a field may itself be a section (``data.augment``). A section
that must also be valid when built in code calls ``check_fields(self, where)`` from ``__post_init__``.
Plain Python (no torch), below every package that has settings."""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field, fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad configuration; the message names the key path (and the file, when there is one)."""


Check = Callable[[Any], str | None]  # returns what the value must be, when it is wrong


def choice(*allowed: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else "one of " + ", ".join(map(str, allowed))

    return check


def at_least(low: float, *, strict: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        bad = value <= low if strict else value < low
        return f"{'>' if strict else '>='} {low}" if bad or math.isnan(value) else None

    return check


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = True) -> Check:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        return None if ok else f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    return check


def option(default: Any, check: Check | None = None, doc: str = "") -> Any:
    """A config field: its default, a value check and a one-line description (``reslab train --help``)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"check": check, "doc": doc})
    return field(default=default, metadata={"check": check, "doc": doc})


def read_section(cls: type, raw: Any, where: str) -> Any:
    """``raw`` (a mapping; ``None``: all defaults) as the section ``cls``; unknown keys and bad values raise."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of settings, got {type(raw).__name__} {raw!r}")
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(allowed)})")
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _read_field(f, raw[f.name], hints[f.name], where) for f in fields(cls) if f.name in raw})


def check_fields(section: Any, where: str) -> None:
    """Check every field of a section built in code as ``read_section`` checks a file's (numbers given as
    ints become floats where the field is a float)."""
    hints = typing.get_type_hints(type(section))
    for f in fields(section):
        object.__setattr__(section, f.name, _read_field(f, getattr(section, f.name), hints[f.name], where))


def _read_field(f: Any, value: Any, kind: Any, where: str) -> Any:
    path = f"{where}.{f.name}"
    value = coerce(value, kind, path)
    check = f.metadata.get("check")
    problem = check(value) if check and not isinstance(value, list) else None
    if problem:
        raise ConfigError(f"{path}: must be {problem}; got {value!r}")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce(value: Any, kind: Any, path: str) -> Any:
    """Check ``value`` against a type hint (str, int, float, bool, X | None, list[X], a section)."""
    if is_dataclass(kind):
        return value if isinstance(value, kind) else read_section(kind, value, path)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) > 1:  # X | list[Y]: a list is read as the list type, anything else as X
            lists = [o for o in inner if typing.get_origin(o) is list]
            inner = lists if isinstance(value, list | tuple) and lists else [o for o in inner if o not in lists]
        return coerce(value, inner[0], path)
    if origin is list:
        (inner,) = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list of {inner.__name__}, got {_show(value)}")
        return [coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
        return value
    if kind is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string; accept what is plainly a number.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_show(value)}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_show(value)}")
        if "\0" in value:
            raise ConfigError(f"{path}: a NUL character cannot be part of a name or path, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {kind!r}")  # a bug in the schema, not in the file


def _show(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


__all__ = [
    "Check", "ConfigError", "at_least", "check_fields", "choice", "in_range", "coerce", "option", "read_section"
]
