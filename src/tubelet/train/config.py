"""Typed run configs from YAML files, ``key=value`` overrides and command-line flags.

Precedence: dataclass defaults < YAML file < ``key=value`` overrides < explicit flags. An unknown key or a
value of the wrong type is an error that names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from tubelet.errors import ConfigError


def load_config(cls, *, path: str | Path | None = None, overrides: list[str] = (), flags: dict | None = None):
    """Build a frozen dataclass `cls` from a YAML file, ``key=value`` strings and a dict of flags."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else None
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    return cls(**{key: coerce(key, value, hints[key]) for key, value in values.items()})


def coerce(name: str, value, annotation):
    """Convert a YAML/CLI value to the field's annotated type, or raise ConfigError naming the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else str
        if len(args) == 2 and args[1] is Ellipsis or len(args) <= 1:
            return tuple(coerce(name, v, inner) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {list(value)}")
        return tuple(coerce(name, v, a) for v, a in zip(value, args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return str(value)
    return value


def to_dict(config) -> dict:
    """A config dataclass as plain JSON-able values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
