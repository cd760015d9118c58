"""One way to turn a config value (an instance, a dict of its fields, or None) into a config dataclass, with clear errors."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def check_names(allowed, names, field: str) -> None:
    """Raise a ValueError naming the ``names`` that are not ``allowed`` and every allowed one."""
    unknown = set(names) - set(allowed)
    if unknown:
        raise ValueError(f"unknown {field} field(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")


def check_fields(cls: type, names, field: str) -> None:
    """Raise a ValueError naming the unknown ``names`` and the fields the dataclass ``cls`` allows."""
    check_names({f.name for f in fields(cls)}, names, field)


def coerce_dataclass(cls: type[T], value: Any, field: str, *, none_is_default: bool = True) -> T | None:
    """``cls`` from an instance of it (returned as is), a dict of its fields, or None (``cls()``, or None when
    ``none_is_default`` is false). ``field`` is the config key named in errors, e.g. ``model.fid``."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if value is None:
        return cls() if none_is_default else None
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        check_fields(cls, value, field)
        return cls(**value)
    raise TypeError(f"{field} must be a {cls.__name__} or a dict of its fields; got {type(value).__name__}")


__all__ = ["check_fields", "check_names", "coerce_dataclass"]
