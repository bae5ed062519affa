"""Decisions -> the training set of msd.ml (X from the decision-time snapshot, y from the
outcome function, the cost each outcome was judged against). Pure: the store streams
decisions and fills in, nothing here reads a clock or a database.

A row whose features cannot be computed is left out and counted under the feature's name,
never filled with 0; one without a usable decision price or horizon close is counted as a bad
price. Every other decision is a row, whatever its outcome: there is no "no right answer" row
to drop (a move inside the cost band is the outcome *neither*).
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Iterable, Iterator

import numpy as np

from msd.learning.costs import CostFill, RollingCost
from msd.learning.outcomes import Decision, Labelled, label_decision
from msd.ml.dataset import Dataset
from msd.ml.features import MissingFeature, features_from_snapshot
from msd.ml.params import TrainingParams


class Labeller:
    """Labels decisions (in decision-time order) against costs from fills (in execution order)."""

    def __init__(self, params: TrainingParams, fills: Iterable[CostFill] = ()) -> None:
        self.rolling = RollingCost(params.round_trip_fee, params.cost_window_s,
                                   params.cost_min_fills)
        self._fills: Iterator[CostFill] = iter(fills)
        self._next = next(self._fills, None)

    def cost_at(self, moment: datetime) -> float:
        while self._next is not None and self._next.executed_at < moment:
            self.rolling.add(self._next)
            self._next = next(self._fills, None)
        return self.rolling.at(moment)

    def label(self, decision: Decision) -> Labelled | None:
        return label_decision(decision, self.cost_at(decision.decided_at))


def label_all(decisions: Iterable[Decision], fills: Iterable[CostFill],
              params: TrainingParams) -> list[Labelled]:
    """Every labelled decision (sorted by decision time first), unusable ones left out."""
    labeller = Labeller(params, fills)
    ordered = sorted(decisions, key=lambda d: (d.decided_at, d.signal_id))
    return [row for row in map(labeller.label, ordered) if row is not None]


def features_of(decision: Decision) -> np.ndarray | MissingFeature:
    return features_from_snapshot(decision.snapshot, {"decided_at": decision.decided_at})


class DatasetBuilder:
    """Accumulates decisions chunk by chunk, packing each chunk into arrays as it arrives (a
    million per-row vectors would cost more in object headers than in numbers)."""

    def __init__(self, params: TrainingParams, fills: Iterable[CostFill] = ()) -> None:
        self.labeller = Labeller(params, fills)
        self._blocks: list[tuple[np.ndarray, ...]] = []
        self._ids: list[str] = []
        self.missing: Counter[str] = Counter()
        self.bad_prices = 0

    def add(self, decisions: Iterable[Decision]) -> None:
        rows, labels, moves, costs, times = [], [], [], [], []
        for decision in decisions:
            labelled = self.labeller.label(decision)
            if labelled is None:
                self.bad_prices += 1
                continue
            vector = features_of(decision)
            if isinstance(vector, MissingFeature):
                self.missing[vector.name] += 1
                continue
            rows.append(vector)
            labels.append(labelled.label)
            moves.append(labelled.move)
            costs.append(labelled.cost)
            times.append(decision.decided_at.timestamp())
            self._ids.append(decision.signal_id)
        if rows:
            self._blocks.append((np.vstack(rows), np.asarray(labels, dtype=np.int64),
                                 np.asarray(moves), np.asarray(costs), np.asarray(times)))

    def build(self) -> Dataset:
        if not self._blocks:
            empty = Dataset.empty()
            return Dataset(empty.X, empty.y, empty.moves, empty.costs, empty.timestamps, (),
                           dict(self.missing), self.bad_prices)
        X, y, moves, costs, times = (np.concatenate(parts) for parts in zip(*self._blocks))
        # Stable sort: the split and walk-forward assume time order, and equal times keep the
        # order the store gave (signal_id), so a rebuild is byte-identical.
        order = np.argsort(times, kind="stable")
        return Dataset(X[order], y[order], moves[order], costs[order], times[order],
                       tuple(self._ids[i] for i in order), dict(self.missing), self.bad_prices)


def build_dataset(decisions: Iterable[Decision], params: TrainingParams,
                  fills: Iterable[CostFill] = ()) -> Dataset:
    """The dataset of `decisions` (decision-time order) in one call."""
    builder = DatasetBuilder(params, fills)
    builder.add(decisions)
    return builder.build()
