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
from msd.ml.params import TrainingParams  # noqa: F401  (re-exported for callers of this module)
from msd.ml.models import LogisticConfig, LogisticModel

MODEL_TYPE = "logistic"
class NotTrainable(MsdError):
    """The dataset cannot yield a model (e.g. one class only); the message says why."""


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
