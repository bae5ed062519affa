"""position-manager's arithmetic on a `positions` row (CONTRACTS §3.5). Pure, stdlib only.

One-way mode: one row per (asset, mode), forever, with a signed size (negative = short); its id
and `created_at` are set once at INSERT (the caller's storage keeps them). Two paths write it,
as in the real service (`services/position_manager.py`), with their surprises:

- Fill path (`apply_fill`, update_source "order_execution"): a fill in the position's direction
  averages the entry price; against it, it realises PnL on the closed part; going flat sets
  `closed_at` and clears the entry; the next fill sets the entry to its price and clears
  `closed_at`; a fill larger than the position flips it in one update (no zero in between) at
  the fill's price. Fees reduce realised PnL (as Bybit's cumulative realised PnL does).
- WebSocket path (`apply_websocket`, update_source "websocket"): the exchange's size and mark;
  `closed_at` is set when the size becomes 0 but NOT reset on a reopen, and the entry keeps its
  old value when the exchange sends none.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

EIGHT_PLACES = Decimal("0.00000001")       # the numeric(20, 8) columns of the shared tables
ZERO = Decimal(0)


@dataclass(frozen=True)
class PositionState:
    """The columns of a `positions` row the fill and websocket paths write."""
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


def time_held_minutes(created_at: datetime | None, last_updated: datetime, now: datetime) -> int:
    """The event's `time_held_minutes` (§3.2): (last_updated - created_at) // 60 from the row's
    first-ever `created_at`, not from the open of the current position (§3.5). A NULL column is
    defaulted to `now` by position-manager's model, so the figure is then negative (or 0)."""
    created = created_at if created_at is not None else now
    return int((last_updated - created).total_seconds() // 60)
