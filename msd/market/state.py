"""Market state per asset, built from the ws-gateway streams (CONTRACTS.md §4), and the snapshot
that goes into every signal's `market_data_snapshot` (FR-005, FR-008).

`MarketState` is the one mutable holder: `apply` merges parsed updates into it. Everything
computed from it (mid, spread, volatility, returns, staleness) is a pure function of the stored
values and the `now` passed in, so the same state read at the same instant always gives the
same snapshot.

The bars are 1-minute klines live. A backtest on longer candles builds the state with
`bar_length` N minutes (its candle feature profile): volatility is then the std of N-minute log
returns divided by sqrt(N) (the 1-minute figure a random walk would give); a return over a
lookback shorter than a bar (1m on 5-minute candles) is the newest bar's return x lookback / N,
the expected part of it given the bar's move under a driftless random walk (the candles cannot
give the real one); a lookback that is longer but not a whole number of bars is None; the hour
mean needs half the hour's bars of that length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Mapping

from msd.values.messages import BookTop, Kline, MarketUpdate, TickerUpdate, Trade

UNAVAILABLE_REASONS = ("no_data", "stale", "no_price", "crossed_book")
BAR_LENGTH = timedelta(minutes=1)
VOLATILITY_WINDOW = timedelta(hours=1)
# One hour of 1-minute returns needs 61 closed bars; one more holds the bar still forming.
BARS_KEPT = 64
# Returns are only quoted while the newest closed bar is this recent; older bars would present
# an old move as the current one when the kline stream stalls but tickers keep coming.
RETURNS_MAX_BAR_AGE = timedelta(minutes=2)
RETURN_LOOKBACKS = (("1m", 1), ("5m", 5), ("15m", 15))
_HUNDRED = Decimal(100)
_TWO = Decimal(2)


@dataclass(frozen=True)
class Unavailable:
    """No snapshot for `asset`; `reason` is a metric label from UNAVAILABLE_REASONS."""
    asset: str
    reason: str


@dataclass(frozen=True)
class Bar:
    """The stored part of a 1-minute kline; `timestamp` orders updates of the same minute."""
    start: datetime
    close: Decimal
    confirmed: bool
    timestamp: datetime


@dataclass(frozen=True)
class MarketSnapshot:
    """The market as one strategy decision saw it.

    `price` is the last traded price (trade stream or ticker lastPrice, whichever is newer),
    else the mid. `spread_pct` is (ask - bid) / mid * 100. `volatility` is the population
    standard deviation of 1-minute log returns over the last hour (a fraction). `returns` maps
    "1m"/"5m"/"15m" to log returns, None where the bars are missing.
    """
    asset: str
    at: datetime
    price: Decimal
    mid: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    spread_pct: Decimal | None
    volume_24h: Decimal | None
    volatility: float | None
    returns: Mapping[str, float | None]
    orderbook_depth: Mapping[str, Decimal | None]
    age_seconds: float
    sma_60m: float | None = None        # mean close of the last hour's closed 1-minute bars

    def to_wire(self) -> dict:
        """The signal's `market_data_snapshot` object (JSON floats; None where unknown)."""
        indicators = {f"return_{label}": self.returns.get(label) for label, _ in RETURN_LOOKBACKS}
        indicators["mid"] = _as_float(self.mid)
        indicators["sma_60m"] = self.sma_60m
        return {
            "price": float(self.price),
            "spread": _as_float(self.spread_pct),
            "volume_24h": _as_float(self.volume_24h),
            "volatility": self.volatility,
            "orderbook_depth": {key: _as_float(value) for key, value in self.orderbook_depth.items()},
            "technical_indicators": indicators,
        }


def _as_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass
class AssetState:
    """Latest known values for one asset; each group remembers when it was last set."""
    asset: str
    last_price: Decimal | None = None
    last_price_at: datetime | None = None
    last_trade_quantity: Decimal | None = None
    bid: Decimal | None = None
    bid_size: Decimal | None = None
    ask: Decimal | None = None
    ask_size: Decimal | None = None
    book_at: datetime | None = None
    volume_24h: Decimal | None = None
    ticker_at: datetime | None = None
    bars: dict[datetime, Bar] = field(default_factory=dict)
    updated_at: datetime | None = None


def _is_newer(incoming: datetime, stored: datetime | None) -> bool:
    # Streams arrive on separate queues; an older message must not undo a newer one.
    return stored is None or incoming >= stored


