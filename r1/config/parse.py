"""Plain mappings -> config dataclasses, strictly: wrong types, unknown keys and values out of bounds are
`ConfigError`s naming the dotted key and what is allowed."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

from r1.config.base import Variant, show
from r1.errors import ConfigError


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


YAML11_BOOLS = {"on": True, "yes": True, "off": False, "no": False}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {show(value)}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in YAML11_BOOLS:
            return YAML11_BOOLS[value.lower()]
        raise ConfigError(f"{key}: expected true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {show(value)}")
    raise ConfigError(f"{key}: unsupported type {type_name(tp)}")


def _pick_variant(cls: type, data: dict, key: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Variant)):
        return cls
    default = next(f.default for f in fields(cls) if f.name == "name")
    name = data.get("name", default)
    found = cls.find_variant(name)
    if found is None:
        raise ConfigError(f"{key}.name: unknown {key} {show(name)}; allowed: {', '.join(sorted(cls._variants))}")
    return found


def from_dict(cls: type, data: dict | None, key: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, strictly. `key` is the dotted prefix for messages."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {show(data)}")
    cls = _pick_variant(cls, data, key)
    if issubclass(cls, Variant):
        data = {**cls.presets(data), **data}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = [k for k in data if k not in known]
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"unknown key {where}; allowed: {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        f, tp, dotted = known[name], hints[name], f"{key}.{name}" if key else name
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, dotted)
            continue
        value = _coerce(value, tp, dotted)
        _check_bounds(value, f.metadata, dotted)
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


def check_bounds(obj: Any, prefix: str) -> None:
    """Choices and min/max of every field of dataclass `obj` (for instances built in code, which
    skip `from_dict`); ConfigError naming `prefix.field`."""
    for f in fields(obj):
        _check_bounds(getattr(obj, f.name), f.metadata, f"{prefix}.{f.name}")


def _check_bounds(value: Any, meta: Any, key: str) -> None:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if value is None:  # an Optional field left unset
        return
    if choices and value not in choices:
        raise ConfigError(f"{key}: {show(value)} is not allowed; allowed: {', '.join(map(str, choices))}")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {show(value)} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {show(value)} is above the maximum {hi}")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain nested dict (YAML-safe)."""
    return dataclasses.asdict(obj) if is_dataclass(obj) else obj
