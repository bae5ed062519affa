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

from msd.learning.outcomes import Labelled


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


@dataclass(frozen=True)
class WarmupSpend:
    """Minus the sum of the labelled warm-up calls' results since the budget started."""
    spend_usdt: float
    calls: int
    started_at: datetime
    elapsed_s: float

    def view(self, budget_usdt: Decimal, max_duration_s: float) -> dict:
        return {"spend_usdt": round(self.spend_usdt, 4), "budget_usdt": float(budget_usdt),
                "calls": self.calls, "started_at": self.started_at.isoformat(),
                "elapsed_s": round(self.elapsed_s, 1), "max_duration_s": max_duration_s}


def warmup_spend(rows: Sequence[Labelled], started_at: datetime, now: datetime) -> WarmupSpend:
    """A call's result is amount × (move in the called direction − cost); spend = −Σ results."""
    counted = [row for row in rows if row.decision.mode == "warmup"
               and row.decision.decided_at >= started_at]
    return WarmupSpend(-sum(row.result_usdt for row in counted), len(counted), started_at,
                       (now - started_at).total_seconds())


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