def _apply_ticker(state: AssetState, update: TickerUpdate) -> None:
    """Snapshot/delta merge: a field the delta does not carry (None) keeps its old value."""
    if update.last_price is not None and _is_newer(update.timestamp, state.last_price_at):
        state.last_price, state.last_price_at = update.last_price, update.timestamp
    book_fields = {"bid": update.bid, "bid_size": update.bid_size,
                   "ask": update.ask, "ask_size": update.ask_size}
    if any(v is not None for v in book_fields.values()) and _is_newer(update.timestamp, state.book_at):
        for name, value in book_fields.items():
            if value is not None:
                setattr(state, name, value)
        state.book_at = update.timestamp
    if _is_newer(update.timestamp, state.ticker_at):
        if update.volume_24h is not None:
            state.volume_24h = update.volume_24h
        state.ticker_at = update.timestamp


def _apply_book(state: AssetState, update: BookTop) -> None:
    """A snapshot replaces both sides (None = empty); a delta only changes the sides it carries.

    Bybit deltas list changed levels only, so a side absent from a delta is unchanged rather
    than empty; the parsed BookTop cannot tell "absent" from "deleted", and treating absent as
    unchanged is right for the common case (the next snapshot repairs the rare other one).
    """
    if not _is_newer(update.timestamp, state.book_at):
        return
    if update.is_snapshot or update.bid is not None:
        state.bid, state.bid_size = update.bid, update.bid_size
    if update.is_snapshot or update.ask is not None:
        state.ask, state.ask_size = update.ask, update.ask_size
    state.book_at = update.timestamp


def _apply_trade(state: AssetState, update: Trade) -> None:
    if _is_newer(update.timestamp, state.last_price_at):
        state.last_price, state.last_price_at = update.price, update.timestamp
        state.last_trade_quantity = update.quantity


def _apply_kline(state: AssetState, update: Kline, bars_kept: int) -> None:
    """Keep one bar per minute start; a later update of the same minute replaces it."""
    stored = state.bars.get(update.start)
    if stored is not None and not _is_newer(update.timestamp, stored.timestamp):
        return
    state.bars[update.start] = Bar(update.start, update.close, update.confirmed, update.timestamp)
    for start in sorted(state.bars)[:-bars_kept]:
        del state.bars[start]


class MarketState:
    """Per-asset market state fed by `apply`; read with `snapshot`."""

    def __init__(self, bars_kept: int = BARS_KEPT, bar_length: timedelta = BAR_LENGTH):
        if bars_kept < 62:
            raise ValueError(f"bars_kept: {bars_kept!r} is invalid; expected an integer >= 62 "
                             "(61 closed bars for an hour of returns plus the forming one)")
        if bar_length < BAR_LENGTH or bar_length % BAR_LENGTH:
            raise ValueError(f"bar_length: {bar_length} is invalid; expected a whole number of minutes >= 1")
        self._bars_kept = bars_kept
        self.bar_length = bar_length
        self._assets: dict[str, AssetState] = {}

    def apply(self, update: MarketUpdate) -> None:
        """Merge one parsed ws-gateway update into the state of its asset."""
        state = self._assets.setdefault(update.asset, AssetState(update.asset))
        if isinstance(update, TickerUpdate):
            _apply_ticker(state, update)
        elif isinstance(update, BookTop):
            _apply_book(state, update)
        elif isinstance(update, Trade):
            _apply_trade(state, update)
        elif isinstance(update, Kline):
            _apply_kline(state, update, self._bars_kept)
        else:
            raise TypeError(f"not a market update: {type(update).__name__}")
        if _is_newer(update.timestamp, state.updated_at):
            state.updated_at = update.timestamp

    def asset_state(self, asset: str) -> AssetState | None:
        """The raw stored values of an asset (for status pages and tests), None if never seen."""
        return self._assets.get(asset)

    def snapshot(self, asset: str, now: datetime,
                 max_age_seconds: float) -> MarketSnapshot | Unavailable:
        """The asset's snapshot at `now`, or why there is none."""
        state = self._assets.get(asset)
        if state is None:
            return Unavailable(asset, "no_data")
        return build_snapshot(state, now, max_age_seconds, self.bar_length)


