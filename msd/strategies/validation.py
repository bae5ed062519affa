"""Small helpers for validating configuration values with messages that name the key.

Every message has the shape `<path>: <value> is invalid; expected <allowed>`, the same shape
as `msd.errors.ConfigError`, so an operator sees one style whichever layer complained.
"""
from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Iterable, Mapping


def invalid(path: str, value: object, allowed: str) -> ValueError:
    """The error to raise for a bad value at `path`."""
    # A Decimal came from a config number; quote it as the operator wrote it, not as Decimal('5').
    shown = str(value) if isinstance(value, Decimal) else repr(value)
    return ValueError(f"{path}: {shown} is invalid; expected {allowed}")


def check_keys(data: object, path: str, required: Iterable[str], optional: Iterable[str]) -> None:
    """`data` must be a mapping with every required key and no unknown key (typos fail loudly)."""
    required, optional = tuple(required), tuple(optional)
    if not isinstance(data, Mapping):
        raise invalid(path, data, "a mapping")
    for key in required:
        if key not in data:
            raise ValueError(f"{path}.{key}: missing; it is required")
    allowed = set(required) | set(optional)
    for key in data:
        if key not in allowed:
            raise invalid(f"{path}.{key}", data[key],
                          f"no such key; allowed keys are {', '.join(sorted(allowed))}")


def is_real_number(value: object) -> bool:
    """True for finite ints, floats and Decimals; False for bools, strings, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def to_decimal(value: object, path: str, allowed: str) -> Decimal:
    """A config number as an exact Decimal (floats go through `str`, so 0.1 stays 0.1)."""
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise invalid(path, value, allowed) from None
    if not is_real_number(value):
        raise invalid(path, value, allowed)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def to_float(value: object, path: str, allowed: str) -> float:
    """A config number as a float; strings, bools and non-finite values are refused."""
    if not is_real_number(value):
        raise invalid(path, value, allowed)
    return float(value)
