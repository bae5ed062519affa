"""Seeded synthetic datasets in the FEATURE_NAMES layout, for tests and benchmarks.

The forward return is `strength * s + drift + noise` (in units of the horizon's return std),
where `s` is a fixed mix of standardised features; the label is whether it was positive. So
`strength = 0` is pure noise (nothing beats a coin beyond the base rate), `drift` shifts the
base rate (imbalanced labels), and the best possible directional accuracy rises with strength
(about 0.5 + arctan(strength) / pi when drift is 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msd.ml.features import FEATURE_NAMES

# Which features carry the signal and how much: a momentum term, book pressure and a
# mean-reversion term, the kinds of effects the real features are meant to capture.
_SIGNAL_WEIGHTS = {"return_5m": 0.6, "book_imbalance": 0.6, "ma_deviation_z": -0.5}


@dataclass(frozen=True)
class SyntheticData:
    X: np.ndarray            # (n, len(FEATURE_NAMES))
    y: np.ndarray            # int64 labels, 1 = price went up over the horizon
    returns: np.ndarray      # forward fractional returns over the horizon
    timestamps: np.ndarray   # epoch seconds, increasing


def make_dataset(n: int, *, strength: float = 2.0, drift: float = 0.0, seed: int = 0,
                 start: float = 1.7e9, step: float = 60.0) -> SyntheticData:
    """`n` decisions `step` seconds apart with features, labels and forward returns."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n: {n!r} is invalid; expected an int >= 1")
    rng = np.random.default_rng(seed)
    timestamps = start + step * np.arange(n, dtype=np.float64)
    volatility = np.exp(rng.normal(np.log(1e-3), 0.3, n))
    columns = {
        "spread_pct": np.exp(rng.normal(np.log(0.01), 0.5, n)),
        "log_volatility": np.log(volatility),
        "book_imbalance": np.tanh(rng.normal(0.0, 0.6, n)),
        "return_1m": rng.normal(0.0, 1.0, n) * volatility,
        "return_5m": rng.normal(0.0, 1.0, n) * volatility * np.sqrt(5),
        "return_15m": rng.normal(0.0, 1.0, n) * volatility * np.sqrt(15),
        "ma_deviation_z": rng.normal(0.0, 1.0, n),
    }
    angle = 2 * np.pi * (timestamps % 86400.0) / 86400.0
    columns["hour_sin"], columns["hour_cos"] = np.sin(angle), np.cos(angle)
    X = np.column_stack([columns[name] for name in FEATURE_NAMES])
    score = sum(weight * _standardised(columns[name])
                for name, weight in _SIGNAL_WEIGHTS.items())
    score = score / np.std(score)
    horizon_std = volatility * np.sqrt(15)
    standard_move = strength * score + drift + rng.normal(0.0, 1.0, n)
    returns = standard_move * horizon_std
    return SyntheticData(X=X, y=(returns > 0).astype(np.int64), returns=returns,
                   timestamps=timestamps)


def _standardised(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()
