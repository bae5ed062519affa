"""What the exit engine evaluates, assembled from the three places it comes from (pure).

position-manager's event says *that* a position changed and its signed size, but carries no entry
or current price (CONTRACTS.md §3). The entry price and open time come from the shared `positions`
row; the price is whichever is freshest of the market state (ws-gateway) and the row's
`current_price` (position-manager's last mark, as of the row's `last_updated`). The winning source
is recorded in the signal so an exit can be traced back to the number that fired it.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from msd.bus.signal_format import MarketDataSnapshot, TradingSignal
from msd.market.state import AssetState, MarketSnapshot, mid_price
from msd.rules import ExitDecision, InvalidPositionData, PositionKey, PositionView, Side
from msd.store.neighbours import PositionRow
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


def table_quote(row: PositionRow) -> PriceQuote | None:
    if row.current_price is None or row.current_price <= 0:
        return None
    return PriceQuote(row.current_price, row.last_updated, "positions_table")


def freshest(quotes: list[PriceQuote | None]) -> PriceQuote | None:
    """The newest quote; on equal times the earlier entry of SOURCES wins."""
    usable = [q for q in quotes if q is not None]
    if not usable:
        return None
    return max(usable, key=lambda q: (q.at, -SOURCES.index(q.source)))


def side_of(size: Decimal) -> Side:
    return Side.LONG if size > 0 else Side.SHORT


def position_view(asset: str, position_id: str, size: Decimal, row: PositionRow,
                  known_opened_at: datetime | None, now: datetime) -> PositionView:
    """The position as the rules see it; `size` is signed and non-zero.

    The open time is the row's `created_at`. position-manager leaves it NULL on some paths (its
    `time_held_minutes` then comes out negative); the position is then dated from when msd first
    saw it (`known_opened_at`, from the stored state), else `now`, so the time exit still works.
    Raises InvalidPositionData when the row has no usable entry price.
    """
    if row.average_entry_price is None:
        raise InvalidPositionData("positions.average_entry_price", None, "a price > 0 (the row has none)")
    opened_at = row.created_at or known_opened_at or now
    key = PositionKey(asset, side_of(size), position_id)
    return PositionView(key=key, size=abs(size), entry_price=row.average_entry_price, opened_at=opened_at)


def exit_signal(decision: ExitDecision, quote: PriceQuote, market: MarketSnapshot | None,
                strategy_id: str, trace_id: str | None, context: Mapping[str, Any]) -> TradingSignal:
    """The trading signal for one exit decision.

    The snapshot's price is the trigger price, not the market's: order-manager turns the amount
    back into a quantity with it (amount / price), which must give exactly |size| x fraction.
    `urgency` asks order-manager for a market order: an exit resting as a limit order may never fill.
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
        signal_id=str(uuid.uuid4()), signal_type=decision.side_to_send, asset=decision.key.asset,
        amount=decision.amount_usdt, confidence=EXIT_CONFIDENCE, timestamp=decision.decided_at,
        strategy_id=strategy_id, model_version=None, is_warmup=False, market_data_snapshot=snapshot,
        metadata=metadata, trace_id=trace_id or str(uuid.uuid4()))


def current_size(update, row: PositionRow) -> Decimal:
    """The position's signed size now: the table's when its row is at least as new as the event
    (position-manager writes the row, then publishes), else the event's."""
    return row.size if row.last_updated >= update.timestamp else update.size
