"""The promotion gate and the live degradation check: pure decisions over metrics.

The spec's 75% accuracy threshold (SC-005) alone was passable by a constant predictor on
imbalanced labels (80/20 data -> 80% accuracy). So the gate also demands enough validation
samples and a margin over BOTH baselines scored on the same window, and a margin over the
active version when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from msd.ml.evaluation import Metrics
from msd.ml.params import GateConfig, _fraction  # noqa: F401  (GateConfig re-exported)

REQUIRED_BASELINES = ("majority", "naive")


@dataclass(frozen=True)
class Decision:
    """`reasons` lists every failed check when refused, every passed check when promoted."""
    promote: bool
    reasons: tuple[str, ...]


def promotion_decision(candidate: Metrics, baselines: Mapping[str, Metrics],
                       active: Metrics | None, n_val: int, config: GateConfig) -> Decision:
    """Promote only if every check passes; all metrics must come from the same window."""
    checks = [
        (n_val >= config.min_samples,
         f"validation samples {n_val} vs minimum {config.min_samples}"),
        (candidate.n == n_val,
         f"candidate scored on {candidate.n} samples vs validation window {n_val}"),
        (candidate.accuracy >= config.min_accuracy,
         f"accuracy {candidate.accuracy:.4f} vs minimum {config.min_accuracy:.4f}"),
    ]
    for name in REQUIRED_BASELINES:
        checks.append(_margin_check(candidate, baselines.get(name), f"baseline {name}",
                                    config.min_margin_over_baselines))
    if active is not None:
        checks.append(_margin_check(candidate, active, "active version",
                                    config.min_margin_over_active))
    failed = tuple(f"fail: {text}" for ok, text in checks if not ok)
    if failed:
        return Decision(False, failed)
    return Decision(True, tuple(f"pass: {text}" for _, text in checks))


def _margin_check(candidate: Metrics, other: Metrics | None, label: str,
                  margin: float) -> tuple[bool, str]:
    if other is None:
        return False, f"{label} metrics missing"
    if other.n != candidate.n:
        return False, f"{label} scored on {other.n} samples, candidate on {candidate.n}"
    needed = other.accuracy + margin
    # Compared with a hair of tolerance so that "exactly the margin" is not lost to rounding.
    ok = candidate.accuracy >= needed - 1e-12
    return ok, (f"accuracy {candidate.accuracy:.4f} vs {label} {other.accuracy:.4f} "
                f"+ margin {margin:.4f}")


def degradation_check(live_accuracy: float | None, n: int, threshold: float,
                      hysteresis: float, *, min_samples: int = 30,
                      was_degraded: bool = False) -> bool:
    """Is the live model degraded? A Schmitt trigger over rolling live accuracy.

    Trips when accuracy falls below `threshold` (FR-021), and once tripped stays degraded until
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
