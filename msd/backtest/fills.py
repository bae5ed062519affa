"""When and at what price an order fills in a backtest: the stated rules, pure.

Decisions are taken at candle close on what was known then. A Market order fills on the candle
in which it reaches the exchange (decision time + latency: the next candle for any latency
shorter than a candle), at that candle's open, half the spread worse (buys above, sells below). A Limit order (order-manager's choice, CONTRACTS §1.2) rests at
the bid (buy) or ask (sell) of decision time and fills at its price when a later candle trades
through it (low below a buy, high above a sell) within its time to live, at the open when the
candle opens beyond it (a gap); else it is cancelled.
Exits are checked on each candle's path, pessimistically: the open first (a gap), then the
adverse extreme (so a stop inside the candle comes before a take-profit in the same candle), the
favourable extreme, the close, at the candle's open, a third and two thirds of its length, and
its end. A rule that fires inside the candle fills at its level, one that
fires at the open at the open (the worse of the two, since at the open it had not fired yet),
half the spread worse in both cases.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from msd.backtest.candles import Candle

BUY, SELL = "Buy", "SELL"


@dataclass(frozen=True)
class CostModel:
    """Fees are fractions of notional per side; the half spread a fraction of the price."""
    taker_fee: Decimal
    maker_fee: Decimal
    half_spread: Decimal
    latency: timedelta
    limit_ttl: timedelta

    def __post_init__(self) -> None:
        for name in ("taker_fee", "maker_fee", "half_spread"):
            value = getattr(self, name)
            if not (value.is_finite() and 0 <= value < 1):
                raise ValueError(f"{name}: {value} is invalid; expected a fraction in [0, 1)")
        if self.latency < timedelta(0) or self.limit_ttl <= timedelta(0):
            raise ValueError(f"latency {self.latency} must be >= 0 and limit ttl {self.limit_ttl} > 0")


@dataclass(frozen=True)
class PathPoint:
    """One price the candle is assumed to have traded, in the pessimistic order."""
    name: str            # open | low | high | close
    price: Decimal
    at: datetime


def worse(side: str, price: Decimal, half_spread: Decimal) -> Decimal:
    """A taker's price: half the spread above for a buy, below for a sell."""
    return price * (1 + half_spread) if side == BUY else price * (1 - half_spread)


def market_fill_price(side: str, candle: Candle, half_spread: Decimal) -> Decimal:
    return worse(side, candle.open, half_spread)


def quotes(close: Decimal, half_spread: Decimal) -> tuple[Decimal, Decimal]:
    """(bid, ask) around a close: the candle profile's book, symmetric around the last price."""
    return close * (1 - half_spread), close * (1 + half_spread)


def limit_price(side: str, close: Decimal, half_spread: Decimal) -> Decimal:
    """Join the decision-time bid (buy) or ask (sell), as msd-sim's order-manager does."""
    bid, ask = quotes(close, half_spread)
    return bid if side == BUY else ask


def limit_traded_through(side: str, price: Decimal, candle: Candle) -> bool:
    """Strictly through: touching the price is not enough for a resting order's queue."""
    return candle.low < price if side == BUY else candle.high > price


def arrival(decided_at: datetime, latency: timedelta, candle: Candle, length: timedelta) -> datetime | None:
    """When the order reaches the exchange, if it does before `candle` ends (else None: not yet).
    The candle it arrives in is the one it trades on, at that candle's open for a Market order:
    the open stands for the price at arrival."""
    arrives = decided_at + latency
    return arrives if arrives < candle.open_time + length else None


def exit_path(long: bool, candle: Candle, length: timedelta) -> tuple[PathPoint, ...]:
    """The candle's prices, the adverse extreme before the favourable one, a third of the candle
    apart: distinct moments, as the extremes of a real candle are, so the exits' debounce (which
    coalesces prices closer than exits.debounce_s into the newest) never drops the adverse one."""
    adverse, favourable = (candle.low, candle.high) if long else (candle.high, candle.low)
    return (PathPoint("open", candle.open, candle.open_time),
            PathPoint("adverse", adverse, candle.open_time + length / 3),
            PathPoint("favourable", favourable, candle.open_time + 2 * length / 3),
            PathPoint("close", candle.close, candle.open_time + length))


def exit_base_price(point: PathPoint, level: Decimal | None) -> Decimal:
    """Where an exit trades before the spread: at the open the market already was past the level
    (a gap), so the open; inside the candle the level the rule named (a time exit has none: the
    point's price)."""
    return point.price if point.name == "open" or level is None else level
