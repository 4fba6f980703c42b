"""A config section built from a raw dict: each value checked against its field's type and range.

Knows nothing of any particular section: ``build_section(cls, data, prefix)`` takes any
dataclass whose fields carry ``gt``/``ge``/``le`` metadata (``jfb.config``). Errors are one-line
:class:`jfb.errors.ConfigError` messages naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from jfb.errors import ConfigError


def unknown_key_message(dotted: str, known: Mapping[str, Any]) -> str:
    """``unknown key 'DOTTED'``, with the closest known key of its section as a suggestion."""
    leaf = dotted.rsplit(".", 1)[-1]
    msg = f"unknown key '{dotted}'"
    close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1)
    if close:
        prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
        msg += f" (did you mean '{prefix}{close[0]}'?)"
    return msg


class _ShortRepr(reprlib.Repr):
    """A bounded repr for error messages: at most 4 items per container, 3 levels deep, 60
    characters per string, and dicts in their own order (reprlib sorts a dict's keys first), so
    describing a value visits O(1) of it whatever its size; a 345-byte YAML alias bomb stands
    for 9^8 strings, and ``repr()`` of it took seconds and hundreds of MB."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = self.maxother = 60
        self.maxlong = 40

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items + (["..."] if len(x) > self.maxdict else [])) + "}"


_SHORT_REPR = _ShortRepr()


def describe(value: Any) -> str:
    """``"TYPE REPR"`` for an error message, REPR bounded (see :class:`_ShortRepr`) and cut to
    60 characters."""
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print; the type is enough
        text = "<...>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved type annotations of a section's fields (cached)."""
    if cls not in _HINTS_CACHE:
        _HINTS_CACHE[cls] = typing.get_type_hints(cls)
    return _HINTS_CACHE[cls]


def choices(section: type, key: str) -> tuple[Any, ...]:
    """The values a ``Literal`` key of a config section allows, e.g.
    ``choices(ModelConfig, "kind")`` -> ``("degrad", "deprox", "deadmm", "feedforward")``."""
    tp = _hints(section)[key]
    if typing.get_origin(tp) is not Literal:
        raise TypeError(f"{section.__name__}.{key} is not a Literal key")  # a bug of the caller
    return typing.get_args(tp)


def build_section(cls: type, data: Any, prefix: str) -> Any:
    """The dataclass ``cls`` from a (partial) dict: missing keys take their defaults, every value
    (defaults too) is type- and range-checked; errors name ``PREFIX.key``."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of keys, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_key_message(f"{prefix}{key}", fields))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, fld in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        value = _coerce(hints[name], data[name], dotted)
        _check_range(fld, value, dotted)
        kwargs[name] = value
    obj = cls(**kwargs)
    # Defaults of nested sections are built by their factories; range-check defaults too.
    for name, fld in fields.items():
        if name not in data:
            _check_range(fld, getattr(obj, name), f"{prefix}{name}")
    return obj


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    """``value`` as the annotation ``tp`` allows it (see ``jfb.config``'s rules), or ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, dotted + ".")
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(inner[0], value, dotted)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{dotted}: expected one of {allowed}, got {describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{dotted}: expected bool, got {describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"{dotted}: expected int, got {describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
            if math.isnan(out):
                raise ConfigError(f"{dotted}: expected a number, got nan")
            return out
        raise ConfigError(f"{dotted}: expected float, got {describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{dotted}: expected str, got {describe(value)}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(value))
        raise ConfigError(f"{dotted}: expected a list, got {describe(value)}")
    raise TypeError(f"{dotted}: unsupported annotation {tp!r}")  # a bug in this module


def _check_range(fld: dataclasses.Field, value: Any, dotted: str) -> None:
    """ConfigError when a number (or each number of a tuple) is outside its field's limits."""
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            _check_range(fld, v, f"{dotted}[{i}]")
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    gt, ge, le = fld.metadata.get("gt"), fld.metadata.get("ge"), fld.metadata.get("le")
    if gt is not None and not value > gt:
        raise ConfigError(f"{dotted}: must be > {gt}, got {value!r}")
    if ge is not None and not value >= ge:
        raise ConfigError(f"{dotted}: must be >= {ge}, got {value!r}")
    if le is not None and not value <= le:
        raise ConfigError(f"{dotted}: must be <= {le}, got {value!r}")
    if isinstance(value, float) and math.isinf(value) and (gt is not None or ge is not None):
        raise ConfigError(f"{dotted}: must be finite, got {value!r}")
