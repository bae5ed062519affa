"""An independent check of what order-manager accepts (CONTRACTS.md §1.2), for the test suite.

Deliberately written apart from msd's production validator: signals published in tests are
checked by this, so a bug shared by the producer and its own validator cannot hide.
"""
import math
import uuid
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext

REQUIRED = ("signal_id", "signal_type", "asset", "amount", "confidence", "timestamp", "strategy_id",
            "market_data_snapshot")


def _decimal(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def problems(signal: dict) -> list[str]:
    found = [f"missing {key}" for key in REQUIRED if key not in signal or signal[key] is None]
    if found:
        return found
    try:
        uuid.UUID(str(signal["signal_id"]))
    except ValueError:
        found.append("signal_id is not a UUID")
    kind = signal["signal_type"]
    if not isinstance(kind, str) or len(kind) > 10 or kind.lower() not in ("buy", "sell"):
        found.append("signal_type must be buy or sell")
    asset = signal["asset"]
    # pydantic uppercases before _validate_signal checks isupper() and isalnum().
    if not isinstance(asset, str) or not 4 <= len(asset) <= 20 or not (asset.upper().isupper() and asset.isalnum()):
        found.append("asset must be 4-20 uppercase alphanumerics")
    amount = _decimal(signal["amount"])
    if amount is None or amount < Decimal("0.01"):
        found.append("amount must be a number >= 0.01 (USDT)")
    confidence = _decimal(signal["confidence"])
    if confidence is None or not 0 <= confidence <= 1:
        found.append("confidence must be in [0, 1]")
    stamp = signal["timestamp"]
    if not isinstance(stamp, str) or stamp.endswith("+00:00Z"):
        found.append("timestamp must be ISO-8601 (never +00:00Z)")
    else:
        try:
            datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            found.append("timestamp is not ISO-8601")
    if not isinstance(signal["strategy_id"], str) or not 1 <= len(signal["strategy_id"]) <= 100:
        found.append("strategy_id must be 1-100 characters")
    for key in ("model_version", "trace_id"):
        if signal.get(key) is not None and (not isinstance(signal[key], str) or len(signal[key]) > 100):
            found.append(f"{key} must be a string of at most 100 characters")
    if signal.get("metadata") is not None and not isinstance(signal["metadata"], dict):
        found.append("metadata must be an object")
    found += _snapshot_problems(signal["market_data_snapshot"])
    return found


def _snapshot_problems(snap) -> list[str]:
    if not isinstance(snap, dict):
        return ["market_data_snapshot must be an object"]
    found = []
    price = _decimal(snap.get("price"))
    if price is None or price <= 0:
        found.append("market_data_snapshot.price must be > 0")
    for key in ("spread", "volume_24h", "volatility"):
        if snap.get(key) is not None:
            value = _decimal(snap[key])
            if value is None or value < 0:
                found.append(f"market_data_snapshot.{key} must be >= 0 or null")
    for key in ("orderbook_depth", "technical_indicators"):
        if snap.get(key) is not None and not isinstance(snap[key], dict):
            found.append(f"market_data_snapshot.{key} must be an object or null")
    return found


def assert_accepted(signal: dict) -> None:
    bad = problems(signal)
    assert not bad, f"order-manager would reject {signal.get('signal_id')}: {bad}"
    # our own contract decisions (CONTRACTS.md, "our decisions")
    assert signal["timestamp"].endswith("Z")
    assert signal["signal_type"] in ("buy", "sell")
    assert math.isfinite(float(signal["amount"]))


def order_quantity(signal: dict, lot_size, min_order_qty, min_order_value) -> Decimal:
    """order-manager's order quantity for `signal` as it arrives on the wire (CONTRACTS §3.6),
    written apart from msd's own: from_dict's `Decimal(str(x))`, then amount / price in Python's
    default 28-digit context, rounded down to min(lot_size, min_order_qty), raised to the
    minimum order value (rounded up to the step)."""
    amount = Decimal(str(signal["amount"]))
    price = Decimal(str(signal["market_data_snapshot"]["price"]))
    step = min(Decimal(str(lot_size)), Decimal(str(min_order_qty)))
    minimum = Decimal(str(min_order_value))
    with localcontext() as ctx:
        ctx.prec = 28
        quantity = (amount / price / step).to_integral_value(rounding=ROUND_FLOOR) * step
        if quantity * price < minimum:
            quantity = (minimum / price / step).to_integral_value(rounding=ROUND_CEILING) * step
    return quantity
