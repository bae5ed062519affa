"""Estimators: L2 multinomial logistic regression (batch and online) and the baselines.

All predict the three outcome classes of `msd.ml.features.LABELS` (sell pays, buy pays,
neither) and share the interface of `msd.ml.estimator` (fit / predict_proba / calls / predict /
to_arrays / from_arrays).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.special import softmax

from msd.ml.baselines import MajorityClass, Naive
from msd.ml.estimator import (FORMAT_VERSION, EstimatorBase, as_labels, as_matrix,
                              require_arrays)
from msd.ml.features import N_CLASSES
from msd.ml.newton import fit_multinomial

# The baselines live in their own module but belong to this public set of estimators.
__all__ = ["LogisticConfig", "LogisticModel", "MajorityClass", "Naive", "OnlineConfig",
           "OnlineLogistic"]


@dataclass(frozen=True)
class LogisticConfig:
    """`l2` is the penalty per sample: the fit minimises mean log-loss + l2/2 * |W|^2 over the
    standardised weights (intercepts are free), so l2 = 0.1 shrinks a lot and 1e-4 barely,
    whatever the number of rows. It must be > 0 so separable data still has a finite optimum."""
    l2: float = 0.01
    max_iter: int = 1000
    gtol: float = 1e-8

    def __post_init__(self) -> None:
        if not (isinstance(self.l2, (int, float)) and 0 < self.l2 < float("inf")):
            raise ValueError(f"l2: {self.l2!r} is invalid; expected a finite number > 0")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter: {self.max_iter!r} is invalid; expected an int >= 1")
        if not (isinstance(self.gtol, (int, float)) and 0 < self.gtol < 1):
            raise ValueError(f"gtol: {self.gtol!r} is invalid; expected 0 < gtol < 1")


def _standardise(X: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of X's columns, with (X - mean) / scale written to `out`. The scale is
    the columns' standard deviation, summed from the centred values already in `out`."""
    mean = X.mean(axis=0)
    np.subtract(X, mean, out=out)
    scale = (np.sqrt(np.einsum("ij,ij->j", out, out) / len(X)) if len(X)
             else np.ones(X.shape[1]))
    # A constant column standardises to 0 instead of dividing by zero; its weight then meets
    # only the penalty and stays at 0.
    scale = np.where(scale > 0, scale, 1.0)
    out /= scale
    return mean, scale


