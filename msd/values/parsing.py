"""Numbers and times that come from outside msd: the one place they become Decimal and datetime.

Standard library only, so every layer may use it (the exit rules included). What counts as a
number and as a moment is decided here once; what a given source *allows* (the wire's sane
magnitudes, the config's ranges, order-manager's lax reading of a signal) is decided where that
source is read, on top of these functions.

- Numbers: ints, Decimals, floats (through `repr`, so 0.1 stays Decimal('0.1')) and numeric
  strings (surrounding spaces allowed); never a bool (`True` is an int in Python, never a
  price), never NaN or an infinity.
- Times: ISO-8601 text or epoch seconds/milliseconds; aware UTC datetimes come out.

A refused value raises `InvalidValue` (or the subclass a caller names), which carries `key`,
`value` and `allowed` as attributes, so nobody has to read a message back.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Iterable, Mapping

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class InvalidValue(ValueError):
    """A value cannot be used: `key` names where it came from, `value` is what was given and
    `allowed` what would do. Config validators, the exit rules and the wire checks raise it or a
    subclass of it."""

    def __init__(self, key: str, value: object, allowed: str, *, message: str | None = None):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(message or f"{key}: {shown(value)} is invalid; expected {allowed}")

    @classmethod
    def missing(cls, key: str) -> "InvalidValue":
        """A required key that is absent."""
        return cls(key, None, "a value (this key is required)", message=f"{key}: missing; it is required")


def shown(value: object) -> str:
    """A value as an operator wrote it: a Decimal as its digits, anything else by repr."""
    return str(value) if isinstance(value, Decimal) else repr(value)


# --- numbers ----------------------------------------------------------------------------------

def finite_decimal(value: object) -> Decimal | None:
    """`value` as a finite Decimal, or None when it is not a number (see the module doc).

    This is also exactly what order-manager accepts: `Decimal(str(x))` followed by pydantic's
    finite check (CONTRACTS §1.2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):   # ValueError: an int too long to turn into text
        return None
    return number if number.is_finite() else None


def finite_float(value: object) -> float | None:
    """`value` as a finite float (numbers and numeric strings as for `finite_decimal`), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    number = finite_decimal(value)
    return None if number is None else finite_float(float(number))


def float_or_nan(value: object) -> float:
    """`value` as a finite float, NaN when it is not a number (absent, bool, text, NaN,
    infinity): the form array code keeps a missing number in."""
    number = None if value is None else finite_float(value)
    return math.nan if number is None else number


def to_decimal(key: str, value: object, *, positive: bool = False, non_negative: bool = False,
               allowed: str | None = None, error: type[InvalidValue] = InvalidValue) -> Decimal:
    """`value` as a finite Decimal, or `error(key, value, allowed)`.

    `allowed` defaults to "a finite number" with the sign condition asked for."""
    number = finite_decimal(value)
    if number is None or (positive and number <= 0) or (non_negative and number < 0):
        raise error(key, value, allowed or "a finite number" + (" > 0" if positive else " >= 0" if non_negative else ""))
    return number


def is_real_number(value: object) -> bool:
    """True for finite ints, floats and Decimals; False for bools, strings, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def to_float(key: str, value: object, *, allowed: str, error: type[InvalidValue] = InvalidValue) -> float:
    """A config number (not a string) as a float, or `error(key, value, allowed)`."""
    if not is_real_number(value):
        raise error(key, value, allowed)
    return float(value)


def plain_decimal(value: Decimal) -> str:
    """A Decimal as positional text, no exponent and no trailing zeros: "2", "0.003", "305.52"."""
    return format(value.normalize(), "f")


# --- times ------------------------------------------------------------------------------------

def epoch_microseconds(moment: object) -> int | None:
    """An aware datetime as whole microseconds since the epoch (exact integer), else None."""
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        return None
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def from_epoch(number: object, *, milliseconds: bool) -> datetime | None:
    """An aware UTC datetime from epoch seconds (or `milliseconds`); None when `number` is not a
    finite number or lies beyond the calendar. Which unit a source means is the caller's rule."""
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None
    if isinstance(number, int) and abs(number) > 10 ** 18:    # would overflow float()
        return None
    if not math.isfinite(number):
        return None
    try:
        return _UNIX_EPOCH + (timedelta(milliseconds=number) if milliseconds else timedelta(seconds=number))
    except OverflowError:
        return None


def from_iso(text: object, *, naive: str = "utc") -> datetime | None:
    """A datetime from ISO-8601 text, or None when it is not one.

    `naive` says what a time without an offset becomes: "utc" (taken as UTC), "keep" (left
    naive, as Python's `fromisoformat` gives it) or "refuse" (None). An aware result is converted
    to UTC unless `naive` is "keep" (then it is returned as written)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return {"utc": moment.replace(tzinfo=timezone.utc), "keep": moment}.get(naive)
    if naive == "keep":
        return moment
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:   # e.g. 0001-01-01T00:00+01:00 has no UTC form
        return None


def check_aware(key: str, value: object, *, error: type[InvalidValue] = InvalidValue) -> datetime:
    """`value` if it is a timezone-aware datetime, else `error`."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise error(key, value, "a timezone-aware datetime")
    return value


def aware_time(key: str, value: object, *, error: type[InvalidValue] = InvalidValue) -> datetime:
    """An ISO-8601 time with an offset (as `datetime.isoformat()` writes one), else `error`."""
    moment = from_iso(value, naive="keep") if isinstance(value, str) else None
    if moment is None:
        raise error(key, value, "an ISO 8601 time with offset")
    return check_aware(key, moment, error=error)


# --- symbols ----------------------------------------------------------------------------------

def asset_symbol(key: str, value: object, *, error: type[InvalidValue] = InvalidValue) -> str:
    """An asset as the neighbours spell it (CONTRACTS §1.2, §3.2): a string of 4 to 20 characters,
    uppercase alphanumeric once uppercased; returned uppercased (`btcusdt` -> `BTCUSDT`)."""
    if not isinstance(value, str):
        raise error(key, value, "an asset symbol: 4 to 20 letters and digits, e.g. BTCUSDT")
    upper = value.upper()
    if not (4 <= len(upper) <= 20 and upper.isalnum() and upper.isascii() and upper.isupper()):
        raise error(key, value, "an asset symbol: 4 to 20 letters and digits, e.g. BTCUSDT")
    return upper


# --- mappings ---------------------------------------------------------------------------------

def check_keys(data: object, path: str, required: Iterable[str], optional: Iterable[str]) -> None:
    """`data` must be a mapping with every required key and no unknown key (typos fail loudly)."""
    required, optional = tuple(required), tuple(optional)
    if not isinstance(data, Mapping):
        raise InvalidValue(path, data, "a mapping")
    for key in required:
        if key not in data:
            raise InvalidValue.missing(f"{path}.{key}")
    allowed = set(required) | set(optional)
    for key in data:
        if key not in allowed:
            raise InvalidValue(f"{path}.{key}", data[key], f"no such key; allowed keys are {', '.join(sorted(allowed))}")
