"""Frozen config dataclasses from JSON-like dicts (no tubelet imports: every layer may use it)."""

from __future__ import annotations

import dataclasses
import types
import typing


def from_dict(cls, data: dict, *, what: str):
    """Build dataclass `cls` from `data`, turning JSON lists back into the tuples the fields declare.

    Raises:
        ValueError: a key that is not a field of `cls` (named, with `what` saying which config it is).
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _tuples(value, hints[key]) for key, value in data.items()})


def _tuples(value, annotation):
    if isinstance(value, list) and _is_tuple(annotation):
        return tuple(value)
    return value


def _is_tuple(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(arg) for arg in typing.get_args(annotation))
    return annotation is tuple or origin is tuple


def opt(default, help: str):
    """A config field with its documentation: ``lr: float = opt(1e-3, "peak learning rate")``.

    The text is the field's ``--help`` (`field_help`) and what an error about it can quote; mutable defaults are
    not allowed in frozen configs, so `default` is a plain value.
    """
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(cls) -> dict[str, str]:
    """Each field's documentation (`opt`), by name."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
