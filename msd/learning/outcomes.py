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

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from msd.ml.features import BUY, LABELS, NEITHER, SELL
from msd.values.records import Decision, decision_price

__all__ = ["Decision", "Labelled", "call_paid", "call_result", "decision_price", "label_decision",
           "outcome_label", "outcome_labels"]


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


def market_moves(prices: np.ndarray, closes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(usable, move) per decision: a move needs a decision price > 0 and a finite horizon
    close > 0; `move` is the fractional move from the price to the close (NaN where unusable)."""
    prices, closes = np.asarray(prices, dtype=np.float64), np.asarray(closes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = (prices > 0) & np.isfinite(closes) & (closes > 0)
        moves = np.where(usable, closes / np.where(usable, prices, 1.0) - 1.0, np.nan)
    return usable, moves


def label_decision(decision: Decision, cost: float) -> Labelled | None:
    """The decision's outcome, or None when its price or horizon close is unusable."""
    price, close = decision.price, decision.horizon_close
    if price is None or close is None:
        return None
    usable, move = market_moves(np.array([price]), np.array([close]))
    if not usable[0]:
        return None
    return Labelled(decision, float(move[0]), cost, outcome_label(float(move[0]), cost))
