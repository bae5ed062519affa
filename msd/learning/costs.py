"""The round-trip cost each outcome is judged against, from the strategy's own fills (DESIGN §6).

A fill's one-way cost is its fee as a fraction of its notional plus its adverse slippage
against the decision-time price of its signal (a buy filled above the snapshot price, a sell
below). The round-trip cost before a decision is twice the **median** one-way cost of the
strategy's fills executed in the `window_s` before the decision (never at or after it),
floored at the configured cost, which is also the value while fewer than `min_fills` usable
fills are in the window. A fill whose one-way cost is beyond ±MAX_ONE_WAY_COST (a price in the
wrong unit, a fee of half the notional) is refused and counted: with a plain mean, one such
fill set every outcome's cost for a day (review finding 13). Pure: fills and decisions arrive
in time order.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from datetime import datetime, timedelta
from typing import Callable, Iterable, Iterator

import numpy as np

from msd.values.parsing import epoch_microseconds
from msd.values.records import CostFill

__all__ = ["MAX_ONE_WAY_COST", "CostFill", "RollingCost", "costs_for", "one_way_cost",
           "one_way_costs", "rolling_costs"]

# No real fill costs 5 % one way: beyond it the record is wrong (unit, price or fee), not the
# market, and it must not become the cost every outcome is judged against.
MAX_ONE_WAY_COST = 0.05


def one_way_costs(buy: np.ndarray, quantity: np.ndarray, price: np.ndarray, fee: np.ndarray,
                  snapshot_price: np.ndarray) -> np.ndarray:
    """fee / notional + adverse slippage vs the decision price, per fill; NaN where the fill
    is unusable (a number not finite, a quantity or price not > 0) or its cost is beyond
    ±MAX_ONE_WAY_COST (refused)."""
    q, p, f, ref = (np.asarray(a, dtype=np.float64) for a in (quantity, price, fee, snapshot_price))
    with np.errstate(all="ignore"):
        usable = (np.isfinite(q) & np.isfinite(p) & np.isfinite(f) & np.isfinite(ref)
                  & (np.minimum(np.minimum(q, p), ref) > 0))
        slippage = p / ref - 1.0
        adverse = np.where(np.asarray(buy, dtype=bool), slippage, -slippage)
        cost = f / (q * p) + adverse
    return np.where(usable & (np.abs(cost) <= MAX_ONE_WAY_COST), cost, np.nan)


def one_way_cost(fill: CostFill) -> float | None:
    """One fill's one-way cost by the rule of one_way_costs (None: unusable or refused)."""
    cost = float(one_way_costs(np.array([fill.side == "buy"]), *(np.array([v]) for v in (
        fill.quantity, fill.price, fill.fee, fill.snapshot_price)))[0])
    return None if math.isnan(cost) else cost


class RollingCost:
    """Feed fills in execution order with `add`, ask `at(moment)` in non-decreasing order.

    Times are kept as epoch microseconds (exact); `add_cost` / `at_us` are the same steps for
    callers that hold those already (the bulk dataset)."""

    def __init__(self, floor: float, window_s: float, min_fills: int) -> None:
        if not (math.isfinite(floor) and 0 <= floor < 1):
            raise ValueError(f"floor: {floor!r} is invalid; expected a fraction in [0, 1)")
        self.floor, self.min_fills = floor, min_fills
        self.window_us = timedelta(seconds=window_s) // timedelta(microseconds=1)
        self._fills: deque[tuple[int, float]] = deque()
        self._sorted: list[float] = []          # the window's costs, sorted (for the median)
        self.refused = 0                        # fills unusable or beyond MAX_ONE_WAY_COST

    def add(self, fill: CostFill) -> None:
        cost = one_way_cost(fill)
        self.add_cost(epoch_microseconds(fill.executed_at), math.nan if cost is None else cost)

    def add_cost(self, executed_us: int, cost: float) -> None:
        """A fill executed at `executed_us` with one-way `cost` (NaN: refused)."""
        if cost != cost:
            self.refused += 1
            return
        self._fills.append((executed_us, cost))
        bisect.insort(self._sorted, cost)

    def at(self, moment: datetime) -> float:
        """The round-trip cost for a decision at `moment` (fills added must be before it)."""
        return self.at_us(epoch_microseconds(moment))

    def at_us(self, moment_us: int) -> float:
        start = moment_us - self.window_us
        while self._fills and self._fills[0][0] < start:
            gone = self._fills.popleft()[1]
            del self._sorted[bisect.bisect_left(self._sorted, gone)]
        n = len(self._sorted)
        if n < self.min_fills or n == 0:
            return self.floor
        median = (self._sorted[(n - 1) // 2] + self._sorted[n // 2]) / 2.0
        return max(self.floor, 2.0 * median)


def rolling_costs(moments_us: np.ndarray, fill_us: np.ndarray, fill_costs: np.ndarray,
                  floor: float, window_s: float, min_fills: int,
                  progress: Callable[[], None] = lambda: None) -> np.ndarray:
    """The round-trip cost at each of `moments_us` (non-decreasing epoch microseconds) from
    fills executed at `fill_us` (execution order) with one-way `fill_costs` (NaN: refused):
    RollingCost over arrays, each fill added once it is before the moment; `progress` is
    called every block of moments."""
    rolling = RollingCost(floor, window_s, min_fills)
    add, at = rolling.add_cost, rolling.at_us
    # how many fills lie before each moment (strictly): those are added by then
    added_by = np.searchsorted(fill_us, moments_us, side="left")
    out = np.empty(len(moments_us))
    added, last, last_cost = 0, None, floor
    # in blocks: a million Python numbers at once would cost more memory than the dataset
    for start in range(0, len(moments_us), _BLOCK):
        stop = min(start + _BLOCK, len(moments_us))
        upto_block = int(added_by[stop - 1])
        times = fill_us[added:upto_block].tolist()
        costs = fill_costs[added:upto_block].tolist()
        base, block = added, []
        for moment, upto in zip(moments_us[start:stop].tolist(),
                                added_by[start:stop].tolist()):
            while added < upto:
                add(times[added - base], costs[added - base])
                added += 1
            if moment != last:             # equal moments have equal windows
                last, last_cost = moment, at(moment)
            block.append(last_cost)
        out[start:stop] = block
        progress()
    return out


_BLOCK = 65_536


def costs_for(moments: Iterable[datetime], fills: Iterable[CostFill], floor: float,
              window_s: float, min_fills: int) -> Iterator[float]:
    """The cost at each of `moments` (non-decreasing) from `fills` (execution order)."""
    rolling = RollingCost(floor, window_s, min_fills)
    pending = iter(fills)
    upcoming = next(pending, None)
    for moment in moments:
        while upcoming is not None and upcoming.executed_at < moment:
            rolling.add(upcoming)
            upcoming = next(pending, None)
        yield rolling.at(moment)
