"""Records of what happened, as the store reads them and the learning code uses them: a
recorded decision, a fill priced against its decision, a fill for round trips. Plain values:
how a cost, an outcome or a round trip is computed from them lives in msd.learning and msd.ml.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping, NamedTuple

from msd.values.parsing import finite_float

__all__ = ["CostFill", "Decision", "RowCounts", "TradeFill", "decision_price"]


def decision_price(snapshot: Mapping[str, Any]) -> float | None:
    """The snapshot's `price` as a positive finite float, or None."""
    value = finite_float(snapshot.get("price")) if isinstance(snapshot, Mapping) else None
    return value if value is not None and value > 0 else None


@dataclass(frozen=True)
class Decision:
    """One recorded signal as the store reads it, filled or not. `horizon_close` is the close of
    the bar ending at decided_at + horizon (None while it is not recorded); `amount` is the
    signal's USDT amount; `fills` and `filled_notional` what order-manager traded for it."""
    signal_id: str
    strategy_id: str
    asset: str
    side: str                       # the decided side; never a feature, never in the label
    decided_at: datetime            # aware
    snapshot: Mapping[str, Any]
    amount: float
    mode: str                       # warmup | model
    model_version: str | None
    confidence: float
    horizon_close: float | None
    fills: int = 0                      # never in the label: fill rate and budget only
    filled_notional: float | None = None  # USDT actually traded (sum of fill qty x price)

    @property
    def price(self) -> float | None:
        return decision_price(self.snapshot)


@dataclass(frozen=True)
class CostFill:
    """A strategy's fill with the decision-time price of its signal (for the cost estimate)."""
    executed_at: datetime
    side: str
    quantity: float
    price: float
    fee: float              # quote currency
    snapshot_price: float   # the decision-time price of the fill's signal


class TradeFill(NamedTuple):
    """A fill for FIFO round trips (money stays Decimal). A named tuple: a million of them are
    made per training run, at a third of a frozen dataclass's cost."""
    asset: str
    side: str                  # executed side, "buy" / "sell"
    quantity: Decimal          # base units, > 0
    price: Decimal             # > 0
    fee: Decimal               # quote currency; negative is a maker rebate
    executed_at: datetime


@dataclass(frozen=True)
class RowCounts:
    """Recorded decisions (`signals`, filled or not) by labelling state. `no_price`: the
    snapshot has no usable price; `no_bars`: the horizon is over but msd recorded no bar to
    measure it (a gap in market data); `filled`: decisions with at least one fill (of
    `executions` fills), so `fill_rate` = filled / signals."""
    executions: int = 0
    signals: int = 0
    labelled: int = 0
    pending_label: int = 0
    no_price: int = 0
    no_bars: int = 0
    filled: int = 0

    def __add__(self, other: "RowCounts") -> "RowCounts":
        return RowCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.executions, self.signals, self.labelled, self.pending_label,
                self.no_price, self.no_bars, self.filled)

    @property
    def fill_rate(self) -> float | None:
        return round(self.filled / self.signals, 4) if self.signals else None

    def as_dict(self) -> dict[str, int | float | None]:
        names = ("executions", "signals", "labelled", "pending_label", "no_price", "no_bars",
                 "filled")
        return {**dict(zip(names, self.as_tuple())), "fill_rate": self.fill_rate}