def _expand(p_present: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(n, k present) probabilities to (n, 3): a class never seen in training gets 0."""
    full = np.zeros((len(p_present), N_CLASSES))
    full[:, classes] = p_present
    return full


class LogisticModel(EstimatorBase):
    """L2-regularised multinomial logistic regression fitted by Newton's method on the exact
    loss (msd.ml.newton).

    Standardisation (training mean and std) is part of the model, so callers feed raw features.
    Only the outcome classes present in training are modelled; an absent class has P = 0.
    """

    def __init__(self, config: LogisticConfig = LogisticConfig()) -> None:
        self.config = config
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.classes: np.ndarray | None = None
        self.coef: np.ndarray | None = None      # (d, k) on standardised features
        self.intercept: np.ndarray | None = None  # (k,)
        self.converged = False
        self.n_iter = 0
        self.n_train = 0

    def fit(self, X: np.ndarray, y: np.ndarray,
            warm_start: "LogisticModel | None" = None) -> "LogisticModel":
        """Fit on X, y; `warm_start` (a fitted model on the same classes) is where Newton's
        method starts instead of zeros (the optimum is the same, it is reached sooner)."""
        matrix = as_matrix(X)
        labels = as_labels(y, len(matrix))
        classes = np.flatnonzero(np.bincount(labels, minlength=N_CLASSES))
        if classes.size < 2:
            # One class has no finite optimum with free intercepts; the trainer must not get
            # here (a constant describes such data completely).
            raise ValueError("y: a single class is invalid; expected at least two outcome classes")
        # the design: Z and a column of ones, column-major (each column written in one sweep)
        Z1 = np.empty((matrix.shape[0], matrix.shape[1] + 1), order="F")
        self.mean, self.scale = _standardise(matrix, Z1[:, :-1])
        Z1[:, -1] = 1.0
        del matrix
        start = None
        if warm_start is not None and warm_start.coef is not None \
                and np.array_equal(warm_start.classes, classes):
            start = (warm_start.coef, warm_start.intercept)
        result = fit_multinomial(Z1, np.searchsorted(classes, labels), classes.size,
                                 float(self.config.l2), max_iter=self.config.max_iter,
                                 gtol=self.config.gtol, start=start)
        self.classes = classes
        self.coef, self.intercept = result.coef, result.intercept
        self.converged, self.n_iter, self.n_train = result.converged, result.n_iter, len(labels)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("LogisticModel: predict before fit")
        Z = (as_matrix(X, self.coef.shape[0]) - self.mean) / self.scale
        return _expand(softmax(Z @ self.coef + self.intercept, axis=1), self.classes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.coef is None:
            raise RuntimeError("LogisticModel: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION), "l2": np.array(self.config.l2),
                "max_iter": np.array(self.config.max_iter), "gtol": np.array(self.config.gtol),
                "mean": self.mean.copy(), "scale": self.scale.copy(),
                "classes": self.classes.copy(), "coef": self.coef.copy(),
                "intercept": self.intercept.copy(), "converged": np.array(int(self.converged)),
                "n_iter": np.array(self.n_iter), "n_train": np.array(self.n_train)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "LogisticModel":
        keys = ("format_version", "l2", "max_iter", "gtol", "mean", "scale", "classes", "coef",
                "intercept", "converged", "n_iter", "n_train")
        require_arrays(arrays, keys, cls.__name__)
        model = cls(LogisticConfig(l2=float(arrays["l2"]), max_iter=int(arrays["max_iter"]),
                                   gtol=float(arrays["gtol"])))
        model.mean = np.array(arrays["mean"], dtype=np.float64)
        model.scale = np.array(arrays["scale"], dtype=np.float64)
        model.classes = np.array(arrays["classes"], dtype=np.int64)
        model.coef = np.array(arrays["coef"], dtype=np.float64)
        model.intercept = np.array(arrays["intercept"], dtype=np.float64)
        d = model.mean.size
        k = model.classes.size
        if not (model.mean.shape == model.scale.shape == (d,) and model.coef.shape == (d, k)
                and model.intercept.shape == (k,) and 2 <= k <= N_CLASSES
                and np.isin(model.classes, range(N_CLASSES)).all()):
            raise ValueError("LogisticModel arrays: mean/scale/coef/intercept/classes shapes "
                             "differ; expected (d,), (d,), (d, k), (k,), k classes in 0..2")
        model.converged, model.n_iter = bool(arrays["converged"]), int(arrays["n_iter"])
        model.n_train = int(arrays["n_train"])
        return model


@dataclass(frozen=True)
class OnlineConfig:
    """`l2` is the per-sample penalty on standardised weights (the intercept is not penalised);
    `batch_size` rows make one step in learn_many; `fit` makes `epochs` passes in an order
    shuffled by `seed`."""
    l2: float = 1e-4
    learning_rate: float = 0.1
    batch_size: int = 16
    epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.l2, (int, float)) and 0 <= self.l2 < float("inf")):
            raise ValueError(f"l2: {self.l2!r} is invalid; expected a finite number >= 0")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate <= 10):
            raise ValueError(f"learning_rate: {self.learning_rate!r} is invalid; "
                             "expected 0 < learning_rate <= 10")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}: {value!r} is invalid; expected an int >= 1")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed: {self.seed!r} is invalid; expected an int >= 0")


# Guards the AdaGrad division on the very first step, before any gradient has accumulated.
_ADAGRAD_EPS = 1e-8
# Logit given to an outcome class the warm-start model never saw: near 0 probability, learnable.
_ABSENT_CLASS_LOGIT = -10.0
_ONLINE_CONFIG_KEYS = ("l2", "learning_rate", "batch_size", "epochs", "seed")
_ONLINE_STATE_KEYS = ("count", "mean", "m2", "coef", "intercept", "g2_coef", "g2_intercept")


class OnlineLogistic(EstimatorBase):
    """Multinomial logistic regression updated one labelled outcome (or mini-batch) at a time.

    Features are standardised with running mean/variance (Chan/Welford), updated before each
    step; steps are AdaGrad, whose per-coordinate rates shrink as evidence accumulates, so the
    weights settle near the batch optimum on a stationary stream while still following drift.
    Before any learning it predicts 1/3 for each class. `warm_started` starts from a batch
    model instead (its weights, and its standardisation weighted by its training rows).
    """

    def __init__(self, n_features: int, config: OnlineConfig = OnlineConfig()) -> None:
        if not (isinstance(n_features, int) and n_features >= 1):
            raise ValueError(f"n_features: {n_features!r} is invalid; expected an int >= 1")
        self.config = config
        self.n_features = n_features
        self._reset()

    def _reset(self) -> None:
        d = self.n_features
        self.count = 0
        self.mean, self.m2 = np.zeros(d), np.zeros(d)
        self.coef, self.intercept = np.zeros((d, N_CLASSES)), np.zeros(N_CLASSES)
        self.g2_coef, self.g2_intercept = np.zeros((d, N_CLASSES)), np.zeros(N_CLASSES)

    @classmethod
    def warm_started(cls, batch: LogisticModel,
                     config: OnlineConfig = OnlineConfig()) -> "OnlineLogistic":
        """An online learner that predicts exactly what `batch` predicts, then learns on."""
        if batch.coef is None:
            raise RuntimeError("OnlineLogistic.warm_started: the batch model is not fitted")
        model = cls(batch.coef.shape[0], config)
        model.count = max(int(batch.n_train), 1)
        model.mean = batch.mean.copy()
        model.m2 = batch.scale ** 2 * model.count
        model.intercept[:] = _ABSENT_CLASS_LOGIT
        model.coef[:, batch.classes] = batch.coef
        model.intercept[batch.classes] = batch.intercept
        return model

    def learn_one(self, x: Sequence[float], y: int) -> None:
        """One prequential update: call after the label of a prediction on `x` has arrived."""
        row = as_matrix(np.asarray(x, dtype=np.float64).reshape(1, -1), self.n_features)
        self._step(row, as_labels(np.asarray([y]), 1))

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Learn rows in the given (time) order, `batch_size` rows per step.

        With batch_size 1 this is exactly a loop of learn_one, without the per-row checks.
        """
        matrix = as_matrix(X, self.n_features)
        labels = as_labels(y, len(matrix))
        size = self.config.batch_size
        for start in range(0, len(matrix), size):
            self._step(matrix[start:start + size], labels[start:start + size])

    def fit(self, X: np.ndarray, y: np.ndarray) -> "OnlineLogistic":
        """Forget everything, then make `epochs` seeded shuffled passes over a batch."""
        matrix = as_matrix(X, self.n_features)
        labels = as_labels(y, len(matrix))
        self._reset()
        rng = np.random.default_rng(self.config.seed)
        for _ in range(self.config.epochs):
            order = rng.permutation(len(matrix))
            self.learn_many(matrix[order], labels[order])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        Z = self._standardise(as_matrix(X, self.n_features))
        return softmax(Z @ self.coef + self.intercept, axis=1)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        variance = self.m2 / self.count if self.count else np.zeros(self.n_features)
        scale = np.sqrt(variance)
        return (X - self.mean) / np.where(scale > 0, scale, 1.0)

    def _step(self, X: np.ndarray, y: np.ndarray) -> None:
        self._update_moments(X)
        Z = self._standardise(X)
        residual = softmax(Z @ self.coef + self.intercept, axis=1)
        residual[np.arange(len(y)), y] -= 1.0
        grad_coef = Z.T @ residual / len(y) + self.config.l2 * self.coef
        grad_intercept = residual.mean(axis=0)
        self.g2_coef += grad_coef ** 2
        self.g2_intercept += grad_intercept ** 2
        rate = self.config.learning_rate
        self.coef -= rate * grad_coef / (np.sqrt(self.g2_coef) + _ADAGRAD_EPS)
        self.intercept -= rate * grad_intercept / (np.sqrt(self.g2_intercept) + _ADAGRAD_EPS)

    def _update_moments(self, X: np.ndarray) -> None:
        # Chan et al.'s pairwise merge; for one row it is Welford's update.
        m = len(X)
        batch_mean = X.mean(axis=0)
        delta = batch_mean - self.mean
        total = self.count + m
        self.m2 += ((X - batch_mean) ** 2).sum(axis=0) + delta ** 2 * (self.count * m / total)
        self.mean += delta * (m / total)
        self.count = total

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"format_version": np.array(FORMAT_VERSION)}
        arrays.update({key: np.array(getattr(self.config, key)) for key in _ONLINE_CONFIG_KEYS})
        arrays.update({key: np.array(getattr(self, key), dtype=np.float64)
                       for key in _ONLINE_STATE_KEYS})
        arrays["count"] = np.array(self.count, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "OnlineLogistic":
        require_arrays(arrays, ("format_version", *_ONLINE_CONFIG_KEYS, *_ONLINE_STATE_KEYS),
                       cls.__name__)
        config = OnlineConfig(l2=float(arrays["l2"]),
                              learning_rate=float(arrays["learning_rate"]),
                              batch_size=int(arrays["batch_size"]), epochs=int(arrays["epochs"]),
                              seed=int(arrays["seed"]))
        model = cls(int(np.asarray(arrays["mean"]).size), config)
        d = model.n_features
        shapes = {"mean": (d,), "m2": (d,), "coef": (d, N_CLASSES), "g2_coef": (d, N_CLASSES),
                  "intercept": (N_CLASSES,), "g2_intercept": (N_CLASSES,)}
        for key, shape in shapes.items():
            value = np.array(arrays[key], dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"OnlineLogistic arrays: {key} shape {value.shape} is invalid; "
                                 f"expected {shape}")
            setattr(model, key, value)
        model.count = int(arrays["count"])
        return model
