"""Live quality of the active version's calls and of warm-up spending (DESIGN §6). Pure.

Live quality uses the one outcome function: a model call paid when its side paid after the
round-trip cost over the horizon, and a call whose move stayed inside the cost band did not
pay. The pay rate of the version's own labelled calls is what the degradation check watches;
calibration compares it with the confidence those calls carried.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from msd.learning.outcomes import Decision, Labelled, call_result


@dataclass(frozen=True)
class LiveQuality:
    """Over the `n` labelled calls: the share that paid, their mean confidence, the gap
    between the two (positive = overconfident) and the mean net return per call."""
    n: int
    pay_rate: float | None
    mean_confidence: float | None
    calibration_gap: float | None
    net_return_mean: float | None

    def calibration_status(self, min_samples: int, max_gap: float) -> str:
        if self.n < min_samples or self.calibration_gap is None:
            return f"too few calls ({self.n} of {min_samples})"
        return "miscalibrated" if abs(self.calibration_gap) > max_gap else "calibrated"

    def view(self) -> dict:
        return {"calls": self.n, "pay_rate": _round(self.pay_rate),
                "mean_confidence": _round(self.mean_confidence),
                "calibration_gap": _round(self.calibration_gap),
                "net_bps_per_call": None if self.net_return_mean is None
                else round(self.net_return_mean * 1e4, 2)}


def live_quality(rows: Sequence[Labelled]) -> LiveQuality:
    if not rows:
        return LiveQuality(0, None, None, None, None)
    n = len(rows)
    pay_rate = sum(row.paid for row in rows) / n
    confidence = sum(row.decision.confidence for row in rows) / n
    net = sum((row.move if row.decision.side == "buy" else -row.move) - row.cost
              for row in rows) / n
    return LiveQuality(n, pay_rate, confidence, confidence - pay_rate, net)


# order-manager raises an order below the symbol's minimum order value to it (CONTRACTS §3.6,
# default 5 USDT): a call with fills but no recorded price traded at least this much.
MIN_ORDER_VALUE_USDT = 5.0


def traded_notional(decision: Decision) -> float:
    """USDT order-manager really traded for the decision: its fills' notional; a call that never
    filled traded nothing; fills without a price count the signal amount raised to the minimum
    order value (what order-manager sends for it)."""
    if decision.fills <= 0:
        return 0.0
    if decision.filled_notional is not None and decision.filled_notional > 0:
        return float(decision.filled_notional)
    return max(float(decision.amount), MIN_ORDER_VALUE_USDT)


@dataclass(frozen=True)
class WarmupSpend:
    """Minus the sum of the warm-up calls' results since the budget started, on the notional
    order-manager traded, plus the stated worst case for calls whose horizon ended without a
    label. `calls`: labelled calls that traded; `unlabelled`: traded calls charged at the worst
    case; `unfilled`: calls that never traded (no spend); `labels_stalled`: the newest call whose
    horizon is over has no label and no later call has one, i.e. labels stopped arriving."""
    spend_usdt: float
    calls: int
    started_at: datetime
    elapsed_s: float
    unlabelled: int = 0
    unfilled: int = 0
    labels_stalled: bool = False

    def view(self, budget_usdt: Decimal, max_duration_s: float) -> dict:
        return {"spend_usdt": round(self.spend_usdt, 4), "budget_usdt": float(budget_usdt),
                "calls": self.calls, "started_at": self.started_at.isoformat(),
                "elapsed_s": round(self.elapsed_s, 1), "max_duration_s": max_duration_s,
                "unlabelled_calls": self.unlabelled, "unfilled_calls": self.unfilled,
                "labels_stalled": self.labels_stalled}


def warmup_spend(rows: Sequence[Labelled], started_at: datetime, now: datetime,
                 overdue: Sequence[Decision] = (), worst_case_loss: float = 0.0) -> WarmupSpend:
    """A labelled call's result is traded notional × (move in the called direction − cost); a
    traded call in `overdue` (its horizon and bar lag are over, no label: no bar or no price)
    is charged notional × `worst_case_loss`; spend = −Σ results + Σ charges. Without the charge
    a feed that stopped delivering bars would stop the spend at once (review finding 6)."""
    counted = [row for row in rows if row.decision.mode == "warmup"
               and row.decision.decided_at >= started_at]
    late = [d for d in overdue if d.mode == "warmup" and d.decided_at >= started_at]
    results = [call_result(traded_notional(row.decision), row.decision.side, row.move, row.cost)
               for row in counted]
    charges = [traded_notional(d) * worst_case_loss for d in late]
    newest_label = max((row.decision.decided_at for row in counted), default=None)
    newest_late = max((d.decided_at for d in late), default=None)
    stalled = newest_late is not None and (newest_label is None or newest_late > newest_label)
    return WarmupSpend(-sum(results) + sum(charges),
                       sum(1 for row in counted if row.decision.fills > 0), started_at,
                       (now - started_at).total_seconds(),
                       sum(1 for d in late if d.fills > 0),
                       sum(1 for row in counted if row.decision.fills <= 0)
                       + sum(1 for d in late if d.fills <= 0), stalled)


def budget_verdict(spend: WarmupSpend, budget_usdt: Decimal,
                   max_duration_s: float) -> tuple[str, str] | None:
    """(cause, reason) when the warm-up budget or duration is spent, else None."""
    if spend.spend_usdt >= float(budget_usdt):
        return "budget", (f"warm-up spent {spend.spend_usdt:.2f} USDT over {spend.calls} calls, "
                          f"budget {budget_usdt} USDT, without a promoted model")
    if spend.elapsed_s >= max_duration_s:
        return "duration", (f"warm-up ran {spend.elapsed_s:.0f} s (max_duration_s "
                            f"{max_duration_s:g}) without a promoted model; spent "
                            f"{spend.spend_usdt:.2f} USDT")
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
