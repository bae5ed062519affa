"""Time-ordered splits and the quality figures the promotion gate reads (DESIGN §6).

Splits never shuffle: validation always lies after training, separated by an embargo at least
as long as the label horizon plus the bar lag, because a training label at time t reads a bar
up to t + horizon + lag; without the gap those prices are the validation period's and the
score leaks.

Every validation decision counts. Labels are the outcome classes of `msd.ml.features.LABELS`
(sell pays, buy pays, neither, measured against each decision's round-trip cost), calls follow
the one tie rule of `msd.ml.estimator.call_direction`, and a decision whose outcome was
"neither" is a wrong call whatever was called. The formulas are in the README.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import numpy as np
from scipy.stats import t as student_t

from msd.ml.estimator import as_labels, as_proba, calls_of
from msd.ml.features import BUY, NO_CALL, SELL
from msd.ml.models import MajorityClass, Naive

CALIBRATION_BINS = 10
NET_RETURN_CI = 0.95               # two-sided level of the net-return interval
_PROBA_EPS = 1e-15                 # log-loss of a confident miss is large but finite


@dataclass(frozen=True)
class Metrics:
    """Quality of calls on one evaluation window; fractions unless named otherwise.

    `accuracy`: share of all decisions whose called direction paid after costs (SC-005).
    `base_rate`: max(P(buy pays), P(sell pays)) in this window, the best constant call's accuracy.
    `coverage`, `n_calls`, `precision`: the calls that reach `threshold` (emitted) and the share
    of them that paid. `net_return_*`: mean net return per emitted call after its cost, and its
    two-sided 95 % interval from the `independent_calls` emitted calls whose outcome periods do
    not overlap (None with fewer than 2 of them; see `_interval`). `calibration_error`: the
    expected calibration error of confidence vs "the call paid" over 10 equal-width bins.
    """
    n: int
    threshold: float
    accuracy: float
    base_rate: float
    up_rate: float
    down_rate: float
    balanced_accuracy: float
    coverage: float
    n_calls: int
    precision: float | None
    net_return_mean: float | None
    net_return_lower: float | None
    net_return_upper: float | None
    independent_calls: int
    mean_confidence: float | None
    log_loss: float
    brier: float
    calibration_error: float


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


def _calibration_error(confidence: np.ndarray, paid: np.ndarray) -> float:
    if confidence.size == 0:
        return 0.0
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        mask = bins == b
        error += mask.mean() * abs(confidence[mask].mean() - paid[mask].mean())
    return float(error)


def _recall(y: np.ndarray, direction: np.ndarray, side: int) -> float:
    """Recall on outcome `side`; 0 when the window holds no such outcome (see below)."""
    mask = y == side
    return float(np.mean(direction[mask] == side)) if mask.any() else 0.0


def _balanced_accuracy(y: np.ndarray, direction: np.ndarray) -> float:
    """Mean recall on "buy pays" and on "sell pays", the README's formula taken literally: an
    outcome absent from the window contributes recall 0 (0/0 is not 1). A window where only one
    direction ever paid cannot show that a model tells the two apart, so nothing scores above
    0.5 on it; before this, a constant caller scored 1.0 there (review finding 9)."""
    return float((_recall(y, direction, BUY) + _recall(y, direction, SELL)) / 2.0)


def non_overlapping_calls(decided_at: np.ndarray, overlap_s: float) -> np.ndarray:
    """Positions (into time-sorted `decided_at`) of a subsample of calls whose outcome periods
    do not overlap: the first call, then each next call at least `overlap_s` (horizon + bar
    lag) after the last one kept. Across assets too: crypto assets move together, so calls on
    two assets in the same minute are not independent evidence either."""
    kept, next_allowed = [], -math.inf
    for i, at in enumerate(decided_at):
        if at >= next_allowed:
            kept.append(i)
            next_allowed = at + overlap_s
    return np.asarray(kept, dtype=np.int64)


def _interval(values: np.ndarray, decided_at: np.ndarray | None,
              overlap_s: float) -> tuple[float | None, float | None, float | None, int]:
    """(mean, lower, upper, independent calls) of the net returns of the emitted calls.

    Calls whose horizons overlap share most of their move, so their returns are strongly
    correlated and an interval that treats them as independent is far too narrow (an
    always-buy model of zero edge had its lower bound above 0 in a third of windows). The
    mean is over every emitted call; the interval's half-width is the Student-t one of the
    non-overlapping subsample (`non_overlapping_calls`), which is exact for independent outcome
    periods and about right (slightly wide) for the mean of all calls."""
    if values.size == 0:
        return None, None, None, 0
    mean = float(values.mean())
    if decided_at is None or overlap_s <= 0:
        sample = values
    else:
        order = np.argsort(decided_at, kind="stable")
        sample = values[order][non_overlapping_calls(decided_at[order], overlap_s)]
    if sample.size < 2:
        return mean, None, None, int(sample.size)
    half = float(student_t.ppf(0.5 + NET_RETURN_CI / 2, sample.size - 1)
                 * sample.std(ddof=1) / math.sqrt(sample.size))
    return mean, mean - half, mean + half, int(sample.size)


def _vector(name: str, values: object, n: int) -> np.ndarray:
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: values are invalid; expected {n} finite numbers")
    return array


def net_returns(direction: np.ndarray, moves: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Net return of each call after its cost: +move for a buy, -move for a sell, minus cost."""
    signed = np.where(direction == BUY, 1.0, np.where(direction == SELL, -1.0, 0.0))
    return signed * moves - costs


