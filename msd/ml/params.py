"""Parameters of training and of the promotion gate: plain frozen dataclasses, no numpy.

Kept apart from the numeric code so that validating the `trainer` section of the config (in
`msd check-config` and the reload check) does not import numpy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from msd.values.parsing import InvalidValue


def _fraction(name: str, value: object, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and low <= value <= high):
        raise InvalidValue(name, value, f"a number in [{low}, {high}]")


@dataclass(frozen=True)
class GateConfig:
    """Margins are absolute accuracy differences (0.02 = two percentage points);
    `min_margin_over_baselines` applies to the window's base rate and to the naive rule."""
    min_accuracy: float = 0.75
    min_samples: int = 200
    min_margin_over_baselines: float = 0.02
    min_margin_over_active: float = 0.01
    min_balanced_accuracy: float = 0.6
    min_emitted_calls: int = 50

    def __post_init__(self) -> None:
        _fraction("min_accuracy", self.min_accuracy, 0.5, 1.0)
        if not (isinstance(self.min_samples, int) and not isinstance(self.min_samples, bool)
                and self.min_samples >= 1):
            raise InvalidValue("min_samples", self.min_samples, "an int >= 1")
        # A zero margin over the baselines would let a constant predictor tie its way through.
        _fraction("min_margin_over_baselines", self.min_margin_over_baselines, 1e-9, 0.5)
        _fraction("min_margin_over_active", self.min_margin_over_active, 0.0, 0.5)
        # A constant call scores 0.5 here; the floor must be above it.
        _fraction("min_balanced_accuracy", self.min_balanced_accuracy, 0.5, 1.0)
        if not (isinstance(self.min_emitted_calls, int) and not isinstance(self.min_emitted_calls, bool)
                and self.min_emitted_calls >= 2):
            raise InvalidValue("min_emitted_calls", self.min_emitted_calls, "an int >= 2")


_GATE_FIELDS = ("min_accuracy", "min_samples", "min_margin_over_baselines",
                "min_margin_over_active", "min_balanced_accuracy", "min_emitted_calls")


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        (low < value if low_open else low <= value) and value <= high)
    if not ok:
        bound = "(" if low_open else "["
        raise InvalidValue(name, value, f"a number in {bound}{low}, {high}]")


