"""The exits on a candle: the exits role's own step (msd.strategies.exit_step), pessimistically.

The exit state of an asset's position is kept as the exits role keeps it, by the same step:
each read of the positions row (the row being position-manager's arithmetic from msd.exchange)
is a `RowRead`, each point of the candle's path (msd.backtest.fills.exit_path, the adverse
extreme before the favourable one) an `Evaluate` at that point's price and time (`now` is the
point's time: the step reads no clock). What the backtest adds is only the market: the path,
and a `SendExit` (the role's urgent, hence Market, signal for exactly its quantity) filling at
once at its level (or the open on a gap), half the spread worse; the next row read then
releases it from flight, as in the daemon. The path is the price: the row's mark (the last fill)
is not a candidate quote, and no per-asset rate or debounce applies (one evaluation per point).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from msd.backtest.candles import Candle
from msd.backtest.fills import PathPoint, exit_base_price, exit_path, worse
from msd.exchange.positions import PositionState
from msd.market.quotes import PriceQuote
from msd.strategies.exit_step import EXIT_ORDER_TYPE, Evaluate, RowRead, SendExit, step
from msd.rules import ExitDecision, ExitRules, ExitState, Instrument, RowFacts

NAMESPACE = uuid.UUID("0b5e3f7a-8c1d-4a2e-b6f9-3d7c2e1a9f40")
# A path point is a price the candle traded (msd.market.quotes.SOURCES).
PATH_SOURCE = "market_last_price"


@dataclass(frozen=True)
class ExitFill:
    decision: ExitDecision
    point: PathPoint
    base: Decimal              # the price before the spread (the level, or the open on a gap)
    price: Decimal             # the fill, half the spread worse
    signal_id: str
    order_type: str = EXIT_ORDER_TYPE


def row_facts(asset: str, position: PositionState, version: int) -> RowFacts:
    """The positions row as the exits role reads it: one stable id per asset (CONTRACTS §3.5)."""
    return RowFacts(position_id=str(uuid.uuid5(NAMESPACE, asset)), asset=asset, size=position.size,
                    average_entry_price=position.average_entry_price, current_price=position.current_price,
                    version=version, last_updated=position.last_updated, closed_at=position.closed_at)


def read_row(state: ExitState | None, asset: str, position: PositionState, version: int,
             now: datetime) -> ExitState | None:
    return step(state, RowRead(row_facts(asset, position, version)), now).state


def exit_on_path(state: ExitState, points: tuple[PathPoint, ...], rules: ExitRules, instrument: Instrument,
                 half_spread: Decimal, next_id) -> tuple[ExitState, ExitFill | None, int]:
    """The first exit the step sends along `points` (the state it leaves and how many points were
    used), or none. The caller applies the fill, reads the row again and goes on with the rest
    of the path; a second exit in one candle is then paced by the rules' own cooldown."""
    closing_side = "SELL" if state.row.size > 0 else "Buy"
    for used, point in enumerate(points, start=1):
        if point.at < state.opened_at:
            continue
        signal_id = next_id()
        quote = PriceQuote(point.price, point.at, PATH_SOURCE)
        stepped = step(state, Evaluate((quote,), rules, instrument, signal_id, table_price=False), point.at)
        state, sent = stepped.state, stepped.first(SendExit)
        if sent is None:
            continue
        base = exit_base_price(point, sent.level)
        return state, ExitFill(sent.decision, point, base, worse(closing_side, base, half_spread), signal_id,
                               sent.order_type), used
    return state, None, len(points)


def candle_path(long: bool, candle: Candle, length: timedelta) -> tuple[PathPoint, ...]:
    return exit_path(long, candle, length)
