"""Outbound trading signals: the JSON order-manager reads (CONTRACTS.md §1) of the `TradingSignal`
msd decides (msd.values.messages).

`validate_wire_signal` reproduces order-manager's effective acceptance rules — `TradingSignal.from_dict`
plus pydantic v2 plus `SignalProcessor._validate_signal` — so a signal it would nack (and drop without
any event) is caught before publishing. Pure and stdlib-only.
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, Mapping

from msd.values.messages import TradingSignal
from msd.values.parsing import finite_decimal, from_epoch, from_iso, plain_decimal


def format_timestamp(moment: datetime) -> str:
    """UTC ISO-8601 ending in `Z`; microseconds only when non-zero. A naive datetime is refused as ambiguous."""
    if moment.utcoffset() is None:
        raise ValueError(f"format_timestamp needs an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _optional_float(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _optional_dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def signal_to_wire(signal: TradingSignal) -> dict[str, Any]:
    """The JSON object for the body; numbers are JSON floats, as the reference producer sent them,
    except `amount` and the snapshot `price` of a signal with `exact_decimals` (decimal strings)."""
    snapshot = signal.market_data_snapshot
    number = plain_decimal if signal.exact_decimals else float
    return {
        "signal_id": signal.signal_id,
        "signal_type": signal.signal_type,
        "asset": signal.asset,
        "amount": number(signal.amount),
        "confidence": float(signal.confidence),
        "timestamp": format_timestamp(signal.timestamp),
        "strategy_id": signal.strategy_id,
        "model_version": signal.model_version,
        "is_warmup": signal.is_warmup,
        "market_data_snapshot": {
            "price": number(snapshot.price),
            "spread": _optional_float(snapshot.spread),
            "volume_24h": _optional_float(snapshot.volume_24h),
            "volatility": _optional_float(snapshot.volatility),
            "orderbook_depth": _optional_dict(snapshot.orderbook_depth),
            "technical_indicators": _optional_dict(snapshot.technical_indicators),
        },
        "metadata": dict(signal.metadata),
        "trace_id": signal.trace_id,
    }


def encode_signal(signal: TradingSignal) -> tuple[bytes, dict[str, str]]:
    """UTF-8 JSON body and AMQP headers; order-manager reads trace_id from the header, not the body.

    Raises ValueError when order-manager would reject the signal: it would drop it without any event.
    """
    wire = signal_to_wire(signal)
    problems = validate_wire_signal(wire)
    if problems:
        raise ValueError(f"signal {signal.signal_id} would be rejected by order-manager: " + "; ".join(problems))
    body = json.dumps(wire, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return body, {"trace_id": signal.trace_id}


# --- order-manager's acceptance rules (CONTRACTS.md §1.2) ----------------------------------------

Check = Callable[[Any], "str | None"]

# pydantic v2 lax bool strings, compared case-insensitively.
_TRUE_TEXTS = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_TEXTS = frozenset({"0", "off", "f", "false", "n", "no"})
# pydantic reads numbers above 2e10 as milliseconds.
_PYDANTIC_MILLISECONDS_ABOVE = 2e10
MIN_AMOUNT_USDT = Decimal("0.01")


def lax_datetime(value: Any) -> datetime | None:
    """order-manager's reading of `timestamp`: from_dict's `fromisoformat(s.replace("Z", "+00:00"))`
    for strings (a naive time stays naive), pydantic's epoch rule for numbers; None = rejected."""
    if isinstance(value, str):
        return from_iso(value.replace("Z", "+00:00"), naive="keep")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return from_epoch(value, milliseconds=abs(value) > _PYDANTIC_MILLISECONDS_ABOVE)
    return None


