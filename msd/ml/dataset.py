"""The training set as arrays (DESIGN §6): what the numeric core fits and scores.

Assembled from decisions by `msd.learning.dataset`; here only the container. Rows are in
decision-time order. `y` holds outcome classes (sell pays, buy pays, neither), `moves` the
fractional market move from each decision's price to the horizon close, `costs` the round-trip
cost the outcome was judged against. The decided side is not here: it is neither a feature nor
part of the label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from msd.ml.features import FEATURE_NAMES


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray
    y: np.ndarray
    moves: np.ndarray
    costs: np.ndarray
    timestamps: np.ndarray          # epoch seconds of the decisions
    # the decisions' signal ids as ASCII bytes (a million Python strings would cost ~100 MB)
    signal_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.bytes_))
    missing: Mapping[str, int] = field(default_factory=dict)   # rows left out, by feature
    bad_prices: int = 0             # rows left out: no usable decision price or horizon close

    @property
    def n(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls) -> "Dataset":
        return cls(np.empty((0, len(FEATURE_NAMES))), np.empty(0, dtype=np.int64),
                   np.empty(0), np.empty(0), np.empty(0))

    def rows(self, idx: np.ndarray) -> "Dataset":
        """The rows `idx` (in the given order) as a dataset of their own."""
        ids = self.signal_ids[idx] if len(self.signal_ids) else self.signal_ids
        return Dataset(self.X[idx], self.y[idx], self.moves[idx], self.costs[idx],
                       self.timestamps[idx], ids)
