"""Time-ordered splits and the quality metrics the promotion gate reads.

Splits never shuffle: validation always lies after training, separated by an embargo at least
as long as the label horizon, because a training label at time t looks at prices up to
t + horizon; without the gap those prices are the validation period's and the score leaks.

All metrics take labels in the one encoding of `msd.ml.features.LABELS` (0 = sell/down,
1 = buy/up) and probabilities as (n, 2) columns in that order; anything else is refused rather
than silently compared across encodings (the previous implementation compared encoded
predictions with raw labels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import numpy as np

from msd.ml.estimator import as_labels, as_matrix
from msd.ml.models import MajorityClass, Naive

# Bybit spot charges 0.1% per side to non-VIP takers; a round trip therefore costs 0.2%.
DEFAULT_ROUND_TRIP_FEE = 0.002
CALIBRATION_BINS = 10
_PROBA_EPS = 1e-15  # log-loss of a confident miss is large but finite


@dataclass(frozen=True)
class Backtest:
    """Each call is one round trip over the label horizon: long on 1, short on 0, net of fee.

    `sharpe` is per trade (mean / std of net trade returns), not annualised: trades overlap in
    time at arbitrary spacing, so no annualisation factor would be honest. `turnover` is the
    fraction of opportunities traded (each trade opens and closes once).
    """
    n_trades: int
    hit_rate: float | None
    mean_net_return: float | None
    total_net_return: float
    sharpe: float | None
    turnover: float


@dataclass(frozen=True)
class Metrics:
    """Quality of probabilistic buy/sell calls on one evaluation window.

    `accuracy` is directional accuracy of argmax calls on every sample; `call_precision` is the
    accuracy of the calls whose confidence max(p, 1 - p) reaches the threshold, i.e. the calls
    that would actually be emitted (None when there are none). `ece` is the expected calibration
    error of P(1) over 10 equal-width bins.
    """
    n: int
    accuracy: float
    balanced_accuracy: float
    threshold: float
    n_calls: int
    call_precision: float | None
    log_loss: float
    brier: float
    ece: float
    backtest: Backtest | None = None


def _as_seconds(timestamps: object, embargo: object) -> tuple[np.ndarray, float]:
    """Timestamps as float seconds (numeric epoch seconds or datetime64) and embargo likewise."""
    stamps = np.asarray(timestamps)
    if stamps.ndim != 1 or stamps.size == 0:
        raise ValueError(f"timestamps: shape {stamps.shape} is invalid; expected non-empty 1-D")
    if np.issubdtype(stamps.dtype, np.datetime64):
        seconds = stamps.astype("datetime64[ns]").astype(np.int64) / 1e9
    elif stamps.dtype.kind in "iuf":
        seconds = stamps.astype(np.float64)
    else:
        raise ValueError(f"timestamps: dtype {stamps.dtype} is invalid; expected epoch seconds "
                         "or datetime64")
    if isinstance(embargo, timedelta):
        gap = embargo.total_seconds()
    elif isinstance(embargo, np.timedelta64):
        gap = embargo / np.timedelta64(1, "s")
    elif isinstance(embargo, (int, float)) and not isinstance(embargo, bool):
        gap = float(embargo)
    else:
        raise ValueError(f"embargo: {embargo!r} is invalid; expected seconds or a timedelta")
    if not (np.isfinite(seconds).all() and math.isfinite(gap) and gap >= 0):
        raise ValueError(f"embargo: {embargo!r} is invalid; expected finite >= 0 with finite "
                         "timestamps")
    return seconds, float(gap)


def _split_at(seconds: np.ndarray, order: np.ndarray, train_end: int, val_end: int,
              gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Validation = time-sorted positions train_end..val_end; training = the earlier samples
    more than `gap` seconds before the first validation timestamp."""
    cut = seconds[order[train_end]]
    val_idx = order[train_end:val_end]
    # Strictly before cut - gap: a training sample sharing the first validation timestamp (or
    # within the embargo of it) is dropped rather than allowed to straddle the boundary.
    train_idx = order[:train_end]
    train_idx = train_idx[seconds[train_idx] < cut - gap]
    if train_idx.size == 0 or val_idx.size == 0:
        raise ValueError(f"embargo: {gap}s leaves an empty training or validation set; expected "
                         "a shorter embargo or more data")
    return np.sort(train_idx), np.sort(val_idx)


def time_split(timestamps: object, *, validation_fraction: float,
               embargo: object) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into `timestamps`: the latest fraction validates, the rest trains,
    minus the training samples within `embargo` of the first validation timestamp."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction: {validation_fraction!r} is invalid; "
                         "expected 0 < fraction < 1")
    seconds, gap = _as_seconds(timestamps, embargo)
    order = np.argsort(seconds, kind="stable")
    n_val = max(1, int(round(len(order) * validation_fraction)))
    return _split_at(seconds, order, len(order) - n_val, len(order), gap)