def mid_price(bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    """Midpoint of a two-sided book, None when a side is missing."""
    if bid is None or ask is None:
        return None
    return (bid + ask) / _TWO


def spread_percent(bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    """(ask - bid) / mid * 100, None when a side is missing or the mid is not positive."""
    mid = mid_price(bid, ask)
    if mid is None or mid <= 0:
        return None
    return (ask - bid) / mid * _HUNDRED


def closed_bars(bars: Mapping[datetime, Bar]) -> list[Bar]:
    """Bars in time order whose close is final.

    A bar counts as closed when confirmed or when a later bar exists: a lost `confirm` message
    must not keep a finished minute out of the volatility forever.
    """
    ordered = [bars[start] for start in sorted(bars)]
    if ordered and not ordered[-1].confirmed:
        ordered.pop()
    return ordered


def one_minute_log_returns(bars: list[Bar], now: datetime, length: timedelta = BAR_LENGTH) -> list[float]:
    """Log returns between adjacent bars whose later bar closed within the last hour.

    Pairs across a gap are skipped: a 3-minute move is not a 1-minute return.
    """
    earliest_close = now - VOLATILITY_WINDOW
    returns = []
    for previous, current in zip(bars, bars[1:]):
        if current.start - previous.start != length or current.start + length <= earliest_close:
            continue
        if previous.close > 0 and current.close > 0:
            returns.append(math.log(current.close / previous.close))
    return returns


def realised_volatility(bars: Mapping[datetime, Bar], now: datetime,
                        length: timedelta = BAR_LENGTH) -> float | None:
    """Population std (ddof=0) of the last hour's 1-minute log returns; None below 2 returns.
    On longer bars, the std of their returns / sqrt(minutes per bar) (random-walk scaling)."""
    returns = one_minute_log_returns(closed_bars(bars), now, length)
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    return math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns) / (length / BAR_LENGTH))


def bar_returns(bars: Mapping[datetime, Bar], now: datetime,
                length: timedelta = BAR_LENGTH) -> dict[str, float | None]:
    """Log returns over 1, 5 and 15 minutes ending at the newest closed bar (if it is fresh);
    on bars longer than a lookback, the newest bar's return scaled to it (module doc); None for
    a longer lookback that is not a whole number of bars."""
    result: dict[str, float | None] = {label: None for label, _ in RETURN_LOOKBACKS}
    closed = closed_bars(bars)
    if not closed or closed[-1].start + length < now - RETURNS_MAX_BAR_AGE:
        return result
    newest = closed[-1]
    for label, minutes in RETURN_LOOKBACKS:
        lookback = minutes * BAR_LENGTH
        if lookback % length and lookback > length:
            continue
        earlier = bars.get(newest.start - max(lookback, length))
        if earlier is not None and earlier.close > 0 and newest.close > 0:
            result[label] = math.log(newest.close / earlier.close) * min(1.0, lookback / length)
    return result


def hourly_mean_close(bars: Mapping[datetime, Bar], now: datetime,
                      length: timedelta = BAR_LENGTH) -> float | None:
    """Mean close of the closed bars that ended within the last hour; None with fewer than half
    the hour's bars (30 of 1 minute)."""
    earliest_close = now - VOLATILITY_WINDOW
    closes = [float(b.close) for b in closed_bars(bars) if b.start + length > earliest_close]
    # Half an hour of bars at least, so a fresh start does not present 2 minutes as an hour.
    return sum(closes) / len(closes) if len(closes) >= VOLATILITY_WINDOW / length / 2 else None


def build_snapshot(state: AssetState, now: datetime, max_age_seconds: float,
                   bar_length: timedelta = BAR_LENGTH) -> MarketSnapshot | Unavailable:
    """Pure: the snapshot of one asset's stored values at `now`."""
    if state.updated_at is None:
        return Unavailable(state.asset, "no_data")
    # Exchange clocks can run slightly ahead of ours; a negative age is treated as fresh.
    age = max(0.0, (now - state.updated_at).total_seconds())
    if age > max_age_seconds:
        return Unavailable(state.asset, "stale")
    if state.bid is not None and state.ask is not None and state.bid > state.ask:
        return Unavailable(state.asset, "crossed_book")
    mid = mid_price(state.bid, state.ask)
    price = state.last_price if state.last_price is not None and state.last_price > 0 else mid
    if price is None or price <= 0:
        return Unavailable(state.asset, "no_price")
    return MarketSnapshot(
        asset=state.asset, at=now, price=price, mid=mid, bid=state.bid, ask=state.ask,
        spread_pct=spread_percent(state.bid, state.ask), volume_24h=state.volume_24h,
        volatility=realised_volatility(state.bars, now, bar_length), returns=bar_returns(state.bars, now, bar_length),
        orderbook_depth={"bid_depth": state.bid_size, "ask_depth": state.ask_size},
        age_seconds=age, sma_60m=hourly_mean_close(state.bars, now, bar_length),
    )
