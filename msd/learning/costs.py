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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator

# No real fill costs 5 % one way: beyond it the record is wrong (unit, price or fee), not the
# market, and it must not become the cost every outcome is judged against.
MAX_ONE_WAY_COST = 0.05


@dataclass(frozen=True)
class CostFill:
    executed_at: datetime
    side: str
    quantity: float
    price: float
    fee: float              # quote currency
    snapshot_price: float   # the decision-time price of the fill's signal

    def one_way_cost(self) -> float | None:
        """fee / notional + adverse slippage vs the decision price; None if unusable."""
        values = (self.quantity, self.price, self.fee, self.snapshot_price)
        if not all(math.isfinite(v) for v in values) or min(self.quantity, self.price,
                                                              self.snapshot_price) <= 0:
            return None
        slippage = self.price / self.snapshot_price - 1.0
        adverse = slippage if self.side == "buy" else -slippage
        return self.fee / (self.quantity * self.price) + adverse


class RollingCost:
    """Feed fills in execution order with `add`, ask `at(moment)` in non-decreasing order."""

    def __init__(self, floor: float, window_s: float, min_fills: int) -> None:
        if not (math.isfinite(floor) and 0 <= floor < 1):
            raise ValueError(f"floor: {floor!r} is invalid; expected a fraction in [0, 1)")
        self.floor, self.window, self.min_fills = floor, timedelta(seconds=window_s), min_fills
        self._fills: deque[tuple[datetime, float]] = deque()
        self._sorted: list[float] = []          # the window's costs, sorted (for the median)
        self.refused = 0                        # fills unusable or beyond MAX_ONE_WAY_COST

    def add(self, fill: CostFill) -> None:
        cost = fill.one_way_cost()
        if cost is None or abs(cost) > MAX_ONE_WAY_COST:
            self.refused += 1
            return
        self._fills.append((fill.executed_at, cost))
        bisect.insort(self._sorted, cost)

    def at(self, moment: datetime) -> float:
        """The round-trip cost for a decision at `moment` (fills added must be before it)."""
        while self._fills and self._fills[0][0] < moment - self.window:
            gone = self._fills.popleft()[1]
            del self._sorted[bisect.bisect_left(self._sorted, gone)]
        n = len(self._sorted)
        if n < self.min_fills or n == 0:
            return self.floor
        median = (self._sorted[(n - 1) // 2] + self._sorted[n // 2]) / 2.0
        return max(self.floor, 2.0 * median)


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
