"""The promotion gate and the live degradation check: pure decisions over metrics.

A plain 75 % accuracy gate (SC-005) was passable by a constant predictor, by a model that
called a handful of rows, and by a model right about direction whose calls did not clear their
cost. So on top of `min_accuracy` and `min_samples`, a candidate must beat the validation
window's own base rate max(P(buy pays), P(sell pays)) and the naive rule scored on the same
window by a margin, reach a balanced-accuracy floor, emit enough calls, and have the lower
confidence bound of its net return per emitted call above zero; an incumbent, rescored on the
candidate's window, must be beaten by its own margin. Every figure must come from one window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from msd.ml.evaluation import Metrics
from msd.ml.params import GateConfig, _fraction  # noqa: F401  (GateConfig re-exported)

REQUIRED_BASELINES = ("naive",)
_TOLERANCE = 1e-12   # "exactly the margin" must not be lost to rounding


@dataclass(frozen=True)
class GateDecision:
    """`reasons` lists every failed check when refused, every passed check when promoted."""
    promote: bool
    reasons: tuple[str, ...]


def promotion_decision(candidate: Metrics, baselines: Mapping[str, Metrics],
                       active: Metrics | None, n_val: int, config: GateConfig, *,
                       candidate_vs_active: Metrics | None = None) -> GateDecision:
    """Promote only if every check passes; all metrics must come from the same window.
    `candidate_vs_active`: the candidate on the decisions the incumbent was rescored on when
    that is a part of the window (the incumbent learned the rest)."""
    margin = config.min_margin_over_baselines
    lower = candidate.net_return_lower
    checks = [
        (n_val >= config.min_samples,
         f"validation decisions {n_val} vs minimum {config.min_samples}"),
        (candidate.n == n_val,
         f"candidate scored on {candidate.n} decisions vs validation window {n_val}"),
        (candidate.accuracy >= config.min_accuracy - _TOLERANCE,
         f"accuracy {candidate.accuracy:.4f} vs minimum {config.min_accuracy:.4f}"),
        (candidate.accuracy >= candidate.base_rate + margin - _TOLERANCE,
         f"accuracy {candidate.accuracy:.4f} vs window base rate {candidate.base_rate:.4f} "
         f"+ margin {margin:.4f}"),
        (candidate.balanced_accuracy >= config.min_balanced_accuracy - _TOLERANCE,
         f"balanced accuracy {candidate.balanced_accuracy:.4f} vs minimum "
         f"{config.min_balanced_accuracy:.4f}"),
        (candidate.n_calls >= config.min_emitted_calls,
         f"emitted calls {candidate.n_calls} vs minimum {config.min_emitted_calls}"),
        (lower is not None and lower > 0,
         f"net return per emitted call lower bound "
         f"{'n/a' if lower is None else f'{lower * 1e4:+.2f} bps'} vs > 0"),
    ]
    for name in REQUIRED_BASELINES:
        checks.append(_margin_check(candidate, baselines.get(name), f"baseline {name}", margin))
    if active is not None:
        checks.append(_margin_check(candidate_vs_active or candidate, active, "active version",
                                    config.min_margin_over_active))
    failed = tuple(f"fail: {text}" for ok, text in checks if not ok)
    if failed:
        return GateDecision(False, failed)
    return GateDecision(True, tuple(f"pass: {text}" for _, text in checks))


def _margin_check(candidate: Metrics, other: Metrics | None, label: str,
                  margin: float) -> tuple[bool, str]:
    if other is None:
        return False, f"{label} metrics missing"
    if other.n != candidate.n:
        return False, f"{label} scored on {other.n} decisions, candidate on {candidate.n}"
    ok = candidate.accuracy >= other.accuracy + margin - _TOLERANCE
    return ok, (f"accuracy {candidate.accuracy:.4f} vs {label} {other.accuracy:.4f} "
                f"+ margin {margin:.4f}")


def degradation_check(live_accuracy: float | None, n: int, threshold: float,
                      hysteresis: float, *, min_samples: int = 30,
                      was_degraded: bool = False) -> bool:
    """Is the live model degraded? A Schmitt trigger over the rolling share of the active
    version's emitted calls that paid after costs.

    Trips when it falls below `threshold` (FR-021), and once tripped stays degraded until
    accuracy is back to at least `threshold + hysteresis`, so a model hovering at the threshold
    does not trigger a retrain on every labelled outcome. With fewer than `min_samples` labelled
    outcomes the evidence is too thin to change state, so the previous state is kept.
    """
    _fraction("threshold", threshold, 0.0, 1.0)
    _fraction("hysteresis", hysteresis, 0.0, 0.5)
    if not (isinstance(min_samples, int) and min_samples >= 1):
        raise ValueError(f"min_samples: {min_samples!r} is invalid; expected an int >= 1")
    if live_accuracy is None or n < min_samples:
        return was_degraded
    _fraction("live_accuracy", live_accuracy, 0.0, 1.0)
    if was_degraded:
        return live_accuracy < threshold + hysteresis
    return live_accuracy < threshold
