"""Calibrated confidence: a model's probabilities mapped so that `confidence` is the estimated
probability that the call pays after costs (DESIGN §6).

`PlattScaling` is Platt's method in its multiclass form (temperature and per-class bias,
Guo et al. 2017): p' = softmax(log p / T + b), fitted by maximum likelihood on rows the model
was not fitted on and the gate's validation window does not contain. It keeps the model's
ranking within a row up to the biases, and turns over- or under-confident probabilities into
ones whose stated level matches how often calls at that level paid.

`CalibratedModel` is a base estimator plus its scaling, itself a full estimator.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from msd.ml.estimator import (FORMAT_VERSION, EstimatorBase, as_labels, as_proba,
                              require_arrays)
from msd.ml.features import N_CLASSES
from msd.ml.models import LogisticModel, OnlineLogistic

_LOG_EPS = 1e-12
# A weak pull towards "no change" keeps the optimum finite when the calibration rows hold one
# class only (a bias would otherwise run off to infinity).
_PRIOR = 1e-3
BASE_CLASSES = {0: LogisticModel, 1: OnlineLogistic}


class PlattScaling:
    """Temperature T and class biases b (b[0] = 0): p' = softmax(log p / T + b)."""

    def __init__(self, temperature: float = 1.0, bias: np.ndarray | None = None) -> None:
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: {temperature!r} is invalid; expected a finite number > 0")
        self.temperature = float(temperature)
        self.bias = np.zeros(N_CLASSES) if bias is None else np.asarray(bias, dtype=np.float64)
        self.n_fitted = 0

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and not self.bias.any()

    def fit(self, raw: np.ndarray, y: np.ndarray) -> "PlattScaling":
        labels = as_labels(y, len(raw))
        log_p = np.log(np.maximum(as_proba(raw, len(labels)), _LOG_EPS))
        result = minimize(_loss_grad, np.zeros(N_CLASSES), jac=True, args=(log_p, labels),
                          method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-9})
        self.temperature = float(np.exp(-result.x[0]))
        self.bias = np.concatenate([[0.0], result.x[1:]])
        self.n_fitted = len(labels)
        return self

    def apply(self, raw: np.ndarray) -> np.ndarray:
        log_p = np.log(np.maximum(raw, _LOG_EPS))
        scaled = softmax(log_p / self.temperature + self.bias, axis=1)
        # A class the model gives no chance at all stays impossible.
        scaled = np.where(raw > 0, scaled, 0.0)
        return scaled / scaled.sum(axis=1, keepdims=True)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"temperature": np.array(self.temperature), "bias": self.bias.copy(),
                "n_fitted": np.array(self.n_fitted)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PlattScaling":
        bias = np.array(arrays["bias"], dtype=np.float64)
        if bias.shape != (N_CLASSES,):
            raise ValueError(f"PlattScaling arrays: bias shape {bias.shape} is invalid; "
                             f"expected ({N_CLASSES},)")
        scaling = cls(float(arrays["temperature"]), bias)
        scaling.n_fitted = int(arrays["n_fitted"])
        return scaling


def _loss_grad(theta: np.ndarray, log_p: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(log_p * exp(theta0) + b) with b = (0, theta1, theta2)."""
    inverse_t = np.exp(theta[0])
    bias = np.concatenate([[0.0], theta[1:]])
    logits = log_p * inverse_t + bias
    log_q = log_softmax(logits, axis=1)
    rows = np.arange(len(y))
    loss = float(-np.mean(log_q[rows, y]) + 0.5 * _PRIOR * np.sum(theta ** 2))
    residual = np.exp(log_q)
    residual[rows, y] -= 1.0
    residual /= len(y)
    grad_t = float(np.sum(residual * log_p) * inverse_t)
    grad = np.concatenate([[grad_t], residual.sum(axis=0)[1:]]) + _PRIOR * theta
    return loss, grad


class CalibratedModel(EstimatorBase):
    """A base estimator whose probabilities pass through a PlattScaling.

    `fit(X, y)` on rows in time order fits the base on the first `1 - calibration_fraction`
    and the scaling on the rest; the training job instead builds it from parts fitted on the
    windows it chose.
    """

    def __init__(self, base: LogisticModel | OnlineLogistic | None = None,
                 scaling: PlattScaling | None = None, calibration_fraction: float = 0.25) -> None:
        self.base = base if base is not None else LogisticModel()
        self.scaling = scaling if scaling is not None else PlattScaling()
        self.calibration_fraction = float(calibration_fraction)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "CalibratedModel":
        n = len(np.asarray(y))
        cut = n - max(1, int(round(n * self.calibration_fraction)))
        self.base.fit(np.asarray(X)[:cut], np.asarray(y)[:cut])
        rest = np.asarray(X)[cut:]
        self.scaling = PlattScaling().fit(self.base.predict_proba(rest), np.asarray(y)[cut:])
        return self

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        return self.base.predict_proba(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.scaling.apply(self.base.predict_proba(X))

    def to_arrays(self) -> dict[str, np.ndarray]:
        code = next(c for c, kind in BASE_CLASSES.items() if isinstance(self.base, kind))
        arrays = {"format_version": np.array(FORMAT_VERSION), "base_class": np.array(code),
                  "calibration_fraction": np.array(self.calibration_fraction)}
        arrays.update({f"base.{k}": v for k, v in self.base.to_arrays().items()})
        arrays.update({f"scaling.{k}": v for k, v in self.scaling.to_arrays().items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "CalibratedModel":
        require_arrays(arrays, ("format_version", "base_class", "calibration_fraction",
                                "scaling.temperature", "scaling.bias", "scaling.n_fitted"),
                       cls.__name__)
        kind = BASE_CLASSES.get(int(arrays["base_class"]))
        if kind is None:
            raise ValueError(f"CalibratedModel base_class: {int(arrays['base_class'])} is "
                             f"invalid; expected one of {sorted(BASE_CLASSES)}")
        base = kind.from_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("base.")})
        scaling = PlattScaling.from_arrays({k[8:]: v for k, v in arrays.items()
                                            if k.startswith("scaling.")})
        return cls(base, scaling, float(arrays["calibration_fraction"]))
