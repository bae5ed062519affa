"""Which price an exit is judged at: the freshest of the market's last trade, its book mid and
position-manager's mark in the positions row. Pure. (How each market update moves a
position's price extreme is msd.strategies.exit_step.price_event.)

position-manager's event says *that* a position changed but carries no price (CONTRACTS §3);
the row's `current_price` is position-manager's last mark, as of the row's `last_updated`. The
winning source is recorded in the exit signal so an exit can be traced back to the number that
fired it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from msd.market.state import AssetState, mid_price
from msd.rules import RowFacts

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
