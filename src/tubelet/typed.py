"""Frozen config dataclasses from JSON-like dicts (no tubelet imports: every layer may use it)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing


def from_dict(cls, data: dict, *, what: str):
    """Build dataclass `cls` from `data`, checking each value against its field's annotation.

    JSON lists become the tuples the fields declare, and an integer given for a float field becomes a float.

    Raises:
        ValueError: `data` is not a dict, a key that is not a field of `cls` (with `what` saying which config it is),
            a required field missing, or a value of the wrong type; the message starts with the field's name.
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected an object of {what} fields, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        others = f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""
        raise ValueError(f"{unknown[0]}: unknown {what} field{others}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [name for name, f in fields.items() if name not in data and _required(f)]
    if missing:
        raise ValueError(f"{missing[0]}: missing (expected {_expected(hints[missing[0]])})")
    return cls(**{key: _checked(key, value, hints[key]) for key, value in data.items()})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _checked(name: str, value, annotation):
    """`value` as field `name` of type `annotation` holds it (lists as tuples, ints as floats).

    Raises:
        ValueError: it does not fit, naming the field and the type expected.
    """
    converted = _convert(value, annotation)
    if converted is _MISFIT:
        raise ValueError(f"{name}: expected {_expected(annotation)}, got {value!r}")
    return converted


_MISFIT = object()


def _convert(value, annotation):
    """`value` converted to `annotation`, or `_MISFIT` (annotations other than the JSON types pass through)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            converted = _convert(value, arg)
            if converted is not _MISFIT:
                return converted
        return _MISFIT
    if annotation is type(None):
        return None if value is None else _MISFIT
    if annotation is bool:
        return value if isinstance(value, bool) else _MISFIT
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISFIT
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else _MISFIT
    if annotation is str:
        return value if isinstance(value, str) else _MISFIT
    if annotation is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _MISFIT
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return _MISFIT
        items = tuple(_convert(item, arg) for item, arg in zip(value, args, strict=True))
        return _MISFIT if any(item is _MISFIT for item in items) else items
    return value


def _expected(annotation) -> str:
    """What a value of `annotation` looks like, in words: ``a number or null``, ``a list of 3 integers``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in args)
    if origin is tuple or annotation is tuple:
        if not args:
            return "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} items ({', '.join(_expected(arg) for arg in args)})"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _plural(annotation) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(annotation, "values")


def check_range(config, *names: str, low: float, strict: bool = False) -> None:
    """Each field of `config` in `names` (a number, a tuple of numbers or None) is >= `low` (> `low` if `strict`).

    Raises:
        ValueError: the first field out of range, named, with the bound and its value.
    """
    for name in names:
        value = getattr(config, name)
        items = value if isinstance(value, tuple) else (value,)
        if any(item is not None and (item <= low if strict else item < low) for item in items):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            what = "values" if isinstance(value, tuple) else "a value"
            raise ValueError(f"{name}: expected {what} {bound}, got {value!r}")


def opt(default, help: str):
    """A config field with its documentation: ``lr: float = opt(1e-3, "peak learning rate")``.

    The text is the field's ``--help`` (`field_help`) and what an error about it can quote; mutable defaults are
    not allowed in frozen configs, so `default` is a plain value.
    """
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(cls) -> dict[str, str]:
    """Each field's documentation (`opt`), by name."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
