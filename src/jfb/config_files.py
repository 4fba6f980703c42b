"""Config text: reading TOML/YAML/JSON files and ``key=value`` overrides into plain nested dicts,
and writing such a dict as TOML. Knows no section; ``jfb.config`` builds the typed config."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jfb.config_values import unknown_key_message
from jfb.errors import ConfigError

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 fallback
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]


def read_config_file(path: Path) -> Mapping[str, Any]:
    """The top-level table of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file; ConfigError for
    a missing or unreadable file, an unknown suffix, a syntax error or a top level not a table."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if suffix == ".toml":
            if _toml is None:  # pragma: no cover
                raise ConfigError("reading TOML needs Python >= 3.11 or the 'tomli' package")
            data = _toml.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            if data is None:
                data = {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(
                f"config file {path}: unknown format {suffix!r} (use .toml, .yaml, .yml or .json)"
            )
    except ConfigError:
        raise
    except Exception as exc:  # syntax errors of the three parsers
        raise ConfigError(f"config file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a table, got "
                          f"{type(data).__name__}")
    return data


def parse_override_value(text: str) -> Any:
    """Parse the right-hand side of ``key=value`` as a TOML literal, else keep it as a string.

    ``"3e-4"`` -> 0.0003, ``"5"`` -> 5, ``"true"`` -> True, ``"[1, 2]"`` -> [1, 2],
    ``'"5"'`` -> "5", ``"ift"`` -> "ift".
    """
    text = text.strip()
    if _toml is not None:
        try:
            return _toml.loads(f"v = {text}")["v"]
        except Exception:  # noqa: BLE001 - anything that is not a TOML literal is a string
            pass
    return text


def override_dict(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the nested dict ``data`` with ``["train.lr=3e-4", "model.net.depth=5", ...]``
    applied; ``data`` is not modified.

    The key is a dotted path to an existing key; a whole section may be replaced by an inline
    table (``model.net={depth=5, width=32}``: keys not named keep their values).
    """
    out = copy.deepcopy(dict(data))
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, value_text = item.partition("=")
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        parts = key.split(".")
        node: dict[str, Any] = out
        for i, part in enumerate(parts):
            dotted = ".".join(parts[: i + 1])
            if part not in node:
                raise ConfigError(unknown_key_message(dotted, node))
            if i == len(parts) - 1:
                value = parse_override_value(value_text)
                if isinstance(node[part], dict) and isinstance(value, dict):
                    node[part] = _deep_merge(node[part], value)
                else:
                    node[part] = value
            else:
                if not isinstance(node[part], dict):
                    raise ConfigError(f"override {item!r}: '{dotted}' is a value, not a section")
                node = node[part]
    return out


def _deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``new``'s keys replacing its own, section by section (``base`` kept)."""
    out = dict(base)
    for k, v in new.items():
        if isinstance(out.get(k), dict) and isinstance(v, Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _toml_value(value: Any) -> str:
    """One TOML literal (None as "none", which the typed config reads back as None)."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dict_to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text of a nested dict: its values first, then one ``[section]`` table per dict."""
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{prefix}{key}"
        body = dict_to_toml(value, name + ".")
        out += ("\n\n" if out else "") + f"[{name}]\n" + body
    return out.strip("\n") + "\n" if not prefix else out
