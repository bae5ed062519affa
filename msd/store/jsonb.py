"""Rendering of Python values for jsonb columns.

Decimals become strings, not floats, so a stored payload keeps the producer's exact digits
(CONTRACTS.md §0.3); bytes (AMQP header values can be bytes) are decoded leniently.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID


def to_json(value: Any) -> str:
    """Compact JSON text of `value`, with the conversions above."""
    return json.dumps(value, default=_convert, separators=(",", ":"), ensure_ascii=False)


def _convert(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
