"""The interface every msd estimator shares, the one tie rule, and the input checks they apply.

    fit(X, y) -> self                       batch fit on a time window; y in LABELS (0, 1, 2)
    predict_proba(X) -> ndarray (n, 3)      column k is P(outcome == k): sell pays, buy pays,
                                            neither
    predict_proba_one(x) -> {0: p, 1: p, 2: p}
    predict(X) -> ndarray of calls          1 buy, 0 sell, -1 no call (tie), see call_direction
    calls(X) -> Calls                       the call and its confidence = P(the call pays)
    to_arrays() -> dict[str, ndarray]       plain numeric arrays; `from_arrays` rebuilds the model

State is numeric arrays only, so the store can write `.npz` and load it with
`allow_pickle=False`: loading a model never executes code. Which class the arrays belong to is
recorded by the store's manifest, not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from msd.ml.features import BUY, N_CLASSES, NO_CALL, SELL

# Bumped when the meaning of any stored array changes, so old artifacts are refused, not misread.
# 2: three outcome classes measured from the decision price (1 was P(up | the move cleared the
# fee), a different question).
FORMAT_VERSION = 2


class Estimator(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Estimator": ...
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    def predict_proba_one(self, x: Sequence[float]) -> dict[int, float]: ...
    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def calls(self, X: np.ndarray) -> "Calls": ...
    def to_arrays(self) -> dict[str, np.ndarray]: ...
    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Estimator": ...


@dataclass(frozen=True)
class Calls:
    """Per row: the called direction (BUY, SELL or NO_CALL) and the model's probability that
    this call pays after costs (0 where there is no call)."""
    direction: np.ndarray
    confidence: np.ndarray


def call_direction(proba: np.ndarray) -> np.ndarray:
    """The one tie rule of msd: buy where P(buy pays) > P(sell pays), sell where it is lower,
    no call where they are equal (a tie is evidence for neither side)."""
    buy, sell = proba[:, BUY], proba[:, SELL]
    return np.where(buy > sell, BUY, np.where(sell > buy, SELL, NO_CALL)).astype(np.int64)


def calls_of(proba: np.ndarray) -> Calls:
    """Direction and confidence from (n, 3) probabilities."""
    direction = call_direction(proba)
    rows = np.arange(len(proba))
    confidence = np.where(direction == NO_CALL, 0.0, proba[rows, np.maximum(direction, 0)])
    return Calls(direction, confidence)


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
    """y as int64 outcome classes in {0, 1, 2}; anything else (strings, -1/+1) is refused."""
    labels = np.asarray(y)
    if labels.shape != (n_samples,):
        raise ValueError(f"y: shape {labels.shape} is invalid; expected ({n_samples},)")
    if labels.dtype.kind not in "biu" or not np.isin(labels, range(N_CLASSES)).all():
        raise ValueError(f"y: values {np.unique(labels)[:5]!r} are invalid; expected labels "
                         f"0..{N_CLASSES - 1}")
    return labels.astype(np.int64)


def as_proba(proba: object, n: int) -> np.ndarray:
    """(n, 3) probabilities in [0, 1] whose rows sum to 1, or ValueError."""
    matrix = as_matrix(proba, N_CLASSES)
    if matrix.shape[0] != n:
        raise ValueError(f"proba: {matrix.shape[0]} rows is invalid; expected {n}")
    if (matrix < 0).any() or (matrix > 1).any() or not np.allclose(matrix.sum(axis=1), 1.0):
        raise ValueError("proba: rows are invalid; expected P(sell), P(buy), P(neither) in "
                         "[0, 1] summing to 1")
    return matrix


def class_frequencies(labels: np.ndarray) -> np.ndarray:
    """Share of each outcome class (length N_CLASSES)."""
    return np.bincount(labels, minlength=N_CLASSES)[:N_CLASSES] / max(len(labels), 1)


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
    """Shared single-row and call helpers; subclasses provide predict_proba."""

    predict_proba: Callable[[np.ndarray], np.ndarray]  # provided by each subclass

    def predict_proba_one(self, x: Sequence[float]) -> dict[int, float]:
        row = np.asarray(x, dtype=np.float64).reshape(1, -1)
        return {k: float(p) for k, p in enumerate(self.predict_proba(row)[0])}

    def predict(self, X: np.ndarray) -> np.ndarray:
        return call_direction(self.predict_proba(X))

    def calls(self, X: np.ndarray) -> Calls:
        return calls_of(self.predict_proba(X))