def lax_bool(value: Any) -> bool | None:
    """pydantic v2's lax reading of a bool (`is_warmup`); None = rejected."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE_TEXTS | _FALSE_TEXTS:
        return value.lower() in _TRUE_TEXTS
    return None


def _string_problem(value: Any, *, max_length: int, nullable: bool = False, non_empty: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        return f"must be a string{' or null' if nullable else ''}, got {value!r}"
    if len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    if non_empty and not value:
        return "must not be empty"
    return None


def _check_signal_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a UUID string, got {value!r}"
    try:
        uuid.UUID(value)
    except ValueError:
        return f"{value!r} is not a UUID"
    return None


def _check_signal_type(value: Any) -> str | None:
    # max_length applies before the validator lowercases, and nothing strips spaces.
    problem = _string_problem(value, max_length=10)
    if problem is None and value.lower() not in ("buy", "sell"):
        return f"must be buy or sell (any case), got {value!r}"
    return problem


def _check_asset(value: Any) -> str | None:
    problem = _string_problem(value, max_length=20)
    if problem is not None:
        return problem
    upper = value.upper()
    if len(upper) < 4:
        return f"must be at least 4 characters, got {value!r}"
    if not upper.isupper() or not upper.isalnum():
        return f"must be uppercase alphanumeric once uppercased, got {value!r}"
    return None


def _check_amount(value: Any) -> str | None:
    amount = finite_decimal(value)
    if amount is None:
        return f"must be a finite number or numeric string, got {value!r}"
    if amount <= 0:
        return f"must be > 0, got {value!r}"
    if amount < MIN_AMOUNT_USDT:
        return f"must be at least {MIN_AMOUNT_USDT} USDT, got {value!r}"
    return None


def _check_confidence(value: Any) -> str | None:
    confidence = finite_decimal(value)
    if confidence is None or not 0 <= confidence <= 1:
        return f"must be a number in [0, 1], got {value!r}"
    return None


def _check_timestamp(value: Any) -> str | None:
    if lax_datetime(value) is None:
        return f"must be an ISO-8601 string (not ending +00:00Z) or epoch number, got {value!r}"
    return None


def _check_is_warmup(value: Any) -> str | None:
    return None if lax_bool(value) is not None else f"must be a boolean, got {value!r}"


def _object_check(*, nullable: bool) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, dict) or (value is None and nullable):
            return None
        return f"must be an object{' or null' if nullable else ''}, got {value!r}"
    return check


def _number_check(*, positive: bool) -> Check:
    """Snapshot numbers: price is required and > 0, the others null or >= 0."""
    def check(value: Any) -> str | None:
        if value is None and not positive:
            return None
        number = finite_decimal(value)
        if number is None or number < 0 or (positive and number == 0):
            return f"must be a finite number {'> 0' if positive else '>= 0 or null'}, got {value!r}"
        return None
    return check


_SIGNAL_RULES: Mapping[str, Check] = MappingProxyType({
    "signal_id": _check_signal_id,
    "signal_type": _check_signal_type,
    "asset": _check_asset,
    "amount": _check_amount,
    "confidence": _check_confidence,
    "timestamp": _check_timestamp,
    "strategy_id": lambda value: _string_problem(value, max_length=100, non_empty=True),
    "model_version": lambda value: _string_problem(value, max_length=100, nullable=True),
    "is_warmup": _check_is_warmup,
    "market_data_snapshot": _object_check(nullable=False),
    "metadata": _object_check(nullable=True),
    "trace_id": lambda value: _string_problem(value, max_length=100, nullable=True),
})
_SIGNAL_REQUIRED = frozenset({
    "signal_id", "signal_type", "asset", "amount", "confidence", "timestamp", "strategy_id", "market_data_snapshot"})

_SNAPSHOT_RULES: Mapping[str, Check] = MappingProxyType({
    "price": _number_check(positive=True),
    "spread": _number_check(positive=False),
    "volume_24h": _number_check(positive=False),
    "volatility": _number_check(positive=False),
    "orderbook_depth": _object_check(nullable=True),
    "technical_indicators": _object_check(nullable=True),
})
_SNAPSHOT_REQUIRED = frozenset({"price"})


def _problems(obj: Mapping[str, Any], rules: Mapping[str, Check], required: frozenset[str], prefix: str) -> list[str]:
    found = []
    for name, check in rules.items():
        if name not in obj:
            if name in required:
                found.append(f"{prefix}{name}: required")
            continue
        problem = check(obj[name])
        if problem is not None:
            found.append(f"{prefix}{name}: {problem}")
    return found


def validate_wire_signal(d: Mapping[str, Any]) -> list[str]:
    """Why order-manager would reject this decoded signal body; an empty list means it accepts it."""
    if not isinstance(d, Mapping):
        return [f"signal: must be a JSON object, got {type(d).__name__}"]
    problems = _problems(d, _SIGNAL_RULES, _SIGNAL_REQUIRED, "")
    snapshot = d.get("market_data_snapshot")
    if isinstance(snapshot, dict):
        problems += _problems(snapshot, _SNAPSHOT_RULES, _SNAPSHOT_REQUIRED, "market_data_snapshot.")
    return problems