def metrics(y_true: object, proba: object, *, threshold: float, moves: object,
            costs: object, decided_at: object = None, overlap_s: float = 0.0) -> Metrics:
    """Every figure of `proba` (n, 3) against outcome classes `y_true`; `moves` are the
    fractional market moves from each decision's price to the horizon close and `costs` the
    round-trip cost each outcome was judged against (a scalar applies to all). `decided_at`
    (epoch seconds) and `overlap_s` (horizon + bar lag) make the net-return interval account
    for overlapping outcome periods; without them calls are taken as independent."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold: {threshold!r} is invalid; expected 0 < threshold <= 1")
    n = len(np.asarray(y_true))
    if n == 0:
        raise ValueError("y_true: no decisions is invalid; expected at least one")
    y = as_labels(y_true, n)
    matrix = as_proba(proba, n)
    move, cost = _vector("moves", moves, n), _vector("costs", costs, n)
    calls = calls_of(matrix)
    paid = (calls.direction != NO_CALL) & (calls.direction == y)
    emitted = (calls.direction != NO_CALL) & (calls.confidence >= threshold)
    net = net_returns(calls.direction, move, cost)[emitted]
    if overlap_s > 0 and decided_at is None:
        raise ValueError("decided_at: None is invalid with overlap_s > 0; expected the decision times")
    stamps = None if decided_at is None else _vector("decided_at", decided_at, n)[emitted]
    mean, lower, upper, independent = _interval(net, stamps, float(overlap_s))
    called = calls.direction != NO_CALL
    truth = np.eye(matrix.shape[1])[y]
    up_rate, down_rate = float(np.mean(y == BUY)), float(np.mean(y == SELL))
    return Metrics(
        n=n, threshold=float(threshold),
        accuracy=float(paid.mean()), base_rate=max(up_rate, down_rate),
        up_rate=up_rate, down_rate=down_rate,
        balanced_accuracy=_balanced_accuracy(y, calls.direction),
        coverage=float(emitted.mean()), n_calls=int(emitted.sum()),
        precision=float(paid[emitted].mean()) if emitted.any() else None,
        net_return_mean=mean, net_return_lower=lower, net_return_upper=upper,
        independent_calls=independent,
        mean_confidence=float(calls.confidence[emitted].mean()) if emitted.any() else None,
        log_loss=float(-np.mean(np.log(np.clip(matrix[np.arange(n), y], _PROBA_EPS, 1.0)))),
        brier=float(np.mean(np.sum((matrix - truth) ** 2, axis=1))),
        calibration_error=_calibration_error(calls.confidence[called], paid[called]),
    )


def baseline_metrics(X_train: object, y_train: object, X_val: object, y_val: object, *,
                     threshold: float, moves: object, costs: object, decided_at: object = None,
                     overlap_s: float = 0.0) -> dict[str, "Metrics"]:
    """Metrics of the constant (training frequencies) and naive baselines, fitted on the
    training window and scored on the validation window the candidate is scored on."""
    result = {}
    for name, baseline in (("majority", MajorityClass()), ("naive", Naive())):
        baseline.fit(X_train, y_train)
        result[name] = metrics(y_val, baseline.predict_proba(X_val), threshold=threshold,
                               moves=moves, costs=costs, decided_at=decided_at,
                               overlap_s=overlap_s)
    return result
