"""Plain data (parsed YAML or JSON) to typed, frozen dataclasses, by their field annotations.

`build(cls, data)` checks every value against its annotation and raises `ConfigError` naming the dotted
field (``train.epochs``) for an unknown key, a wrong type or a non-finite number. Supported annotations:
bool, int, float, str, nested dataclasses, `X | None`, `tuple[X, ...]` (a single scalar stands for a
one-item tuple of scalars), and classes that read their own values with a `from_plain(value, where)`
classmethod (`farm.config.QuerySpec`). Range checks belong to the config (`farm.config.validate`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from farm.errors import ConfigError, shown

_SCALARS = (int, float, str)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _union(value, tp, where: str):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    others = [a for a in args if a is not type(None)]
    if len(others) == 1 and dataclasses.is_dataclass(others[0]):
        return convert(value, others[0], where)  # keep the section's own, more specific error
    for arg in others:
        try:
            return convert(value, arg, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {shown(value)}")


def _tuple(value, tp, where: str) -> tuple:
    (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
    if isinstance(value, _SCALARS) and not isinstance(value, bool) and item in _SCALARS:
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {shown(value)}")
    return tuple(convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):  # YAML's .nan/.inf: every float field is a rate, a size or a bound
        raise ConfigError(f"{where}: expected a finite number, got {shown(value)}")
    return number


def convert(value, tp, where: str):
    """Check/convert one plain value to the annotated type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(value, tp, where)
    if origin is tuple:
        return _tuple(value, tp, where)
    if hasattr(tp, "from_plain"):
        return tp.from_plain(value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
        return value
    if tp is float:
        return _number(value, where)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {shown(value)}")
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")


def build(cls, data, where: str = ""):
    """An instance of dataclass `cls` from a mapping (None: all defaults); its fields converted by `convert`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"unknown config key {full!r} (valid: {', '.join(names)})")
    kwargs = {k: convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)
