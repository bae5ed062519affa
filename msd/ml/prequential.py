"""Prequential (test-then-train) records: what each contender predicted for a decision before
its outcome was learned, kept with the outcome, the move and the cost (DESIGN §6).

The online challenger and the incumbent are scored on the very same rows of such a record, so
their figures are comparable and honest: every row was predicted by a model that had not yet
learned it. A rolling window keeps the newest `window` rows. Pure state: no clock, no I/O.
"""
from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence

import numpy as np

from msd.ml.features import N_CLASSES


class PrequentialRecord:
    def __init__(self, window: int, contenders: Sequence[str]) -> None:
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
            raise ValueError(f"window: {window!r} is invalid; expected an int >= 1")
        self.window, self.contenders = window, tuple(contenders)
        self._rows: deque[tuple] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, label: int, move: float, cost: float, decided_at: float, x: Sequence[float],
            proba: Mapping[str, Sequence[float]]) -> None:
        """One scored row: the decision's features `x` and `proba[name]`, contender `name`'s
        (3,) prediction for it."""
        if set(proba) != set(self.contenders):
            raise ValueError(f"proba: contenders {sorted(proba)} are invalid; expected "
                             f"{sorted(self.contenders)}")
        stacked = np.vstack([np.asarray(proba[name], dtype=np.float64)
                             for name in self.contenders])
        if stacked.shape != (len(self.contenders), N_CLASSES) or not np.isfinite(stacked).all():
            raise ValueError(f"proba: shape {stacked.shape} is invalid; expected "
                             f"({len(self.contenders)}, {N_CLASSES}) finite probabilities")
        if int(label) not in range(N_CLASSES):
            raise ValueError(f"label: {label!r} is invalid; expected 0..{N_CLASSES - 1}")
        features = np.asarray(x, dtype=np.float64).ravel()
        if self._rows and features.shape != self._rows[0][4].shape:
            raise ValueError(f"x: shape {features.shape} is invalid; expected "
                             f"{self._rows[0][4].shape}")
        self._rows.append((int(label), float(move), float(cost), float(decided_at), features,
                           stacked))

    def arrays(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Rows start..stop as arrays: y, moves, costs, decided_at, X and one proba per
        contender."""
        rows = list(self._rows)[start:stop]
        if not rows:
            empty = {name: np.empty((0, N_CLASSES)) for name in self.contenders}
            return {"y": np.empty(0, dtype=np.int64), "moves": np.empty(0),
                    "costs": np.empty(0), "decided_at": np.empty(0), "X": np.empty((0, 0)),
                    **empty}
        y, moves, costs, stamps, features, proba = zip(*rows)
        stacked = np.stack(proba)
        result = {"y": np.asarray(y, dtype=np.int64), "moves": np.asarray(moves),
                  "costs": np.asarray(costs), "decided_at": np.asarray(stamps),
                  "X": np.vstack(features)}
        result.update({name: stacked[:, i] for i, name in enumerate(self.contenders)})
        return result

    def to_arrays(self) -> dict[str, np.ndarray]:
        data = self.arrays()
        return {"record." + key: value for key, value in data.items()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Refill from `to_arrays` output (oldest first); foreign shapes raise ValueError."""
        y = np.asarray(arrays["record.y"])
        for i in range(len(y)):
            self.add(int(y[i]), float(arrays["record.moves"][i]), float(arrays["record.costs"][i]),
                     float(arrays["record.decided_at"][i]), arrays["record.X"][i],
                     {name: arrays[f"record.{name}"][i] for name in self.contenders})
