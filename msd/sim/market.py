"""A seeded synthetic market for the paper exchange: mid price, level-1 book, trade prints and bars.

Pure: the caller passes the start time, the target times and a seeded `random.Random`, so one
seed and one sequence of `advance` targets always give the same market. The path moves on a
fixed grid of `step_s` sim seconds, whatever the caller's tick rate, so publishing faster or
slower does not change the prices.

Regimes:
* `learnable`: the log mid follows a drift that switches sign now and then (mean duration
  `mean_regime_minutes`) plus noise. The drift is observable at decision time in two ways: the
  recent 1-/5-minute returns (a trend persists for many minutes) and the level-1 order book
  imbalance, which leans towards the current drift. With the defaults the next five minutes
  move by ~0.4 % in the drift's direction against ~0.07 % of noise, so a model on recent
  returns and imbalance beats a 0.2 % round-trip fee far more often than 75 % of the time.
* `noise`: a driftless random walk; imbalance and trade sides are drawn independently of it.
"""
from __future__ import annotations

import math
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from msd.values.parsing import finite_decimal

REGIMES = ("learnable", "noise")
MINUTE = timedelta(minutes=1)
DAY_MINUTES = 1440


@dataclass(frozen=True)
class AssetSpec:
    """One simulated linear perpetual: start price, exchange increments and typical activity."""
    symbol: str
    price: float            # start price (quote per base)
    price_tick: Decimal     # Bybit tickSize
    lot: Decimal            # Bybit qtyStep
    level1_size: float      # typical base size resting at each side of the top of book
    volume_24h: float       # base units traded per day
    spread_bps: float       # typical (ask - bid) / mid in basis points

    def __post_init__(self) -> None:
        for name in ("price", "level1_size", "volume_24h", "spread_bps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{self.symbol} {name}: {value!r} is invalid; expected a number > 0")
        for name in ("price_tick", "lot"):
            if not (isinstance(getattr(self, name), Decimal) and getattr(self, name) > 0):
                raise ValueError(f"{self.symbol} {name}: {getattr(self, name)!r} is invalid; "
                                 "expected a Decimal > 0")


CATALOG: dict[str, AssetSpec] = {spec.symbol: spec for spec in (
    AssetSpec("BTCUSDT", 95000.0, Decimal("0.1"), Decimal("0.0001"), 1.5, 120000.0, 2.0),
    AssetSpec("ETHUSDT", 3000.0, Decimal("0.01"), Decimal("0.001"), 25.0, 900000.0, 2.5),
    AssetSpec("SOLUSDT", 140.0, Decimal("0.01"), Decimal("0.01"), 400.0, 9000000.0, 3.0),
    AssetSpec("XRPUSDT", 2.2, Decimal("0.0001"), Decimal("1"), 40000.0, 400000000.0, 3.0),
    AssetSpec("DOGEUSDT", 0.16, Decimal("0.00001"), Decimal("1"), 300000.0, 4000000000.0, 4.0),
)}


@dataclass(frozen=True)
class MarketParams:
    """How the synthetic market behaves; all rates are per sim time."""
    regime: str = "learnable"
    step_s: float = 1.0                     # grid of the price path (sim seconds)
    volatility_per_minute: float = 0.0003   # std of the noise part of 1-minute log returns
    drift_per_minute: float = 0.0008        # |drift| of the log mid in the learnable regime
    mean_regime_minutes: float = 60.0       # mean time between drift sign switches
    book_lean: float = 0.5                  # imbalance offset towards the drift (learnable)
    book_noise: float = 0.25                # std of the imbalance noise
    trades_per_second: float = 0.5          # mean trade prints per sim second and asset
    anchor_pull: float = 20.0               # bias of new drift signs back towards the start price

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime: {self.regime!r} is invalid; expected one of {', '.join(REGIMES)}")
        positive = ("step_s", "volatility_per_minute", "mean_regime_minutes", "trades_per_second")
        non_negative = ("drift_per_minute", "book_lean", "book_noise", "anchor_pull")
        for name in positive + non_negative:
            value = getattr(self, name)
            low_ok = value > 0 if name in positive else value >= 0
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok):
                raise ValueError(f"{name}: {value!r} is invalid; expected a finite number "
                                 f"{'> 0' if name in positive else '>= 0'}")
        if self.step_s > 60 or 60 % self.step_s:
            raise ValueError(f"step_s: {self.step_s!r} is invalid; expected a divisor of 60 seconds")


@dataclass(frozen=True)
class Quote:
    """Level-1 book: best bid/ask and the size resting there."""
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True)
class TradePrint:
    at: datetime
    side: str               # "Buy" (taker bought at the ask) or "Sell"
    price: Decimal
    quantity: Decimal
    trade_id: str
    tick_direction: str     # PlusTick / ZeroPlusTick / MinusTick / ZeroMinusTick


@dataclass(frozen=True)
class GeneratedBar:
    """A 1-minute bar of trade prices; `confirmed` once the minute is over."""
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    turnover: Decimal
    confirmed: bool


