"""The two baselines every candidate must beat on the same validation window (DESIGN §6).

They implement the full estimator interface so the contract tests and the gate treat them
exactly like real models; `msd.ml.models` re-exports them.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from msd.ml.estimator import (FORMAT_VERSION, EstimatorBase, as_labels, as_matrix,
                              require_arrays, two_columns)
from msd.ml.features import FEATURE_NAMES


class MajorityClass(EstimatorBase):
    """Baseline: always the training base rate. A gate this passes is not a gate."""

    def __init__(self) -> None:
        self.base_rate: float | None = None
        self.n_features: int | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "MajorityClass":
        matrix = as_matrix(X)
        self.base_rate = float(as_labels(y, len(matrix)).mean())
        self.n_features = matrix.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.base_rate is None:
            raise RuntimeError("MajorityClass: predict before fit")
        matrix = as_matrix(X, self.n_features)
        return two_columns(np.full(len(matrix), self.base_rate))

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.base_rate is None:
            raise RuntimeError("MajorityClass: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION), "base_rate": np.array(self.base_rate),
                "n_features": np.array(self.n_features)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "MajorityClass":
        require_arrays(arrays, ("format_version", "base_rate", "n_features"), cls.__name__)
        model = cls()
        model.base_rate = float(arrays["base_rate"])
        model.n_features = int(arrays["n_features"])
        return model


class Naive(EstimatorBase):
    """Baseline: the price keeps going the way it went over the last short interval.

    The call is the sign of the return in column `return_index`; its probability is how often
    that rule was right in training (so log-loss and calibration are comparable), floored just
    above 0.5 so the call keeps the rule's direction even where persistence did not work. A zero
    return carries no direction and gets the training base rate.
    """
    _MIN_CONFIDENCE = 0.501
    _MAX_CONFIDENCE = 0.999  # a finite log-loss even when the rule was always right in training

    def __init__(self, return_index: int = FEATURE_NAMES.index("return_1m")) -> None:
        self.return_index = int(return_index)
        self.confidence: float | None = None
        self.base_rate: float | None = None
        self.n_features: int | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Naive":
        matrix = as_matrix(X)
        labels = as_labels(y, len(matrix))
        if not 0 <= self.return_index < matrix.shape[1]:
            raise ValueError(f"return_index: {self.return_index} is invalid; expected "
                             f"0..{matrix.shape[1] - 1}")
        direction = np.sign(matrix[:, self.return_index])
        moved = direction != 0
        hits = (direction[moved] > 0) == (labels[moved] == 1)
        hit_rate = float(hits.mean()) if moved.any() else 0.5
        self.confidence = float(np.clip(hit_rate, self._MIN_CONFIDENCE, self._MAX_CONFIDENCE))
        self.base_rate = float(labels.mean())
        self.n_features = matrix.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.confidence is None:
            raise RuntimeError("Naive: predict before fit")
        direction = np.sign(as_matrix(X, self.n_features)[:, self.return_index])
        p1 = np.where(direction > 0, self.confidence, 1.0 - self.confidence)
        return two_columns(np.where(direction == 0, self.base_rate, p1))

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.confidence is None:
            raise RuntimeError("Naive: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION),
                "return_index": np.array(self.return_index),
                "confidence": np.array(self.confidence), "base_rate": np.array(self.base_rate),
                "n_features": np.array(self.n_features)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Naive":
        keys = ("format_version", "return_index", "confidence", "base_rate", "n_features")
        require_arrays(arrays, keys, cls.__name__)
        model = cls(int(arrays["return_index"]))
        model.confidence = float(arrays["confidence"])
        model.base_rate = float(arrays["base_rate"])
        model.n_features = int(arrays["n_features"])
        return model
