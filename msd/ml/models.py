"""Estimators: L2 logistic regression (batch and online) and the two baselines it must beat.

All predict the market-direction label of `msd.ml.features.LABELS` and share the interface of
`msd.ml.estimator` (fit / predict_proba / predict_proba_one / predict / to_arrays / from_arrays).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from msd.ml.baselines import MajorityClass, Naive
from msd.ml.estimator import (FORMAT_VERSION, EstimatorBase, as_labels, as_matrix,
                              require_arrays, two_columns)

# The baselines live in their own module but belong to this public set of estimators.
__all__ = ["LogisticConfig", "LogisticModel", "MajorityClass", "Naive", "OnlineConfig",
           "OnlineLogistic"]


@dataclass(frozen=True)
class LogisticConfig:
    """`l2` penalises the squared norm of the standardised coefficients (not the intercept) in
    the summed log-loss, like 1/C in scikit-learn; it must be > 0 so separable data still has a
    finite optimum."""
    l2: float = 1.0
    max_iter: int = 1000
    gtol: float = 1e-8

    def __post_init__(self) -> None:
        if not (isinstance(self.l2, (int, float)) and 0 < self.l2 < float("inf")):
            raise ValueError(f"l2: {self.l2!r} is invalid; expected a finite number > 0")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter: {self.max_iter!r} is invalid; expected an int >= 1")
        if not (isinstance(self.gtol, (int, float)) and 0 < self.gtol < 1):
            raise ValueError(f"gtol: {self.gtol!r} is invalid; expected 0 < gtol < 1")


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = X.std(axis=0)
    # A constant column standardises to 0 instead of dividing by zero; its weight then meets
    # only the penalty and stays at 0.
    return X.mean(axis=0), np.where(scale > 0, scale, 1.0)


def _logistic_loss_grad(theta: np.ndarray, Z: np.ndarray, y: np.ndarray,
                        alpha: float) -> tuple[float, np.ndarray]:
    """Mean log-loss + alpha/2 * |w|^2 and its exact gradient; theta = (w, intercept).

    The mean (with alpha = l2 / n) has the same minimiser as the summed loss but keeps the
    gradient tolerance meaningful whatever the sample count.
    """
    w, intercept = theta[:-1], theta[-1]
    z = Z @ w + intercept
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * alpha * (w @ w))
    residual = (expit(z) - y) / len(y)
    grad = np.empty_like(theta)
    grad[:-1] = Z.T @ residual + alpha * w
    grad[-1] = residual.sum()
    return loss, grad


def _unpenalised_logit(labels: np.ndarray, Z: np.ndarray):
    """statsmodels Logit results on [1, Z], or a message when the MLE is not usable."""
    # statsmodels is heavy and only needed here, for a human-facing report.
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import (ConvergenceWarning, PerfectSeparationError,
                                                 PerfectSeparationWarning)
    design = sm.add_constant(Z, has_constant="add")
    try:
        with warnings.catch_warnings():
            # statsmodels only warns on separation; p-values from such a fit are nonsense.
            warnings.simplefilter("error", PerfectSeparationWarning)
            warnings.simplefilter("error", ConvergenceWarning)
            result = sm.Logit(labels, design).fit(disp=0, maxiter=200)
    except (PerfectSeparationError, PerfectSeparationWarning, ConvergenceWarning,
            np.linalg.LinAlgError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if not result.mle_retvals.get("converged", False):
        return "statsmodels Logit did not converge"
    return result


class LogisticModel(EstimatorBase):
    """L2-regularised logistic regression fitted by L-BFGS on the exact loss and gradient.

    Standardisation (training mean and std) is part of the model, so callers feed raw features.
    """

    def __init__(self, config: LogisticConfig = LogisticConfig()) -> None:
        self.config = config
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coef: np.ndarray | None = None      # on standardised features
        self.intercept = 0.0
        self.converged = False
        self.n_iter = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogisticModel":
        matrix = as_matrix(X)
        labels = as_labels(y, len(matrix))
        if np.unique(labels).size < 2:
            # With an unpenalised intercept one class has no finite optimum; the trainer must
            # not get here (the majority baseline describes such data completely).
            raise ValueError("y: a single class is invalid; expected both labels 0 and 1")
        self.mean, self.scale = _standardiser(matrix)
        Z = (matrix - self.mean) / self.scale
        result = minimize(_logistic_loss_grad, np.zeros(matrix.shape[1] + 1), jac=True,
                          args=(Z, labels.astype(np.float64), self.config.l2 / len(labels)),
                          method="L-BFGS-B",
                          options={"maxiter": self.config.max_iter, "gtol": self.config.gtol,
                                   "ftol": 1e-15})
        self.coef, self.intercept = result.x[:-1].copy(), float(result.x[-1])
        self.converged, self.n_iter = bool(result.success), int(result.nit)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("LogisticModel: predict before fit")
        Z = (as_matrix(X, self.coef.size) - self.mean) / self.scale
        return two_columns(expit(Z @ self.coef + self.intercept))

    def raw_coefficients(self) -> tuple[np.ndarray, float]:
        """Coefficients and intercept on the unstandardised features (for comparisons)."""
        if self.coef is None:
            raise RuntimeError("LogisticModel: raw_coefficients before fit")
        coef = self.coef / self.scale
        return coef, float(self.intercept - coef @ self.mean)

    def coefficient_report(self, X: np.ndarray, y: np.ndarray,
                           feature_names: Sequence[str] | None = None) -> dict:
        """Unpenalised statsmodels Logit on this model's standardisation, for human reading.

        Returns JSON-friendly lists (coefficients, standard errors, p-values) or, when the MLE
        does not exist or cannot be computed (perfect separation, singular design), `error`.
        """
        if self.coef is None:
            raise RuntimeError("LogisticModel: coefficient_report before fit")
        matrix = as_matrix(X, self.coef.size)
        labels = as_labels(y, len(matrix))
        names = list(feature_names or [f"x{i}" for i in range(self.coef.size)])
        result = _unpenalised_logit(labels, (matrix - self.mean) / self.scale)
        if isinstance(result, str):
            return {"error": result}
        return {"names": ["intercept", *names], "coef": result.params.tolist(),
                "std_err": result.bse.tolist(), "p_values": result.pvalues.tolist(),
                "model_coef": [self.intercept, *self.coef.tolist()],
                "log_likelihood": float(result.llf), "pseudo_r2": float(result.prsquared),
                "n": int(len(labels))}

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.coef is None:
            raise RuntimeError("LogisticModel: to_arrays before fit")
        return {"format_version": np.array(FORMAT_VERSION), "l2": np.array(self.config.l2),
                "max_iter": np.array(self.config.max_iter), "gtol": np.array(self.config.gtol),
                "mean": self.mean.copy(), "scale": self.scale.copy(), "coef": self.coef.copy(),
                "intercept": np.array(self.intercept), "converged": np.array(int(self.converged)),
                "n_iter": np.array(self.n_iter)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "LogisticModel":
        keys = ("format_version", "l2", "max_iter", "gtol", "mean", "scale", "coef",
                "intercept", "converged", "n_iter")
        require_arrays(arrays, keys, cls.__name__)
        model = cls(LogisticConfig(l2=float(arrays["l2"]), max_iter=int(arrays["max_iter"]),
                                   gtol=float(arrays["gtol"])))
        model.mean = np.array(arrays["mean"], dtype=np.float64)
        model.scale = np.array(arrays["scale"], dtype=np.float64)
        model.coef = np.array(arrays["coef"], dtype=np.float64)
        if not model.mean.shape == model.scale.shape == model.coef.shape == (model.coef.size,):
            raise ValueError("LogisticModel arrays: mean/scale/coef shapes differ; expected "
                             "equal 1-D shapes")
        model.intercept = float(arrays["intercept"])
        model.converged, model.n_iter = bool(arrays["converged"]), int(arrays["n_iter"])
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
_ONLINE_CONFIG_KEYS = ("l2", "learning_rate", "batch_size", "epochs", "seed")
_ONLINE_STATE_KEYS = ("count", "mean", "m2", "coef", "intercept", "g2_coef", "g2_intercept")


class OnlineLogistic(EstimatorBase):
    """Logistic regression updated one labelled outcome (or mini-batch) at a time.

    Features are standardised with running mean/variance (Chan/Welford), updated before each
    step; steps are AdaGrad, whose per-coordinate rates shrink as evidence accumulates, so the
    weights settle near the batch optimum on a stationary stream while still following drift.
    Before any learning it predicts 0.5.
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
        self.coef, self.intercept = np.zeros(d), 0.0
        self.g2_coef, self.g2_intercept = np.zeros(d), 0.0

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
        return two_columns(expit(Z @ self.coef + self.intercept))

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        variance = self.m2 / self.count if self.count else np.zeros(self.n_features)
        scale = np.sqrt(variance)
        return (X - self.mean) / np.where(scale > 0, scale, 1.0)

    def _step(self, X: np.ndarray, y: np.ndarray) -> None:
        self._update_moments(X)
        Z = self._standardise(X)
        residual = expit(Z @ self.coef + self.intercept) - y
        grad_coef = Z.T @ residual / len(y) + self.config.l2 * self.coef
        grad_intercept = float(residual.mean())
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
        model = cls(int(np.asarray(arrays["coef"]).size), config)
        for key in ("mean", "m2", "coef", "g2_coef"):
            value = np.array(arrays[key], dtype=np.float64)
            if value.shape != (model.n_features,):
                raise ValueError(f"OnlineLogistic arrays: {key} shape {value.shape} is invalid; "
                                 f"expected ({model.n_features},)")
            setattr(model, key, value)
        model.count = int(arrays["count"])
        model.intercept = float(arrays["intercept"])
        model.g2_intercept = float(arrays["g2_intercept"])
        return model
