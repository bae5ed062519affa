"""position-manager stand-in, the arithmetic and the event (CONTRACTS.md §3, §3.5).

One-way mode: one row per asset, forever, with a signed size (negative = short). Two paths
write it, as in the real service (`services/position_manager.py`), with their surprises:

- Fill path (`apply_fill`, update_source "order_execution"): a fill in the position's direction
  averages the entry price; against it, it realises PnL on the closed part; going flat sets
  `closed_at` and clears the entry; the next fill sets the entry to its price and clears
  `closed_at`; a fill larger than the position flips it in one update (no zero in between) at
  the fill's price. Fees reduce realised PnL (as Bybit's cumulative realised PnL does).
- WebSocket path (`apply_websocket`, update_source "websocket"): the exchange's size and mark;
  `closed_at` is set when the size becomes 0 but NOT reset on a reopen, and the entry keeps its
  old value when the exchange sends none (§3.5).

`created_at` is not here: the row's INSERT sets it once and no write changes it (`msd.store.
shared_writes.save_position`). Pure; the DB round trip and publishing are in `msd.sim.exchange`.
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
    closed_at: datetime | None      # when it last went flat (see the module doc for each path)
    last_updated: datetime


def _q(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_PLACES)


def unrealized(size: Decimal, entry: Decimal | None, price: Decimal) -> Decimal:
    return ZERO if entry is None or size == 0 else _q(size * (price - entry))


def apply_fill(position: PositionState | None, asset: str, side: str, quantity: Decimal,
               price: Decimal, fee: Decimal, now: datetime) -> PositionState:
    """The fill path: the position after a fill of `quantity` on `side` ('Buy' / 'SELL') at `price`."""
    if position is None:
        position = PositionState(asset, ZERO, None, price, ZERO, ZERO, None, now)
    signed = quantity if side == "Buy" else -quantity
    size, entry = position.size, position.average_entry_price
    realized = position.realized_pnl - fee
    closed_at = position.closed_at
    new_size = size + signed
    if size == 0:
        entry, closed_at = price, None                      # a new position at this fill's price
    elif (size > 0) == (signed > 0):
        entry = _q((abs(size) * (entry or ZERO) + quantity * price) / abs(new_size))
    else:
        closed = min(quantity, abs(size))
        realized += closed * (price - (entry or price)) * (1 if size > 0 else -1)
        if new_size == 0:
            entry, closed_at = None, now
        elif (new_size > 0) != (size > 0):
            entry = price                                   # flipped in one update
    return PositionState(asset, new_size, entry, price, unrealized(new_size, entry, price),
                         _q(realized), closed_at, now)


def apply_websocket(position: PositionState | None, asset: str, size: Decimal, mark_price: Decimal,
                    entry_price: Decimal | None, now: datetime) -> PositionState:
    """The websocket path: the exchange says `size` and the mark, and maybe an entry price."""
    if position is None:
        position = PositionState(asset, ZERO, None, mark_price, ZERO, ZERO, None, now)
    closed_at = now if size == 0 and position.size != 0 else position.closed_at     # never reset
    entry = entry_price if entry_price is not None else position.average_entry_price  # stale if none
    return PositionState(asset, size, entry, mark_price, unrealized(size, entry, mark_price),
                         position.realized_pnl, closed_at, now)


def mark(position: PositionState, price: Decimal, now: datetime) -> PositionState:
    """The position re-priced at `price` (a websocket-driven update with the same size)."""
    return replace(position, current_price=price, last_updated=now,
                   unrealized_pnl=unrealized(position.size, position.average_entry_price, price))


def state_from_row(row: Mapping[str, Any]) -> PositionState:
    return PositionState(
        asset=row["asset"], size=row["size"], average_entry_price=row["average_entry_price"],
        current_price=row["current_price"], unrealized_pnl=row["unrealized_pnl"] or ZERO,
        realized_pnl=row["realized_pnl"] or ZERO, closed_at=row["closed_at"], last_updated=row["last_updated"])


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
