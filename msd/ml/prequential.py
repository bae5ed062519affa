"""Prequential (test-then-train) tracking of live quality with delayed labels.

A prediction is made when a signal is emitted; its label ("did the price move past fees over
the horizon") is known only after the horizon and after the execution arrives. The tracker
keeps each prediction under its signal_id until then, scores it when the label comes, and hands
the stored features back so the caller can learn from them: each outcome is therefore scored
by a model that had not yet learned from it. Pure state: no clock, no I/O.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from msd.ml.features import SIDES


@dataclass(frozen=True)
class PendingPrediction:
    """What was predicted for one signal, kept until its label arrives."""
    signal_id: str
    p1: float                      # P(label 1 = "buy pays") as predicted
    x: np.ndarray | None           # the feature vector, for the online update

    @property
    def predicted(self) -> int:
        return 1 if self.p1 > 0.5 else 0  # same tie rule as EstimatorBase.predict


@dataclass(frozen=True)
class LiveMetrics:
    """Rolling quality over the last `window` labelled predictions (None before any)."""
    n: int
    accuracy: float | None
    brier: float | None
    pending: int
    evicted: int


class Prequential:
    """Rolling live accuracy over the last `window` labelled predictions.

    Predictions whose label never comes (rejected orders, lost executions) would pile up, so at
    most `max_pending` are kept; the oldest is dropped first and counted in `evicted`.
    """

    def __init__(self, window: int = 200, max_pending: int = 10_000) -> None:
        for name, value in (("window", window), ("max_pending", max_pending)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}: {value!r} is invalid; expected an int >= 1")
        self.window, self.max_pending = window, max_pending
        self._pending: OrderedDict[str, PendingPrediction] = OrderedDict()
        self._correct: deque[bool] = deque(maxlen=window)
        self._squared_error: deque[float] = deque(maxlen=window)
        self.evicted = 0

    def record_prediction(self, signal_id: str, proba: Mapping[int, float],
                          x: Sequence[float] | None = None) -> None:
        """Remember the prediction `proba` ({0: p0, 1: p1}) made for `signal_id`."""
        if signal_id in self._pending:
            raise ValueError(f"signal_id: {signal_id!r} is invalid; a prediction for it is "
                             "already pending")
        if set(proba) != set(SIDES) or not 0.0 <= proba[1] <= 1.0:
            raise ValueError(f"proba: {dict(proba)!r} is invalid; expected {{0: p0, 1: p1}}")
        features = None if x is None else np.array(x, dtype=np.float64)
        self._pending[signal_id] = PendingPrediction(signal_id, float(proba[1]), features)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.evicted += 1

    def record_label(self, signal_id: str, label: int) -> PendingPrediction | None:
        """Score the pending prediction for `signal_id` against `label` and return it.

        Returns None when nothing is pending for the id (never predicted, evicted, or already
        labelled: a redelivered outcome must not be counted twice).
        """
        if not (isinstance(label, (int, np.integer)) and not isinstance(label, bool)
                and int(label) in SIDES):
            raise ValueError(f"label: {label!r} is invalid; expected one of {sorted(SIDES)}")
        pending = self._pending.pop(signal_id, None)
        if pending is None:
            return None
        self._correct.append(pending.predicted == int(label))
        self._squared_error.append((pending.p1 - int(label)) ** 2)
        return pending

    def discard(self, signal_id: str) -> bool:
        """Forget a prediction whose label will never come (e.g. the order was rejected)."""
        return self._pending.pop(signal_id, None) is not None

    def live_metrics(self) -> LiveMetrics:
        n = len(self._correct)
        return LiveMetrics(n=n,
                           accuracy=float(np.mean(self._correct)) if n else None,
                           brier=float(np.mean(self._squared_error)) if n else None,
                           pending=len(self._pending), evicted=self.evicted)
