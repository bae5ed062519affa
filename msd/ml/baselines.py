"""Baselines (DESIGN §6): a constant predictor and a naive persistence rule.

They implement the full estimator interface so the contract tests, the gate and the reports
treat them exactly like real models; `msd.ml.models` re-exports them. The gate itself compares
a candidate with the validation window's own base rate (the best constant in hindsight) and
with the naive rule scored on the same window.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from msd.ml.estimator import (FORMAT_VERSION, EstimatorBase, as_labels, as_matrix,
                              class_frequencies, require_arrays)
from msd.ml.features import FEATURE_NAMES, N_CLASSES

# Keeps a class seen in training from being certain: log-loss stays finite on a surprise.
_FLOOR = 1e-3


def _smoothed(frequencies: np.ndarray) -> np.ndarray:
    smoothed = np.maximum(frequencies, _FLOOR)
    return smoothed / smoothed.sum()


class MajorityClass(EstimatorBase):
    """Baseline: always the training window's outcome frequencies, so always the same call.

    Under drift (training 45 % up, validation 80 % up) this is the model the old gate promoted.
    """

    def __init__(self) -> None:
        self.frequencies: np.ndarray | None = None
        self.n_features: int | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "MajorityClass":
        matrix = as_matrix(X)
        self.frequencies = _smoothed(class_frequencies(as_labels(y, len(matrix))))
        self.n_features = matrix.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.frequencies is None:
            raise RuntimeError("MajorityClass: predict before fit")
        matrix = as_matrix(X, self.n_features)
        return np.tile(self.frequencies, (len(matrix), 1))

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.frequencies is None:
            raise RuntimeError("MajorityClass: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION),
                "frequencies": self.frequencies.copy(), "n_features": np.array(self.n_features)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "MajorityClass":
        require_arrays(arrays, ("format_version", "frequencies", "n_features"), cls.__name__)
        model = cls()
        model.frequencies = np.array(arrays["frequencies"], dtype=np.float64)
        if model.frequencies.shape != (N_CLASSES,):
            raise ValueError(f"MajorityClass arrays: frequencies shape "
                             f"{model.frequencies.shape} is invalid; expected ({N_CLASSES},)")
        model.n_features = int(arrays["n_features"])
        return model


class Naive(EstimatorBase):
    """Baseline: the price keeps going the way it went over the last minute.

    Its probabilities are the training window's outcome frequencies after an up minute, after
    a down minute, and overall for a flat one, so its call follows the persistence rule only
    where persistence held in training, and its log-loss and calibration are comparable.
    """

    def __init__(self, return_index: int = FEATURE_NAMES.index("return_1m")) -> None:
        self.return_index = int(return_index)
        self.table: np.ndarray | None = None      # rows: after down, flat, up minute
        self.n_features: int | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Naive":
        matrix = as_matrix(X)
        labels = as_labels(y, len(matrix))
        if not 0 <= self.return_index < matrix.shape[1]:
            raise ValueError(f"return_index: {self.return_index} is invalid; expected "
                             f"0..{matrix.shape[1] - 1}")
        direction = np.sign(matrix[:, self.return_index]).astype(np.int64)
        overall = class_frequencies(labels)
        rows = []
        for sign in (-1, 0, 1):
            picked = labels[direction == sign]
            rows.append(_smoothed(class_frequencies(picked) if picked.size and sign else overall))
        self.table = np.vstack(rows)
        self.n_features = matrix.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.table is None:
            raise RuntimeError("Naive: predict before fit")
        direction = np.sign(as_matrix(X, self.n_features)[:, self.return_index]).astype(np.int64)
        return self.table[direction + 1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.table is None:
            raise RuntimeError("Naive: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION),
                "return_index": np.array(self.return_index), "table": self.table.copy(),
                "n_features": np.array(self.n_features)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Naive":
        require_arrays(arrays, ("format_version", "return_index", "table", "n_features"),
                       cls.__name__)
        model = cls(int(arrays["return_index"]))
        model.table = np.array(arrays["table"], dtype=np.float64)
        if model.table.shape != (3, N_CLASSES):
            raise ValueError(f"Naive arrays: table shape {model.table.shape} is invalid; "
                             f"expected (3, {N_CLASSES})")
        model.n_features = int(arrays["n_features"])
        return model
