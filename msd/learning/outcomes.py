"""What a decision's outcome was: the one outcome function of msd (DESIGN §6).

A decision's outcome is the market move from the decision-time price in its
`market_data_snapshot` to the close of the recorded bar ending at `decided_at + horizon`,
judged against the round-trip cost: *buy pays* when the move exceeds the cost, *sell pays*
when it falls by more than the cost, *neither* otherwise. Execution prices and fees are used
for realised PnL, slippage and the cost estimate only, never here: a fill price depends on the
side, so a label built on it leaks the side, and fills after the horizon never enter an
outcome. Datasets, live quality, the warm-up budget and the online learner all use these
functions. Pure: no clock, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from msd.ml.features import BUY, LABELS, NEITHER, SELL
from msd.values.parsing import finite_float


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
class Labelled:
    """A decision with its outcome: `move` from the decision price to the horizon close, the
    round-trip `cost` it was judged against, and the outcome class `label`."""
    decision: Decision
    move: float
    cost: float
    label: int

    @property
    def paid(self) -> bool:
        """Did the decided side pay after costs? ("neither" never pays.)"""
        return call_paid(self.decision.side, self.label)

    @property
    def result_usdt(self) -> float:
        return call_result(self.decision.amount, self.decision.side, self.move, self.cost)


def decision_price(snapshot: Mapping[str, Any]) -> float | None:
    """The snapshot's `price` as a positive finite float, or None."""
    value = finite_float(snapshot.get("price")) if isinstance(snapshot, Mapping) else None
    return value if value is not None and value > 0 else None


def outcome_labels(moves: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Outcome classes of fractional moves against round-trip costs (the one rule)."""
    moves, costs = np.asarray(moves, dtype=np.float64), np.asarray(costs, dtype=np.float64)
    return np.where(moves > costs, BUY, np.where(-moves > costs, SELL, NEITHER)).astype(np.int64)


def outcome_label(move: float, cost: float) -> int:
    return int(outcome_labels(np.array([move]), np.array([cost]))[0])


def call_paid(side: str, label: int) -> bool:
    return LABELS.get(side) == label and label != NEITHER


def call_result(amount: float, side: str, move: float, cost: float) -> float:
    """USDT result of a call: amount × (move in the called direction − cost); > 0 iff it paid."""
    signed = move if side == "buy" else -move
    return amount * (signed - cost)


def label_decision(decision: Decision, cost: float) -> Labelled | None:
    """The decision's outcome, or None when its price or horizon close is unusable."""
    price, close = decision.price, decision.horizon_close
    if price is None or close is None or not (math.isfinite(close) and close > 0):
        return None
    move = close / price - 1.0
    return Labelled(decision, move, cost, outcome_label(move, cost))