@dataclass(frozen=True)
class DayStats:
    """Rolling 24-hour and 1-hour figures a ticker carries."""
    prev_price_24h: Decimal
    high_24h: Decimal
    low_24h: Decimal
    prev_price_1h: Decimal
    volume_24h: Decimal
    turnover_24h: Decimal


@dataclass(frozen=True)
class AssetTick:
    """Everything that happened to one asset up to `at`; `drift_sign` is the hidden truth (tests)."""
    symbol: str
    at: datetime
    quote: Quote
    last_price: Decimal
    last_tick_direction: str
    trades: tuple[TradePrint, ...]
    closed_bars: tuple[GeneratedBar, ...]
    forming_bar: GeneratedBar
    stats: DayStats
    drift_sign: int


@dataclass
class _FloatBar:
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    turnover: float = 0.0


def _quantize(value: float, step: Decimal, rounding=ROUND_FLOOR) -> Decimal:
    """`value` rounded to a multiple of `step`, written with the step's decimals."""
    units = (finite_decimal(value) / step).to_integral_value(rounding=rounding)
    return (units * step).quantize(step)


@dataclass
class _AssetPath:
    """Mutable state of one asset's path (internal to MarketGenerator)."""
    spec: AssetSpec
    log_mid: float
    drift_sign: int
    imbalance: float = 0.0
    spread: float = 0.0
    depth: float = 0.0
    last_price: float = 0.0
    last_direction: str = "ZeroPlusTick"
    bar: _FloatBar | None = None
    day: deque = field(default_factory=lambda: deque(maxlen=DAY_MINUTES))
    day_volume: float = 0.0
    day_turnover: float = 0.0


