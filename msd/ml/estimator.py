"""The interface every msd estimator shares, and the input checks they all apply.

    fit(X, y) -> self                       batch fit on a time window
    predict_proba(X) -> ndarray (n, 2)      column j is P(label == j), labels of features.LABELS
    predict_proba_one(x) -> {0: p0, 1: p1}
    predict(X) -> ndarray of labels         1 where P(1) > 0.5
    to_arrays() -> dict[str, ndarray]       plain numeric arrays; `from_arrays` rebuilds the model

State is numeric arrays only, so the store can write `.npz` and load it with
`allow_pickle=False`: loading a model never executes code. Which class the arrays belong to is
recorded by the store's manifest, not here.
"""
from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

# Bumped when the meaning of any stored array changes, so old artifacts are refused, not misread.
FORMAT_VERSION = 1


class Estimator(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Estimator": ...
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    def predict_proba_one(self, x: Sequence[float]) -> dict[int, float]: ...
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def to_arrays(self) -> dict[str, np.ndarray]: ...
    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Estimator": ...


def as_matrix(X: object, n_features: int | None = None) -> np.ndarray:
    """X as a finite 2-D float64 array, optionally with a required column count."""
    matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"X: shape {matrix.shape} is invalid; expected (n_samples, n_features)")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ValueError(f"X: {matrix.shape[1]} columns is invalid; expected {n_features}")
    if not np.isfinite(matrix).all():
        raise ValueError("X: contains NaN or infinity; expected finite features")
    return matrix


def as_labels(y: object, n_samples: int) -> np.ndarray:
    """y as int64 labels in {0, 1}; anything else (strings, -1/+1 encodings) is refused."""
    labels = np.asarray(y)
    if labels.shape != (n_samples,):
        raise ValueError(f"y: shape {labels.shape} is invalid; expected ({n_samples},)")
    if labels.dtype.kind not in "biu" or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"y: values {np.unique(labels)[:5]!r} are invalid; expected labels 0/1")
    return labels.astype(np.int64)


def two_columns(p1: np.ndarray) -> np.ndarray:
    """(n, 2) probabilities [P(0), P(1)] from P(1), clipped so rounding never leaves [0, 1]."""
    p1 = np.clip(p1, 0.0, 1.0)
    return np.column_stack([1.0 - p1, p1])


def require_arrays(arrays: Mapping[str, np.ndarray], keys: Sequence[str], owner: str) -> None:
    """Refuse stored arrays that lack a key or come from another FORMAT_VERSION."""
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ValueError(f"{owner} arrays: missing {missing}; expected keys {list(keys)}")
    version = int(np.asarray(arrays["format_version"]))
    if version != FORMAT_VERSION:
        raise ValueError(f"{owner} format_version: {version} is invalid; "
                         f"expected {FORMAT_VERSION}")


class EstimatorBase:
    """Shared single-row and label helpers; subclasses provide predict_proba."""

    predict_proba: Callable[[np.ndarray], np.ndarray]  # provided by each subclass

    def predict_proba_one(self, x: Sequence[float]) -> dict[int, float]:
        row = np.asarray(x, dtype=np.float64).reshape(1, -1)
        p0, p1 = self.predict_proba(row)[0]
        return {0: float(p0), 1: float(p1)}

    def predict(self, X: np.ndarray) -> np.ndarray:
        # A tie (p == 0.5) is not evidence for "buy", so it maps to label 0; callers that act
        # on predictions apply a confidence threshold anyway.
        return (self.predict_proba(X)[:, 1] > 0.5).astype(np.int64)


