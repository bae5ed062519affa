"""A small validating reader over a YAML mapping.

Every accessor names the full key path in its error, so `msd check-config` can say exactly
which key is wrong, what value it has and what is allowed. Unknown keys are errors too:
a typo in an operator's file must not silently fall back to a default.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from msd.errors import ConfigError

_MISSING = object()


class Section:
    """Typed access to one mapping in the config file, remembering which keys were read."""

    def __init__(self, data: Any, path: str):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "<root>", data, "a mapping of keys to values")
        self._data = data
        self._path = path
        self._read: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._read.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise ConfigError(self.key_path(key), None, "a value (this key is required)")
        return default

    def section(self, key: str) -> "Section":
        return Section(self.raw(key, {}), self.key_path(key))

    def sections(self, key: str) -> list["Section"]:
        items = self.raw(key, [])
        if not isinstance(items, list):
            raise ConfigError(self.key_path(key), items, "a list of mappings")
        return [Section(item, f"{self.key_path(key)}[{i}]") for i, item in enumerate(items)]

    def string(self, key: str, default: Any = _MISSING, *, allow_empty: bool = False) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            raise ConfigError(self.key_path(key), value, "a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.raw(key, None)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key_path(key), value, "a non-empty string or null")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key_path(key), value, "true or false")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not _within(value, lo, hi):
            raise ConfigError(self.key_path(key), value, f"an integer{_range_text(lo, hi)}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
        value = self.raw(key, default)
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if ok and lo_open and lo is not None and value <= lo:
            ok = False
        if not ok or not _within(value, lo, hi):
            bound = f" greater than {lo}" if lo_open else _range_text(lo, hi)
            raise ConfigError(self.key_path(key), value, f"a finite number{bound}")
        return float(value)

    def choice(self, key: str, allowed: Iterable[str], default: Any = _MISSING) -> str:
        allowed = tuple(allowed)
        value = self.raw(key, default)
        if value not in allowed:
            raise ConfigError(self.key_path(key), value, "one of " + ", ".join(allowed))
        return value

    def string_map(self, key: str, default: Any = _MISSING) -> dict[str, str]:
        value = self.raw(key, default)
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
            raise ConfigError(self.key_path(key), value, "a mapping of names to non-empty strings")
        return dict(value)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise ConfigError(self.key_path(unknown[0]), self._data[unknown[0]],
                              "no such key here (known keys: " + ", ".join(sorted(self._read)) + ")")


def _within(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