def walk_forward(timestamps: object, n_folds: int,
                 embargo: object) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds: time-sorted data in n_folds + 1 equal blocks; fold k trains on
    blocks 0..k (minus the embargo) and validates on block k + 1."""
    if not (isinstance(n_folds, int) and n_folds >= 1):
        raise ValueError(f"n_folds: {n_folds!r} is invalid; expected an int >= 1")
    seconds, gap = _as_seconds(timestamps, embargo)
    if len(seconds) < n_folds + 1:
        raise ValueError(f"n_folds: {n_folds} is invalid for {len(seconds)} samples; expected "
                         "at most n_samples - 1")
    order = np.argsort(seconds, kind="stable")
    bounds = np.linspace(0, len(order), n_folds + 2).astype(int)
    for k in range(1, n_folds + 1):
        yield _split_at(seconds, order, bounds[k], bounds[k + 1], gap)


def _proba(proba: object, n: int) -> np.ndarray:
    matrix = as_matrix(proba, 2)
    if matrix.shape[0] != n:
        raise ValueError(f"proba: {matrix.shape[0]} rows is invalid; expected {n}")
    if (matrix < 0).any() or (matrix > 1).any() or not np.allclose(matrix.sum(axis=1), 1.0):
        raise ValueError("proba: rows are invalid; expected [P(0), P(1)] in [0, 1] summing to 1")
    return matrix


def _calibration_error(p1: np.ndarray, y: np.ndarray) -> float:
    bins = np.minimum((p1 * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        mask = bins == b
        error += mask.mean() * abs(p1[mask].mean() - y[mask].mean())
    return float(error)


def _balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    # Only classes present in the window count; a one-class window scores that class's recall.
    recalls = [np.mean(predicted[y == c] == c) for c in (0, 1) if (y == c).any()]
    return float(np.mean(recalls))


def _backtest(returns: object, predicted: np.ndarray, called: np.ndarray,
              fee: float) -> Backtest:
    forward = np.asarray(returns, dtype=np.float64)
    if forward.shape != predicted.shape or not np.isfinite(forward).all():
        raise ValueError(f"returns: shape {forward.shape} or values invalid; expected "
                         f"{predicted.shape} finite forward returns")
    position = np.where(called, np.where(predicted == 1, 1.0, -1.0), 0.0)
    net = (position * forward - fee * np.abs(position))[called]
    spread = float(net.std()) if net.size > 1 else 0.0
    return Backtest(n_trades=int(net.size),
                    hit_rate=float((net > 0).mean()) if net.size else None,
                    mean_net_return=float(net.mean()) if net.size else None,
                    total_net_return=float(net.sum()),
                    sharpe=float(net.mean() / spread) if spread > 0 else None,
                    turnover=float(called.mean()))


def metrics(y_true: object, proba: object, *, threshold: float, returns: object = None,
            fee: float = DEFAULT_ROUND_TRIP_FEE) -> Metrics:
    """All quality figures of `proba` against `y_true`; with `returns` (forward fractional
    returns over the label horizon, per sample) also a net-of-fee backtest of the calls."""
    if not 0.5 <= threshold <= 1:
        raise ValueError(f"threshold: {threshold!r} is invalid; expected 0.5 <= threshold <= 1")
    if not 0 <= fee < 1:
        raise ValueError(f"fee: {fee!r} is invalid; expected a round-trip fraction in [0, 1)")
    n = len(np.asarray(y_true))
    y = as_labels(y_true, n)
    matrix = _proba(proba, n)
    p1 = matrix[:, 1]
    predicted = (p1 > 0.5).astype(np.int64)
    called = matrix.max(axis=1) >= threshold
    clipped = np.clip(p1, _PROBA_EPS, 1 - _PROBA_EPS)
    return Metrics(
        n=n,
        accuracy=float(np.mean(predicted == y)),
        balanced_accuracy=_balanced_accuracy(y, predicted),
        threshold=float(threshold),
        n_calls=int(called.sum()),
        call_precision=float(np.mean(predicted[called] == y[called])) if called.any() else None,
        log_loss=float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
        brier=float(np.mean((p1 - y) ** 2)),
        ece=_calibration_error(p1, y),
        backtest=None if returns is None else _backtest(returns, predicted, called, fee),
    )


def baseline_metrics(X_train: object, y_train: object, X_val: object, y_val: object, *,
                     threshold: float, returns: object = None,
                     fee: float = DEFAULT_ROUND_TRIP_FEE) -> dict[str, Metrics]:
    """Metrics of the majority-class and naive baselines, fitted on the training window and
    scored on the validation window the candidate is scored on."""
    result = {}
    for name, baseline in (("majority", MajorityClass()), ("naive", Naive())):
        baseline.fit(X_train, y_train)
        result[name] = metrics(y_val, baseline.predict_proba(X_val), threshold=threshold,
                               returns=returns, fee=fee)
    return result