class MarketGenerator:
    """The market of several assets, advanced on demand with `advance(until)`."""

    def __init__(self, params: MarketParams, assets: tuple[AssetSpec, ...], start: datetime,
                 rng: random.Random):
        if not assets:
            raise ValueError("assets: () is invalid; expected at least one AssetSpec")
        self.params = params
        self._rng = rng
        self._step = timedelta(seconds=params.step_s)
        self._now = start
        self._paths = {spec.symbol: self._new_path(spec, start) for spec in assets}
        self._trades: dict[str, list[TradePrint]] = {symbol: [] for symbol in self._paths}
        self._closed: dict[str, list[GeneratedBar]] = {symbol: [] for symbol in self._paths}

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._paths)

    def spec(self, symbol: str) -> AssetSpec:
        return self._paths[symbol].spec

    def _new_path(self, spec: AssetSpec, start: datetime) -> _AssetPath:
        path = _AssetPath(spec, math.log(spec.price), self._rng.choice((-1, 1)))
        path.last_price = spec.price
        minute = start.replace(second=0, microsecond=0)
        path.bar = _FloatBar(minute, spec.price, spec.price, spec.price, spec.price)
        # A day of flat history at the start price, so 24 h figures look like a running market.
        per_minute = spec.volume_24h / DAY_MINUTES
        for _ in range(DAY_MINUTES):
            path.day.append((spec.price, per_minute, per_minute * spec.price))
        path.day_volume, path.day_turnover = spec.volume_24h, spec.volume_24h * spec.price
        self._update_book(path)
        return path

    def advance(self, until: datetime) -> tuple[AssetTick, ...]:
        """Run every grid step up to `until`; report each asset's state and what happened since."""
        while self._now + self._step <= until:
            self._now += self._step
            for path in self._paths.values():
                self._step_path(path)
        return tuple(self._report(path) for path in self._paths.values())

    # -- one grid step -------------------------------------------------------------------------

    def _step_path(self, path: _AssetPath) -> None:
        p = self.params
        minutes = p.step_s / 60.0
        if p.regime == "learnable":
            if self._rng.random() < minutes / p.mean_regime_minutes:
                path.drift_sign = self._new_drift_sign(path)
            path.log_mid += path.drift_sign * p.drift_per_minute * minutes
        path.log_mid += p.volatility_per_minute * math.sqrt(minutes) * self._rng.gauss(0.0, 1.0)
        self._roll_minute(path)
        self._update_book(path)
        count = self._poisson(p.trades_per_second * p.step_s)
        for index in range(count):
            self._print_trade(path, self._now - self._step * (1 - (index + 1) / (count + 1)))

    def _new_drift_sign(self, path: _AssetPath) -> int:
        # Without a pull back, a long run of trends would walk the price anywhere.
        distance = path.log_mid - math.log(path.spec.price)
        up = 1.0 / (1.0 + math.exp(self.params.anchor_pull * distance))
        return 1 if self._rng.random() < up else -1

    def _lean(self, path: _AssetPath) -> float:
        return path.drift_sign * self.params.book_lean if self.params.regime == "learnable" else 0.0

    def _update_book(self, path: _AssetPath) -> None:
        imbalance = self._lean(path) + self._rng.gauss(0.0, self.params.book_noise)
        path.imbalance = max(-0.9, min(0.9, imbalance))
        path.spread = path.spec.spread_bps * 1e-4 * self._rng.uniform(0.7, 1.3)
        path.depth = path.spec.level1_size * math.exp(self._rng.gauss(0.0, 0.3))

    def _poisson(self, mean: float) -> int:
        # Knuth's method: means here are a few units, so the loop is short.
        limit, count, product = math.exp(-mean), 0, self._rng.random()
        while product > limit:
            count += 1
            product *= self._rng.random()
        return count

    def _print_trade(self, path: _AssetPath, at: datetime) -> None:
        spec = path.spec
        buy_share = 0.5 + 0.6 * self._lean(path)
        side = "Buy" if self._rng.random() < buy_share else "Sell"
        quote = self._quote(path)
        price = quote.ask if side == "Buy" else quote.bid
        mean_size = spec.volume_24h / 86400.0 / self.params.trades_per_second
        quantity = max(spec.lot, _quantize(self._rng.expovariate(1.0) * mean_size, spec.lot))
        self._record_trade(path, float(price), float(quantity))
        self._trades[spec.symbol].append(TradePrint(
            at=at, side=side, price=price, quantity=quantity,
            trade_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            tick_direction=path.last_direction))

    def _record_trade(self, path: _AssetPath, price: float, quantity: float) -> None:
        if price > path.last_price:
            path.last_direction = "PlusTick"
        elif price < path.last_price:
            path.last_direction = "MinusTick"
        else:
            path.last_direction = "ZeroPlusTick" if path.last_direction.endswith("PlusTick") else "ZeroMinusTick"
        path.last_price = price
        bar = path.bar
        bar.high, bar.low, bar.close = max(bar.high, price), min(bar.low, price), price
        bar.volume += quantity
        bar.turnover += quantity * price

    def _roll_minute(self, path: _AssetPath) -> None:
        """Close the forming bar once the grid reaches the next minute."""
        if self._now < path.bar.start + MINUTE:
            return
        closed = path.bar
        self._closed[path.spec.symbol].append(self._decimal_bar(path.spec, closed, confirmed=True))
        old_close, old_volume, old_turnover = path.day[0]
        path.day.append((closed.close, closed.volume, closed.turnover))
        path.day_volume += closed.volume - old_volume
        path.day_turnover += closed.turnover - old_turnover
        price = closed.close
        path.bar = _FloatBar(closed.start + MINUTE, price, price, price, price)

    # -- reporting -----------------------------------------------------------------------------

    def _quote(self, path: _AssetPath) -> Quote:
        spec = path.spec
        mid = math.exp(path.log_mid)
        ticks = max(1, round(mid * path.spread / float(spec.price_tick)))
        bid = _quantize(mid - ticks * float(spec.price_tick) / 2, spec.price_tick)
        ask = bid + ticks * spec.price_tick
        bid_size = max(spec.lot, _quantize(path.depth * (1 + path.imbalance), spec.lot))
        ask_size = max(spec.lot, _quantize(path.depth * (1 - path.imbalance), spec.lot))
        return Quote(bid, ask, bid_size, ask_size)

    @staticmethod
    def _decimal_bar(spec: AssetSpec, bar: _FloatBar, *, confirmed: bool) -> GeneratedBar:
        price = lambda value: _quantize(value, spec.price_tick, ROUND_CEILING)  # noqa: E731
        return GeneratedBar(start=bar.start, open=price(bar.open), high=price(bar.high), low=price(bar.low),
                   close=price(bar.close), volume=_quantize(bar.volume, spec.lot),
                   turnover=_quantize(bar.turnover, Decimal("0.0001")), confirmed=confirmed)

    def _stats(self, path: _AssetPath) -> DayStats:
        closes = [close for close, _, _ in path.day]
        forming = path.bar
        price = lambda value: _quantize(value, path.spec.price_tick, ROUND_CEILING)  # noqa: E731
        return DayStats(
            prev_price_24h=price(closes[0]), high_24h=price(max(max(closes), forming.high)),
            low_24h=price(min(min(closes), forming.low)), prev_price_1h=price(closes[-60]),
            volume_24h=_quantize(path.day_volume + forming.volume, path.spec.lot),
            turnover_24h=_quantize(path.day_turnover + forming.turnover, Decimal("0.0001")))

    def _report(self, path: _AssetPath) -> AssetTick:
        symbol = path.spec.symbol
        trades, self._trades[symbol] = tuple(self._trades[symbol]), []
        closed, self._closed[symbol] = tuple(self._closed[symbol]), []
        return AssetTick(
            symbol=symbol, at=self._now, quote=self._quote(path),
            last_price=_quantize(path.last_price, path.spec.price_tick, ROUND_CEILING),
            last_tick_direction=path.last_direction, trades=trades, closed_bars=closed,
            forming_bar=self._decimal_bar(path.spec, path.bar, confirmed=False),
            stats=self._stats(path), drift_sign=path.drift_sign if self.params.regime == "learnable" else 0)
