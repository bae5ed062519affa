"""What the exit role reads and writes, in pure form: prices, rows, instruments, the exit signal.

position-manager's event says *that* a position changed but carries no entry or current price
(CONTRACTS §3), and its size may be older than the row: the size and entry come from the shared
`positions` row. The price is whichever is freshest of the market state (ws-gateway) and the
row's `current_price` (position-manager's last mark, as of the row's `last_updated`). The winning
source is recorded in the signal so an exit can be traced back to the number that fired it.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Mapping

from msd.values.messages import BookTop, Kline, TickerUpdate, Trade
from msd.values.messages import MarketDataSnapshot, TradingSignal
from msd.market.state import AssetState, MarketSnapshot, MarketState, mid_price
from msd.rules import (
    ORDER_MANAGER_DEFAULTS, ExitDecision, ExitState, Fill, Instrument, RowFacts, Side, fold_bar, fold_price,
)
from msd.store.neighbours import FillRow, InstrumentRow, PositionRow
from msd.strategies.emit import signal_snapshot

# Exits are rule outcomes, not predictions: the rule either fired or it did not.
EXIT_CONFIDENCE = 1.0
# Price sources, in the order that wins a tie on time: a traded price beats a quote, and both beat
# position-manager's mark, which is itself derived from the market.
SOURCES = ("market_last_price", "market_mid", "positions_table")


@dataclass(frozen=True)
class PriceQuote:
    price: Decimal
    at: datetime
    source: str              # one of SOURCES


def market_quotes(state: AssetState | None) -> list[PriceQuote]:
    """The last traded price and the book mid of one asset, each with the time it was set."""
    if state is None:
        return []
    quotes = []
    if state.last_price is not None and state.last_price > 0 and state.last_price_at is not None:
        quotes.append(PriceQuote(state.last_price, state.last_price_at, "market_last_price"))
    mid = mid_price(state.bid, state.ask)
    if mid is not None and mid > 0 and state.book_at is not None and state.bid <= state.ask:
        quotes.append(PriceQuote(mid, state.book_at, "market_mid"))
    return quotes


def price_folder(update: Any, market: MarketState) -> Callable[[ExitState], ExitState] | None:
    """How one market update moves a position's extreme, or None: each traded price and book mid
    as it arrives, and a closed 1-minute bar's high and low (what a dropped tick would have held).
    `market` has already taken the update."""
    if isinstance(update, Kline):
        if not update.confirmed:
            return None
        return lambda state: fold_bar(state, update.high, update.low, update.start)
    if isinstance(update, Trade):
        price = update.price
    elif isinstance(update, (TickerUpdate, BookTop)):
        price = update.last_price if isinstance(update, TickerUpdate) else None
        book = market.asset_state(update.asset)
        if price is None and book is not None and book.bid and book.ask:
            price = mid_price(book.bid, book.ask)
    else:
        return None
    if price is None or price <= 0:
        return None
    return lambda state: fold_price(state, price)


def table_quote(row: RowFacts | None) -> PriceQuote | None:
    if row is None or row.current_price is None or row.current_price <= 0:
        return None
    return PriceQuote(row.current_price, row.last_updated, "positions_table")


def freshest(quotes: list[PriceQuote | None]) -> PriceQuote | None:
    """The newest quote; on equal times the earlier entry of SOURCES wins."""
    usable = [q for q in quotes if q is not None]
    if not usable:
        return None
    return max(usable, key=lambda q: (q.at, -SOURCES.index(q.source)))


def row_facts(row: PositionRow) -> RowFacts:
    """The rules' view of a positions row (raises InvalidPositionData for an unusable one)."""
    return RowFacts(position_id=row.position_id, asset=row.asset, size=row.size,
                    average_entry_price=row.average_entry_price, current_price=row.current_price,
                    version=row.version, last_updated=row.last_updated, closed_at=row.closed_at, mode=row.mode)


def instrument_of(row: InstrumentRow | None) -> Instrument:
    """The symbol's rounding inputs; order-manager's own defaults for a missing row or column."""
    if row is None:
        return ORDER_MANAGER_DEFAULTS
    d = ORDER_MANAGER_DEFAULTS
    return Instrument(row.lot_size if row.lot_size else d.lot_size,
                      row.min_order_qty if row.min_order_qty else d.min_order_qty,
                      row.min_order_value if row.min_order_value is not None else d.min_order_value)


def fills_of(rows: list[FillRow]) -> list[Fill]:
    """Orders with fills as the rules replay them (CONTRACTS §3.5 fill path)."""
    return [Fill(Side.LONG if row.side == "buy" else Side.SHORT, row.filled_quantity,
                 row.average_price if row.average_price and row.average_price > 0 else None)
            for row in rows]


def exit_signal(decision: ExitDecision, quote: PriceQuote, market: MarketSnapshot | None,
                strategy_id: str, trace_id: str | None, signal_id: str, context: Mapping[str, Any]) -> TradingSignal:
    """The trading signal for one exit decision.

    The snapshot's price is the trigger price, the one the amount was computed with: order-manager
    turns the amount back into a quantity with it (amount / price = exactly `decision.quantity`).
    Both go out as decimal strings. `urgency` asks for a market order: a resting limit exit may
    never fill.
    """
    snapshot = MarketDataSnapshot(price=decision.trigger_price, spread=None, volume_24h=None, volatility=None)
    if market is not None:
        snapshot = dataclasses.replace(signal_snapshot(market), price=decision.trigger_price)
    metadata = {
        **decision.metadata(),
        "reasoning": f"exit: {decision.reason.value}",
        "urgency": True,
        "price_source": quote.source,
        "price_at": quote.at.isoformat(),
        **context,
    }
    return TradingSignal(
        signal_id=signal_id, signal_type=decision.side_to_send, asset=decision.key.asset,
        amount=decision.amount, confidence=EXIT_CONFIDENCE, timestamp=decision.decided_at,
        strategy_id=strategy_id, model_version=None, is_warmup=False, market_data_snapshot=snapshot,
        metadata=metadata, trace_id=trace_id or str(uuid.uuid4()), exact_decimals=True)
