"""Reading a trading signal the way order-manager does (CONTRACTS.md §1.1–§1.3).

`read_signal` either returns the normalised `Signal` order-manager would go on to process, or
`Refused` for every input order-manager nacks without any event: a body that is not JSON, an
error at `TradingSignal.from_dict`/pydantic level, or a `_validate_signal` failure. The
acceptance rules themselves are msd's `validate_wire_signal`, which reproduces both layers, so
the stand-in and msd's own pre-publish check cannot drift apart.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

# order-manager's exact pre-conversions (Decimal(str(x)), fromisoformat with Z replaced,
# pydantic's epoch and bool rules): the same functions msd's pre-publish check uses, so acceptance
# and parsing cannot drift apart.
from msd.bus.codecs import trace_id_header
from msd.bus.signal_format import lax_bool, lax_datetime, validate_wire_signal
from msd.values.parsing import finite_decimal
from msd.sim.outbound import new_uuid


@dataclass(frozen=True)
class Refused:
    """order-manager would nack(requeue=False) this message and publish nothing."""
    reason: str


@dataclass(frozen=True)
class Signal:
    """A signal after order-manager's parsing: ids canonical, type lowercased, asset uppercased."""
    signal_id: str
    signal_type: str            # "buy" / "sell"
    asset: str
    amount: Decimal             # USDT
    confidence: Decimal
    timestamp: datetime         # as parsed: aware for Z/offset/epoch input, naive for naive input
    strategy_id: str
    model_version: str | None
    is_warmup: bool
    price: Decimal              # market_data_snapshot.price
    spread: Decimal | None      # percent of mid
    volume_24h: Decimal | None
    volatility: Decimal | None
    metadata: Mapping[str, Any] | None
    trace_id: str               # the AMQP header's, else a new one (the body's is ignored)

    @property
    def side(self) -> str:
        """orders.side exactly as order-manager writes it: 'Buy' or 'SELL'."""
        return "Buy" if self.signal_type == "buy" else "SELL"

    @property
    def urgent(self) -> bool:
        return bool(self.metadata) and self.metadata.get("urgency") is True


def signal_trace_id(headers: Mapping[str, Any] | None, rng: random.Random) -> str:
    """order-manager reads the AMQP header (bytes decoded) and generates one when it is absent."""
    return trace_id_header(headers) or new_uuid(rng)


def read_signal(body: bytes, headers: Mapping[str, Any] | None, rng: random.Random) -> Signal | Refused:
    """The signal order-manager would process, or why it would drop the message."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return Refused(f"body is not JSON: {exc}")
    problems = validate_wire_signal(data)
    if problems:
        return Refused("; ".join(problems))
    snapshot = data["market_data_snapshot"]
    return Signal(
        signal_id=str(uuid.UUID(data["signal_id"])),
        signal_type=data["signal_type"].lower(),
        asset=data["asset"].upper(),
        amount=finite_decimal(data["amount"]),
        confidence=finite_decimal(data["confidence"]),
        timestamp=lax_datetime(data["timestamp"]),
        strategy_id=data["strategy_id"],
        model_version=data.get("model_version"),
        is_warmup=bool(lax_bool(data.get("is_warmup", False))),
        price=finite_decimal(snapshot["price"]),
        spread=_optional_decimal(snapshot.get("spread")),
        volume_24h=_optional_decimal(snapshot.get("volume_24h")),
        volatility=_optional_decimal(snapshot.get("volatility")),
        metadata=data.get("metadata"),
        trace_id=signal_trace_id(headers, rng),
    )


def _optional_decimal(value: Any) -> Decimal | None:
    return None if value is None else finite_decimal(value)


def signal_block(signal: Signal) -> dict[str, Any]:
    """The `signal` object of a rejection event: no price, no timestamp; numbers as floats."""
    return {"signal_id": signal.signal_id, "signal_type": signal.signal_type, "asset": signal.asset,
            "amount": float(signal.amount), "confidence": float(signal.confidence),
            "strategy_id": signal.strategy_id, "model_version": signal.model_version,
            "is_warmup": signal.is_warmup}


def rejection_market_conditions(signal: Signal) -> dict[str, Any]:
    """A rejection's `market_conditions`: the signal's snapshot, falsy values as null."""
    def number(value: Decimal | None) -> float | None:
        return float(value) if value else None
    return {"price": number(signal.price), "spread": number(signal.spread),
            "volume_24h": number(signal.volume_24h), "volatility": number(signal.volatility),
            "timestamp": signal.timestamp.isoformat()}
