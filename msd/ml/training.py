"""One batch training: time split with embargo, walk-forward choice of the penalty, fit,
calibration on a part of the training window the model did not see, and every quality figure
of the candidate and the baselines on the same validation window.

    |-------- fit (model, walk-forward l2) --------|emb|-- calibration --|emb|-- validation --|

`TrainingParams` is the trainer's whole configuration; the job maps the YAML (or a request's
`params`) onto it with `from_mapping`. Pure: no clock, no I/O; msd.learning does the rest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from msd.errors import MsdError
from msd.ml.calibration import CalibratedModel, PlattScaling
from msd.ml.dataset import Dataset
from msd.ml.evaluation import Metrics, baseline_metrics, metrics, time_split, walk_forward
from msd.ml.params import TrainingParams  # noqa: F401  (re-exported for callers of this module)
from msd.ml.models import LogisticConfig, LogisticModel

MODEL_TYPE = "multinomial_logistic_calibrated"
MIN_CALIBRATION_ROWS = 30       # fewer rows than this cannot say much about calibration


class NotTrainable(MsdError):
    """The dataset cannot yield a model (e.g. one class only); the message says why."""


@dataclass(frozen=True)
class Candidate:
    """A fitted model and its figures; indices point into the dataset it was trained on."""
    model: CalibratedModel
    l2: float
    selection: tuple[tuple[float, float | None], ...]   # (l2, mean walk-forward log-loss)
    fit_idx: np.ndarray
    calibration_idx: np.ndarray
    val_idx: np.ndarray
    validation: Metrics
    training: Metrics
    baselines: Mapping[str, Metrics]
    notes: tuple[str, ...] = ()

    @property
    def train_idx(self) -> np.ndarray:
        return np.sort(np.concatenate([self.fit_idx, self.calibration_idx]))


Progress = Callable[[], None]


def _calibration_split(dataset: Dataset, train_idx: np.ndarray,
                       params: TrainingParams) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(fit rows, calibration rows, note) inside the training window."""
    if params.calibration_fraction <= 0:
        return train_idx, train_idx[:0], "calibration off (calibration_fraction 0)"
    try:
        fit_pos, cal_pos = time_split(dataset.timestamps[train_idx],
                                      validation_fraction=params.calibration_fraction,
                                      embargo=params.embargo)
    except ValueError as exc:
        return train_idx, train_idx[:0], f"not calibrated: {exc}"
    fit_idx, cal_idx = train_idx[fit_pos], train_idx[cal_pos]
    if cal_idx.size < MIN_CALIBRATION_ROWS:
        return fit_idx, cal_idx, (f"not calibrated: {cal_idx.size} calibration rows, "
                                  f"minimum {MIN_CALIBRATION_ROWS}")
    return fit_idx, cal_idx, None


def fit_and_evaluate(dataset: Dataset, params: TrainingParams,
                     progress: Progress | None = None) -> Candidate:
    """Split, choose l2, fit, calibrate, score on the validation window.

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
    fit_idx, cal_idx, note = _calibration_split(dataset, train_idx, params)
    X_fit, y_fit = dataset.X[fit_idx], dataset.y[fit_idx]
    if np.unique(y_fit).size < 2:
        raise NotTrainable(f"training window of {len(y_fit)} rows has a single outcome class")
    l2, selection, nearest = select_l2(X_fit, y_fit, dataset.timestamps[fit_idx], params, beat)
    base = LogisticModel(LogisticConfig(l2=l2)).fit(X_fit, y_fit, warm_start=nearest)
    beat()
    scaling = PlattScaling()
    if note is None:
        scaling.fit(base.predict_proba(dataset.X[cal_idx]), dataset.y[cal_idx])
    model = CalibratedModel(base, scaling, params.calibration_fraction)
    validation = score(model, dataset, val_idx, params)
    training = score(model, dataset, fit_idx, params)
    baselines = baseline_metrics(X_fit, y_fit, dataset.X[val_idx], dataset.y[val_idx],
                                 threshold=params.confidence_threshold,
                                 moves=dataset.moves[val_idx], costs=dataset.costs[val_idx],
                                 decided_at=dataset.timestamps[val_idx],
                                 overlap_s=params.outcome_overlap_s)
    return Candidate(model, l2, selection, fit_idx, cal_idx, val_idx, validation, training,
                     baselines, (note,) if note else ())


def score(model: Any, dataset: Dataset, idx: np.ndarray, params: TrainingParams) -> Metrics:
    """Metrics of any estimator on rows `idx` (used for the incumbent too, so that candidate
    and active version are compared on the very same decisions)."""
    return metrics(dataset.y[idx], model.predict_proba(dataset.X[idx]),
                   threshold=params.confidence_threshold, moves=dataset.moves[idx],
                   costs=dataset.costs[idx], decided_at=dataset.timestamps[idx],
                   overlap_s=params.outcome_overlap_s)


def select_l2(X: np.ndarray, y: np.ndarray, timestamps: np.ndarray, params: TrainingParams,
              progress: Progress
              ) -> tuple[float, tuple[tuple[float, float | None], ...], "LogisticModel | None"]:
    """The l2 of the grid with the lowest mean walk-forward log-loss on the model's window.

    Never looks at the calibration or validation rows. Folds whose training part has a single
    class are skipped; when no fold is usable the grid's first value is taken (the grid is
    listed in order of preference). Also returns the chosen l2's model on the newest fold (a
    warm start for the final fit), None without folds.
    """
    grid = params.l2_grid
    if len(grid) == 1:
        return float(grid[0]), (), None
    try:
        folds = list(walk_forward(timestamps, params.walk_forward_folds, params.embargo))
    except ValueError:
        folds = []
    folds = [(tr, va) for tr, va in folds if np.unique(y[tr]).size >= 2]
    losses: dict[float, list[float]] = {float(l2): [] for l2 in grid}
    last_fold: dict[float, LogisticModel] = {}
    for train_idx, val_idx in folds:
        X_train, y_train = X[train_idx], y[train_idx]
        previous = None        # each fit starts from the fold's previous optimum (warm start)
        for l2 in grid:
            model = LogisticModel(LogisticConfig(l2=l2)).fit(X_train, y_train,
                                                             warm_start=previous)
            proba = np.clip(model.predict_proba(X[val_idx])[np.arange(val_idx.size), y[val_idx]],
                            1e-15, 1.0)
            losses[float(l2)].append(float(-np.mean(np.log(proba))))
            previous = last_fold[float(l2)] = model
            progress()
    scores = [(float(l2), float(np.mean(losses[float(l2)])) if losses[float(l2)] else None)
              for l2 in grid]
    usable = [(loss, index) for index, (_, loss) in enumerate(scores) if loss is not None]
    best = min(usable)[1] if usable else 0
    return float(grid[best]), tuple(scores), last_fold.get(float(grid[best]))


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
    scaling = candidate.model.scaling
    return {"validation": dataclasses.asdict(candidate.validation),
            "training": dataclasses.asdict(candidate.training),
            "baselines": {name: dataclasses.asdict(m) for name, m in candidate.baselines.items()},
            "l2": candidate.l2,
            "l2_selection": [{"l2": l2, "walk_forward_log_loss": loss}
                             for l2, loss in candidate.selection],
            "calibration": {"temperature": scaling.temperature, "bias": scaling.bias.tolist(),
                            "rows": int(candidate.calibration_idx.size)},
            "notes": list(candidate.notes),
            "n_fit": int(candidate.fit_idx.size), "n_validation": int(candidate.val_idx.size)}
