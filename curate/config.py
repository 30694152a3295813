"""Configs: a YAML file plus trailing ``key=value`` overrides, applied onto frozen dataclasses.

Values in overrides are parsed as YAML scalars (``alpha=10`` is an int, ``lisa=true`` a bool). Unknown keys and
values of the wrong type become one :class:`ConfigError` naming the key as the user wrote it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from curate.errors import ConfigError

T = TypeVar("T")


def load_config(path: Path | None, overrides: list[str]) -> dict[str, Any]:
    """Merge a YAML mapping and ``key=value`` overrides (dotted keys nest) into one dict."""
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError(f"--config: {path} does not exist; pass a YAML file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--config: {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} must hold a mapping of keys to values")
        data = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value (e.g. alpha=10)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data


def build(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``values``, checking names and simple types.

    Raises:
        ConfigError: an unknown key, a wrong type, or a value the dataclass's own validation refuses.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(value, hints.get(key, Any), f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        msg, internal = str(e), f"{cls.__name__}."
        # "ScaleBiOConfig.steps must be > 0" is written "scalebio.steps" on the command line
        if msg.startswith("--"):  # already names the flag
            raise ConfigError(msg) from None
        if msg.startswith(internal):
            raise ConfigError(f"{where}.{msg[len(internal):]}") from None
        raise ConfigError(msg if msg.startswith(f"{where}.") else f"{where}: {msg}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or value is None:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in typing.get_args(hint) and isinstance(value, str) and value.strip().lower() == "none":
            return None  # `recipe.epochs=none` on the command line: YAML only reads null and ~ as None
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} has the wrong type (expected {hint})")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, typing.get_args(hint)))}")
        return value
    if hint in (int, float) and isinstance(value, str):
        value = _number(value, key)  # YAML 1.1 reads 1e-4, 1E-4 and 5e3 as strings; people type them as numbers
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str | int | float):
        return str(value)
    if origin in (list, tuple) and isinstance(value, list | tuple):
        return origin(value)
    if origin is dict and isinstance(value, dict):
        return value
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: {value!r} has the wrong type (expected {getattr(hint, '__name__', hint)})")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(text: str, key: str) -> Any:
    """``1e-4``, ``1E-4``, ``.5``, ``5e3`` and ``1_000`` as numbers; anything else is left for the type check."""
    cleaned = text.strip().replace("_", "")
    if not _NUMBER.fullmatch(cleaned):
        return text
    number = float(cleaned)
    return int(number) if number.is_integer() and not re.search(r"[.eE]", cleaned) else number


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (for ``config.yaml`` and hashing)."""
    return dataclasses.asdict(obj)
