"""The config schema's machinery: frozen dataclass fields with their checks, and building them from YAML data.

Standard library only, so that every module with options (spaces, algorithms,
data, baselines) imports it without importing the experiment config, which
imports them all (raysearch.config).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import field


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the dotted field name."""


def spec(default, *, ge=None, gt=None, le=None, lt=None, choices=None, length=None):
    """A dataclass field with its accepted range, choices or list length, checked at load time.

    `choices`: a tuple of values, a registry (its names), or a function returning the names (for a
    field whose choices span several registries)."""
    checks = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, length=length).items()
              if v is not None}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults (configs are frozen)")
    return field(default=default, metadata=checks)


def describe(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(value, tp, path: str):
    """Value converted to type hint `tp`, or a ConfigError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{path}: expected a non-empty list, got {value!r}")
        return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def check_value(value, checks: dict, path: str):
    if value is None:
        return
    choices = checks.get("choices")
    if isinstance(choices, Mapping):
        choices = sorted(choices)
    elif callable(choices):
        choices = choices()
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of: {', '.join(map(str, choices))}")
    if "length" in checks and len(value) != checks["length"]:
        raise ConfigError(f"{path}: expected {checks['length']} values, got {len(value)}")
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        for op, bound, ok in (("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                              ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)):
            if op in checks and not ok(v, checks[op]):
                raise ConfigError(f"{path}: must be {bound} {checks[op]}, got {v!r}")


def build(cls, data, path: str = ""):
    """Instance of dataclass `cls` from a mapping, validating names, types and ranges."""
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "options"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field; accepted: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = coerce(data[name], hints[name], prefix + name)
            check_value(values[name], f.metadata, prefix + name)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required field is missing")
    return cls(**values)


def build_named(cls, key: str, option_types, data, path: str):
    """A section whose `key` field names an entry with its own options: the common fields of `cls`,
    then the entry's options dataclass (`option_types[name]`) from the remaining keys (e.g.
    search.algorithm, space.name)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {data!r}")
    data = dict(data or {})
    common = {k: data.pop(k) for k in [f.name for f in dataclasses.fields(cls)] if k in data}
    if "options" in common:
        raise ConfigError(f"{path}.options: unknown field; put the options directly under {path}")
    base = build(cls, common, path)
    option_type = option_types[getattr(base, key)]
    try:
        options = build(option_type, data, path)
        if hasattr(options, "check"):  # checks that span the common fields and the options
            options.check(base)
    except ConfigError as err:
        if "unknown field" in str(err):
            common_names = [f.name for f in dataclasses.fields(cls) if f.name != "options"]
            accepted = common_names + [f.name for f in dataclasses.fields(option_type)]
            raise ConfigError(str(err).split(";")[0] + f"; accepted: {', '.join(accepted)}") from None
        raise
    return dataclasses.replace(base, options=options)