def _whole(name: str, value: Any, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise InvalidValue(name, value, f"an int >= {low}")


def _reject_unknown(cls: type, data: Mapping[str, Any]) -> None:
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidValue(unknown[0], data[unknown[0]], "no such key; expected one of " + ", ".join(known))


@dataclass(frozen=True)
class TrainingParams:
    """Units are in the names: seconds (`_s`), percent (`_pct`), fractions otherwise.

    `embargo_s` defaults to horizon + bar lag and may not be shorter: a training label reads a
    bar up to `horizon_s + max_bar_lag_s` after its decision, inside what would otherwise be
    the validation period. `round_trip_fee_pct` is the floor of the round-trip cost and its
    value until `cost_min_fills` of the strategy's own fills exist within `cost_window_s`
    before a decision. `calibration_fraction` of the training window (its newest part, after
    an embargo) fits the confidence calibration instead of the model. `l2_grid` (penalty per
    sample) is tried by walk-forward on the model's part of the training window; with one value
    there is no choice to make. `keep_files` artifact directories are kept per strategy
    besides the active and the last good version.
    """
    horizon_s: float = 900.0
    max_bar_lag_s: float = 300.0
    round_trip_fee_pct: float = 0.2
    cost_window_s: float = 86400.0
    cost_min_fills: int = 20
    min_new_rows: int = 200
    validation_fraction: float = 0.25
    calibration_fraction: float = 0.25
    embargo_s: float | None = None
    confidence_threshold: float = 0.6
    min_accuracy: float = 0.75
    min_samples: int = 200
    min_margin_over_baselines: float = 0.02
    min_margin_over_active: float = 0.01
    min_balanced_accuracy: float = 0.6
    min_emitted_calls: int = 50
    l2_grid: tuple[float, ...] = (0.01, 0.1, 1.0)
    walk_forward_folds: int = 3
    models_dir: str = "var/models"
    keep_files: int = 20

    def __post_init__(self) -> None:
        _number("horizon_s", self.horizon_s, 0, 30 * 86400, low_open=True)
        _number("max_bar_lag_s", self.max_bar_lag_s, 0, 86400)
        _number("round_trip_fee_pct", self.round_trip_fee_pct, 0, 10)
        _number("cost_window_s", self.cost_window_s, 0, 365 * 86400, low_open=True)
        _whole("cost_min_fills", self.cost_min_fills, 1)
        _whole("min_new_rows", self.min_new_rows, 1)
        _number("validation_fraction", self.validation_fraction, 0, 0.9, low_open=True)
        _number("calibration_fraction", self.calibration_fraction, 0, 0.5)
        if self.embargo_s is not None:
            _number("embargo_s", self.embargo_s, self.horizon_s + self.max_bar_lag_s, 365 * 86400)
        _number("confidence_threshold", self.confidence_threshold, 0, 1.0, low_open=True)
        self.gate()  # GateConfig validates its own fields with the same style of message
        if not (isinstance(self.l2_grid, tuple) and self.l2_grid):
            raise InvalidValue("l2_grid", self.l2_grid, "a non-empty list")
        for value in self.l2_grid:
            _number("l2_grid[]", value, 0, 1e6, low_open=True)
        _whole("walk_forward_folds", self.walk_forward_folds, 1)
        if not (isinstance(self.models_dir, str) and self.models_dir):
            raise InvalidValue("models_dir", self.models_dir, "a path")
        _whole("keep_files", self.keep_files, 1)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "TrainingParams":
        """Build from plain data (YAML section or request JSON); unknown keys are refused."""
        _reject_unknown(cls, data)
        values = dict(data)
        if isinstance(values.get("l2_grid"), list):
            values["l2_grid"] = tuple(values["l2_grid"])
        return cls(**values)

    @property
    def embargo(self) -> float:
        return self.horizon_s + self.max_bar_lag_s if self.embargo_s is None else float(self.embargo_s)

    @property
    def outcome_overlap_s(self) -> float:
        """How long a decision's outcome period lasts: calls closer than this share moves."""
        return self.horizon_s + self.max_bar_lag_s

    @property
    def round_trip_fee(self) -> float:
        return self.round_trip_fee_pct / 100.0

    def gate(self) -> GateConfig:
        return GateConfig(**{name: getattr(self, name) for name in _GATE_FIELDS})

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["l2_grid"] = list(self.l2_grid)
        return data


@dataclass(frozen=True)
class OnlineParams:
    """The online challenger (DESIGN §6): warm-started from the active version, it learns every
    labelled decision of the strategy (late labels too, up to `lookback_s` after the decision),
    each once its outcome was known before the next decision it predicts. A frozen copy taken
    after `window` // 2 new outcomes predicts the next `window` decisions (a block) at decision
    time: the block's first `calibration_fraction` (of TrainingParams) calibrates it, the rest
    after an embargo is what the gate scores it and the incumbent on; a pass must be confirmed
    on the next block (msd.learning.online)."""
    enabled: bool = True
    window: int = 800
    lookback_s: float = 2 * 86400.0
    learning_rate: float = 0.05
    l2: float = 1e-4

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidValue("enabled", self.enabled, "true or false")
        _whole("window", self.window, 20)
        _number("lookback_s", self.lookback_s, 60, 365 * 86400)
        _number("learning_rate", self.learning_rate, 0, 10, low_open=True)
        _number("l2", self.l2, 0, 1e3)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "OnlineParams":
        _reject_unknown(cls, data)
        return cls(**dict(data))
