"""The round-trip cost each outcome is judged against, from the strategy's own fills (DESIGN §6).

A fill's one-way cost is its fee as a fraction of its notional plus its adverse slippage
against the decision-time price of its signal (a buy filled above the snapshot price, a sell
below). The round-trip cost before a decision is twice the mean one-way cost of the strategy's
fills executed in the `window_s` before the decision (never at or after it), floored at the
configured cost, which is also the value while fewer than `min_fills` fills are in the window.
Pure: fills and decisions arrive in time order.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator


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
        self._sum = 0.0

    def add(self, fill: CostFill) -> None:
        cost = fill.one_way_cost()
        if cost is not None:
            self._fills.append((fill.executed_at, cost))
            self._sum += cost

    def at(self, moment: datetime) -> float:
        """The round-trip cost for a decision at `moment` (fills added must be before it)."""
        while self._fills and self._fills[0][0] < moment - self.window:
            self._sum -= self._fills.popleft()[1]
        if len(self._fills) < self.min_fills:
            return self.floor
        return max(self.floor, 2.0 * self._sum / len(self._fills))


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
