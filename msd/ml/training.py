"""One batch training: time split with embargo, walk-forward choice of the penalty, fit,
and every quality figure of the candidate and both baselines on the same validation window.

`TrainingParams` is the trainer's whole configuration; the role maps the YAML (or a request's
`params`) onto it with `from_mapping`. Pure: no clock, no I/O; the store does the rest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from msd.errors import MsdError
from msd.ml.dataset import Dataset
from msd.ml.evaluation import Metrics, baseline_metrics, metrics, time_split, walk_forward
from msd.ml.gate import GateConfig
from msd.ml.models import LogisticConfig, LogisticModel

MODEL_TYPE = "logistic"
_GATE_FIELDS = ("min_accuracy", "min_samples", "min_margin_over_baselines",
                "min_margin_over_active")


class NotTrainable(MsdError):
    """The dataset cannot yield a model (e.g. one class only); the message says why."""


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


@dataclass(frozen=True)
class Candidate:
    """A fitted model and its figures; indices point into the dataset it was trained on."""
    model: LogisticModel
    l2: float
    selection: tuple[tuple[float, float | None], ...]   # (l2, mean walk-forward log-loss)
    train_idx: np.ndarray
    val_idx: np.ndarray
    validation: Metrics
    training: Metrics
    baselines: Mapping[str, Metrics]


Progress = Callable[[], None]


def fit_and_evaluate(dataset: Dataset, params: TrainingParams,
                     progress: Progress | None = None) -> Candidate:
    """Split, choose l2, fit on the training window, score on the validation window.

    Raises NotTrainable when the split leaves nothing to learn from. `progress` is called after
    every fit so a caller can prove liveness during long runs.
    """
    beat = progress or (lambda: None)
    if dataset.n < 2:
        raise NotTrainable(f"{dataset.n} usable rows; expected at least 2")
    try:
        train_idx, val_idx = time_split(dataset.timestamps,
                                        validation_fraction=params.validation_fraction,
                                        embargo=params.embargo)
    except ValueError as exc:
        raise NotTrainable(f"time split impossible: {exc}") from None
    X_train, y_train = dataset.X[train_idx], dataset.y[train_idx]
    if np.unique(y_train).size < 2:
        raise NotTrainable(f"training window of {len(y_train)} rows has a single class")
    l2, selection = select_l2(X_train, y_train, dataset.timestamps[train_idx], params, beat)
    model = LogisticModel(LogisticConfig(l2=l2)).fit(X_train, y_train)
    beat()
    validation = score(model, dataset, val_idx, params)
    training = metrics(y_train, model.predict_proba(X_train),
                       threshold=params.confidence_threshold)
    baselines = baseline_metrics(X_train, y_train, dataset.X[val_idx], dataset.y[val_idx],
                                 threshold=params.confidence_threshold,
                                 returns=dataset.returns[val_idx], fee=params.round_trip_fee)
    return Candidate(model, l2, selection, train_idx, val_idx, validation, training, baselines)


def score(model: Any, dataset: Dataset, idx: np.ndarray, params: TrainingParams) -> Metrics:
    """Metrics of any estimator on rows `idx`, backtest included (used for the incumbent too,
    so that candidate and active version are compared on the very same window)."""
    return metrics(dataset.y[idx], model.predict_proba(dataset.X[idx]),
                   threshold=params.confidence_threshold, returns=dataset.returns[idx],
                   fee=params.round_trip_fee)


def select_l2(X: np.ndarray, y: np.ndarray, timestamps: np.ndarray, params: TrainingParams,
              progress: Progress) -> tuple[float, tuple[tuple[float, float | None], ...]]:
    """The l2 of the grid with the lowest mean walk-forward log-loss on the training window.

    Never looks at the validation window, so the gate still scores an untouched period. Folds
    whose training part has a single class are skipped; when no fold is usable the grid's
    first value is taken (the grid is listed in order of preference).
    """
    grid = params.l2_grid
    if len(grid) == 1:
        return float(grid[0]), ()
    try:
        folds = list(walk_forward(timestamps, params.walk_forward_folds, params.embargo))
    except ValueError:
        folds = []
    folds = [(tr, va) for tr, va in folds if np.unique(y[tr]).size == 2]
    scores: list[tuple[float, float | None]] = []
    for l2 in grid:
        losses = []
        for train_idx, val_idx in folds:
            model = LogisticModel(LogisticConfig(l2=l2)).fit(X[train_idx], y[train_idx])
            losses.append(metrics(y[val_idx], model.predict_proba(X[val_idx]),
                                  threshold=params.confidence_threshold).log_loss)
            progress()
        scores.append((float(l2), float(np.mean(losses)) if losses else None))
    usable = [(loss, index) for index, (_, loss) in enumerate(scores) if loss is not None]
    best = min(usable)[1] if usable else 0
    return float(grid[best]), tuple(scores)


def flatten_metrics(figures: Metrics, prefix: str = "") -> dict[str, float]:
    """`Metrics` as {name: value} for `msd.quality_metrics`; figures that are None (no calls,
    no trades) are left out rather than stored as a made-up number."""
    flat: dict[str, float] = {}
    for key, value in dataclasses.asdict(figures).items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}.{k}": float(v) for k, v in value.items()
                         if v is not None})
        elif value is not None:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def candidate_report(candidate: Candidate) -> dict[str, Any]:
    """Every figure of a candidate, JSON-ready, as stored in the manifest and the version row."""
    return {"validation": dataclasses.asdict(candidate.validation),
            "training": dataclasses.asdict(candidate.training),
            "baselines": {name: dataclasses.asdict(m) for name, m in candidate.baselines.items()},
            "l2": candidate.l2,
            "l2_selection": [{"l2": l2, "walk_forward_log_loss": loss}
                             for l2, loss in candidate.selection],
            "n_train": int(candidate.train_idx.size), "n_validation": int(candidate.val_idx.size)}
