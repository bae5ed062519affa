"""position-manager stand-in, the arithmetic and the event (CONTRACTS.md §3).

One-way mode: one row per asset with a signed size (negative = short). A fill in the
position's direction averages the entry price; against it, it realises PnL on the closed part
and, if it is larger than the position, opens the other way at the fill price. Fees reduce
realised PnL (as Bybit's cumulative realised PnL does). Pure; the DB row round trip and
publishing happen in `msd.sim.exchange`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from msd.sim.order_manager import EIGHT_PLACES
from msd.sim.outbound import Outbound, aware_iso, json_body

POSITION_UPDATED_QUEUE = "position-manager.position_updated"
ZERO = Decimal(0)


@dataclass(frozen=True)
class PositionState:
    """The columns of a `positions` row the stand-in writes."""
    asset: str
    size: Decimal
    average_entry_price: Decimal | None
    current_price: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    created_at: datetime | None     # when the current (non-flat) position was opened
    closed_at: datetime | None      # when it last went flat
    last_updated: datetime


def _q(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_PLACES)


def unrealized(size: Decimal, entry: Decimal | None, price: Decimal) -> Decimal:
    return ZERO if entry is None or size == 0 else _q(size * (price - entry))


def apply_fill(position: PositionState | None, asset: str, side: str, quantity: Decimal,
               price: Decimal, fee: Decimal, now: datetime) -> PositionState:
    """The position after a fill of `quantity` on `side` ('Buy' / 'SELL') at `price`."""
    if position is None:
        position = PositionState(asset, ZERO, None, price, ZERO, ZERO, None, None, now)
    signed = quantity if side == "Buy" else -quantity
    size, entry = position.size, position.average_entry_price
    realized = position.realized_pnl - fee
    created_at, closed_at = position.created_at, position.closed_at
    if size == 0 or (size > 0) == (signed > 0):
        new_size = size + signed
        entry = _q((abs(size) * (entry or ZERO) + quantity * price) / abs(new_size))
        if size == 0:
            created_at, closed_at = now, None
    else:
        closed = min(quantity, abs(size))
        realized += closed * (price - entry) * (1 if size > 0 else -1)
        new_size = size + signed
        if new_size == 0:
            entry, closed_at = None, now
        elif (new_size > 0) != (size > 0):
            entry, created_at, closed_at = price, now, None   # flipped: a new position
    return PositionState(asset, new_size, entry, price, unrealized(new_size, entry, price),
                         _q(realized), created_at, closed_at, now)


def mark(position: PositionState, price: Decimal, now: datetime) -> PositionState:
    """The position re-priced at `price` (a websocket-driven update)."""
    return replace(position, current_price=price, last_updated=now,
                   unrealized_pnl=unrealized(position.size, position.average_entry_price, price))


def state_from_row(row: Mapping[str, Any]) -> PositionState:
    return PositionState(
        asset=row["asset"], size=row["size"], average_entry_price=row["average_entry_price"],
        current_price=row["current_price"], unrealized_pnl=row["unrealized_pnl"] or ZERO,
        realized_pnl=row["realized_pnl"] or ZERO, created_at=row["created_at"],
        closed_at=row["closed_at"], last_updated=row["last_updated"])


def _pnl_percent(row: Mapping[str, Any]) -> str | None:
    size, entry = row["size"], row["average_entry_price"]
    if not size or not entry:
        return None
    return str((row["unrealized_pnl"] or ZERO) / (abs(size) * entry) * 100)


def position_event(row: Mapping[str, Any], *, update_source: str, trace_id: str | None,
                   now: datetime) -> Outbound:
    """`publish_position_updated` from a row read back after the write; persistent, no headers."""
    held = None
    if row["created_at"] is not None:
        held = int((row["last_updated"] - row["created_at"]).total_seconds() // 60)
    event = {
        "event_type": "position_updated", "position_id": str(row["id"]), "asset": row["asset"],
        "size": str(row["size"]), "unrealized_pnl": str(row["unrealized_pnl"] if row["unrealized_pnl"] is not None else "0"),
        "realized_pnl": str(row["realized_pnl"] if row["realized_pnl"] is not None else "0"),
        "mode": row["mode"], "unrealized_pnl_pct": _pnl_percent(row), "time_held_minutes": held,
        "position_size_norm": None, "update_source": update_source, "trace_id": trace_id,
        "timestamp": aware_iso(now),
    }
    return Outbound(queue=POSITION_UPDATED_QUEUE, body=json_body(event), persistent=True, payload=event)
