"""Parameters of training and of the promotion gate: plain frozen dataclasses, no numpy.

Kept apart from the numeric code so the supervisor can validate the `trainer` section of the
config without importing numpy (DESIGN.md §3).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

def _fraction(name: str, value: object, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and low <= value <= high):
        raise ValueError(f"{name}: {value!r} is invalid; expected a number in [{low}, {high}]")


@dataclass(frozen=True)
class GateConfig:
    """Margins are absolute accuracy differences (0.02 = two percentage points)."""
    min_accuracy: float = 0.75
    min_samples: int = 200
    min_margin_over_baselines: float = 0.02
    min_margin_over_active: float = 0.01

    def __post_init__(self) -> None:
        _fraction("min_accuracy", self.min_accuracy, 0.5, 1.0)
        if not (isinstance(self.min_samples, int) and not isinstance(self.min_samples, bool)
                and self.min_samples >= 1):
            raise ValueError(f"min_samples: {self.min_samples!r} is invalid; "
                             "expected an int >= 1")
        # A zero margin over the baselines would let a constant predictor tie its way through.
        _fraction("min_margin_over_baselines", self.min_margin_over_baselines, 1e-9, 0.5)
        _fraction("min_margin_over_active", self.min_margin_over_active, 0.0, 0.5)


_GATE_FIELDS = ("min_accuracy", "min_samples", "min_margin_over_baselines",
                "min_margin_over_active")


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        (low < value if low_open else low <= value) and value <= high)
    if not ok:
        bound = "(" if low_open else "["
        raise ValueError(f"{name}: {value!r} is invalid; expected a number in {bound}{low}, {high}]")


def _whole(name: str, value: Any, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"{name}: {value!r} is invalid; expected an int >= {low}")


@dataclass(frozen=True)
class TrainingParams:
    """Units are in the names: seconds (`_s`), percent (`_pct`), fractions otherwise.

    `embargo_s` defaults to the horizon and may not be shorter: a training label looks
    `horizon_s` past its decision, into what would otherwise be the validation period.
    `l2_grid` is tried by walk-forward on the training window; with one value there is no
    choice to make. `keep_files` artifact directories are kept per strategy besides the active
    and the last good version.
    """
    horizon_s: float = 900.0
    max_bar_lag_s: float = 300.0
    round_trip_fee_pct: float = 0.2
    min_new_rows: int = 200
    validation_fraction: float = 0.25
    embargo_s: float | None = None
    confidence_threshold: float = 0.6
    min_accuracy: float = 0.75
    min_samples: int = 200
    min_margin_over_baselines: float = 0.02
    min_margin_over_active: float = 0.01
    l2_grid: tuple[float, ...] = (0.1, 1.0, 10.0)
    walk_forward_folds: int = 3
    models_dir: str = "var/models"
    keep_files: int = 20

    def __post_init__(self) -> None:
        _number("horizon_s", self.horizon_s, 0, 30 * 86400, low_open=True)
        _number("max_bar_lag_s", self.max_bar_lag_s, 0, 86400)
        _number("round_trip_fee_pct", self.round_trip_fee_pct, 0, 10)
        _whole("min_new_rows", self.min_new_rows, 1)
        _number("validation_fraction", self.validation_fraction, 0, 0.9, low_open=True)
        if self.embargo_s is not None:
            _number("embargo_s", self.embargo_s, self.horizon_s, 365 * 86400)
        _number("confidence_threshold", self.confidence_threshold, 0.5, 1.0)
        self.gate()  # GateConfig validates its own fields with the same style of message
        if not (isinstance(self.l2_grid, tuple) and self.l2_grid):
            raise ValueError(f"l2_grid: {self.l2_grid!r} is invalid; expected a non-empty list")
        for value in self.l2_grid:
            _number("l2_grid[]", value, 0, 1e6, low_open=True)
        _whole("walk_forward_folds", self.walk_forward_folds, 1)
        if not (isinstance(self.models_dir, str) and self.models_dir):
            raise ValueError(f"models_dir: {self.models_dir!r} is invalid; expected a path")
        _whole("keep_files", self.keep_files, 1)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "TrainingParams":
        """Build from plain data (YAML section or request JSON); unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"training params: {unknown} are invalid; expected keys among "
                             f"{sorted(known)}")
        values = dict(data)
        if isinstance(values.get("l2_grid"), list):
            values["l2_grid"] = tuple(values["l2_grid"])
        return cls(**values)

    @property
    def embargo(self) -> float:
        return self.horizon_s if self.embargo_s is None else float(self.embargo_s)

    @property
    def round_trip_fee(self) -> float:
        return self.round_trip_fee_pct / 100.0

    def gate(self) -> GateConfig:
        return GateConfig(**{name: getattr(self, name) for name in _GATE_FIELDS})

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["l2_grid"] = list(self.l2_grid)
        return data


