"""Realised PnL: fills paired first-in-first-out into round trips per asset, fees included.

This is what trading actually earned, kept beside the model's directional metrics: a model can
be right about direction and still lose to fees. Money stays Decimal (DESIGN §5); fees are in
the quote currency, as order-manager reports them for spot USDT pairs. Pure: no clock, no I/O.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Iterable, NamedTuple

from msd.values.records import TradeFill

ZERO = Decimal(0)
_DIRECTION = {"buy": 1, "sell": -1}


class RoundTrip(NamedTuple):
    """`quantity` opened at `entry_price` and closed at `exit_price`; `pnl` is net of the
    entry and exit fees attributable to that quantity. (A named tuple: cheap to make by the
    million.)"""
    asset: str
    direction: str             # "long" / "short"
    quantity: Decimal
    entry_price: Decimal
    exit_price: Decimal
    fees: Decimal
    pnl: Decimal
    opened_at: datetime
    closed_at: datetime


@dataclass(slots=True)
class _Lot:
    direction: int
    quantity: Decimal
    price: Decimal
    fee_per_unit: Decimal
    opened_at: datetime


def _checked(fill: TradeFill) -> int:
    direction = _DIRECTION.get(fill.side)
    if direction is None:
        raise ValueError(f"side: {fill.side!r} is invalid; expected one of {sorted(_DIRECTION)}")
    if not (fill.quantity > ZERO and fill.price > ZERO):
        raise ValueError(f"fill quantity={fill.quantity} price={fill.price} is invalid; "
                         "expected both > 0")
    return direction


def _close(lot: _Lot, fill: TradeFill, quantity: Decimal, fee_per_unit: Decimal) -> RoundTrip:
    fees = (lot.fee_per_unit + fee_per_unit) * quantity
    gross = (fill.price - lot.price) * quantity * lot.direction
    return RoundTrip(fill.asset, "long" if lot.direction > 0 else "short", quantity, lot.price,
                     fill.price, fees, gross - fees, lot.opened_at, fill.executed_at)


class FifoBook:
    """Open lots per asset; `add` closes the oldest opposite lots first and opens the rest.

    Incremental so a caller can stream a million fills without holding them: feed them in
    execution order.
    """

    def __init__(self) -> None:
        self._books: dict[str, deque[_Lot]] = {}

    def add(self, fill: TradeFill) -> list[RoundTrip]:
        direction = _checked(fill)
        fee_per_unit = fill.fee / fill.quantity
        book = self._books.setdefault(fill.asset, deque())
        remaining, trips = fill.quantity, []
        while remaining > ZERO and book and book[0].direction == -direction:
            lot = book[0]
            matched = min(remaining, lot.quantity)
            trips.append(_close(lot, fill, matched, fee_per_unit))
            lot.quantity -= matched
            remaining -= matched
            if lot.quantity == ZERO:
                book.popleft()
        if remaining > ZERO:
            book.append(_Lot(direction, remaining, fill.price, fee_per_unit, fill.executed_at))
        return trips


def fifo_round_trips(fills: Iterable[TradeFill]) -> list[RoundTrip]:
    """Round trips in closing order; lots still open at the end are not round trips yet."""
    book = FifoBook()
    return [trip for fill in sorted(fills, key=lambda f: f.executed_at) for trip in book.add(fill)]


@dataclass
class RoundTripTally:
    """Running figures of closed round trips, in the quote currency."""
    round_trips: int = 0
    pnl_total: Decimal = ZERO
    profitable: int = 0

    def add(self, trips: Iterable[RoundTrip]) -> None:
        for trip in trips:
            self.round_trips += 1
            self.pnl_total += trip.pnl
            self.profitable += trip.pnl > ZERO

    def summary(self) -> dict[str, float]:
        """Count, total and mean net PnL and the share of profitable trips (None-free)."""
        if not self.round_trips:
            return {"round_trips": 0.0, "pnl_total": 0.0}
        return {"round_trips": float(self.round_trips), "pnl_total": float(self.pnl_total),
                "pnl_mean": float(self.pnl_total) / self.round_trips,
                "hit_rate": self.profitable / self.round_trips}
