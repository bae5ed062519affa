"""No look-ahead, checked by poisoning the future (`msd backtest --check-lookahead`).

The same backtest runs three times: on the data as given, and twice with every candle from the
cut on replaced, once by noise (a random walk) and once by a steady trend, and once more with
only the candle holding the cut changed inside (its high, low and close; its open is known at
the cut). Everything the replay did before the cut (decisions with their sides, amounts, modes
and versions, fills with their prices, exits, cancels, trainings and their verdicts) must be
identical in all runs; the check also says whether there was enough before the cut to mean
something (decisions, exits, trainings) and that the poisoned runs did differ after it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from msd.backtest.candles import Candle, Series
from msd.backtest.replay import Options, Replay
from msd.values.parsing import finite_decimal

KINDS = ("noise", "trend", "inside")
AFTER_CUT = timedelta(hours=2)


def _candle(at: datetime, o: float, path: list[float], volume: Decimal) -> Candle:
    q = Decimal("1e-10")
    values = [finite_decimal(max(v, 1e-12)).quantize(q) for v in [o, max(path + [o]), min(path + [o]), path[-1]]]
    return Candle(at, values[0], values[1], values[2], values[3], volume)


def poison(series: Series, cut: datetime, kind: str, seed: int) -> Series:
    """`series` with its future from `cut` replaced (module doc)."""
    rng = random.Random(f"{seed}/{kind}/{series.asset}")
    candles, price = [], None
    for candle in series.candles:
        if candle.open_time < cut:
            candles.append(candle)
            continue
        if kind == "inside":
            if candle.open_time == cut:
                o = float(candle.open)
                candles.append(_candle(candle.open_time, o, [o * 1.03, o * 0.97, o * 1.01], candle.volume))
            else:
                candles.append(candle)
            continue
        o = float(candle.open) if price is None else price
        steps = [rng.gauss(0, 0.004) for _ in range(4)] if kind == "noise" else [0.001] * 4
        path, p = [], o
        for step in steps:
            p *= 1 + step
            path.append(p)
        candles.append(_candle(candle.open_time, o, path, candle.volume))
        price = path[-1]
    return replace(series, candles=tuple(candles))


@dataclass(frozen=True)
class LookaheadCheck:
    cut: datetime
    identical_before: bool
    first_difference: str | None
    decisions_before: int
    exits_before: int
    trainings_before: int
    differs_after: bool

    @property
    def meaningful(self) -> bool:
        return self.decisions_before >= 50 and self.exits_before >= 1 and self.trainings_before >= 1

    def lines(self) -> list[str]:
        verdict = "no look-ahead found" if self.identical_before else f"LOOK-AHEAD: {self.first_difference}"
        return [f"cut at {self.cut.isoformat()}: {verdict}",
                f"before the cut: {self.decisions_before} decisions, {self.exits_before} exits, "
                f"{self.trainings_before} trainings" + ("" if self.meaningful else
                                                      " (too few to prove much: want >= 50, 1, 1)"),
                f"after the cut the poisoned runs {'differ' if self.differs_after else 'DO NOT differ'}"]


def default_cut(series: list[Series]) -> datetime:
    """Two thirds into the common time range, on a candle's open."""
    times = sorted({c.open_time for s in series for c in s.candles})
    return times[(2 * len(times)) // 3]


def check(config, series: list[Series], options: Options, cut: datetime | None = None,
          after: timedelta = AFTER_CUT) -> LookaheadCheck:
    """The runs stop `after` the cut: what comes later cannot change what came before, and the
    differences after the cut show within that time."""
    cut = cut or default_cut(series)
    series = [replace(s, candles=tuple(c for c in s.candles if c.open_time < cut + after)) for s in series]
    base = Replay(config, series, options).run().events
    before = [e for e in base if e[0] < cut]
    first, differs = None, True
    for kind in KINDS:
        events = Replay(config, [poison(s, cut, kind, options.seed or 0) for s in series], options).run().events
        mine = [e for e in events if e[0] < cut]
        if mine != before and first is None:
            index = next((i for i, (a, b) in enumerate(zip(before, mine)) if a != b), min(len(before), len(mine)))
            first = f"{kind}: event {index}: {before[index] if index < len(before) else None} vs " \
                    f"{mine[index] if index < len(mine) else None}"
        if kind != "inside":
            differs = differs and [e for e in events if e[0] >= cut] != [e for e in base if e[0] >= cut]
    return LookaheadCheck(cut, first is None, first, sum(1 for e in before if e[1] == "decision"),
                          sum(1 for e in before if e[1] == "exit"), sum(1 for e in before if e[1] == "training" and e[3] is not None),
                          differs)
