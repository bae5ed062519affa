"""Executed decisions -> (X, y, forward returns, decision times): the training set (DESIGN §6).

An `Outcome` is one executed signal: what was known when it was decided (its market snapshot
and time), the side it decided, the price it was executed at and the price the horizon ended
at. X comes from the snapshot alone (FR-003); the decided side and the execution price enter
only the label. Neither the executed side, slippage nor the execution price is ever a column:
the previous implementation used the executed side as both feature and label.

A row whose features cannot be computed is left out and counted under the feature's name,
never filled with 0. Pure: no clock, no I/O.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np

from msd.ml.features import FEATURE_NAMES, MissingFeature, features_from_snapshot, label_from_outcome


@dataclass(frozen=True)
class Outcome:
    """One executed signal with the prices its label is measured from.

    `entry_price` is the quantity-weighted execution price of the signal's fills; `exit_price`
    the close of the first recorded bar ending at or after decided_at + horizon.
    """
    signal_id: str
    asset: str
    side: str                       # the decided side (the signal's signal_type)
    decided_at: datetime            # aware; the signal's time
    snapshot: Mapping[str, Any]     # the signal's market_data_snapshot
    entry_price: float
    exit_price: float

    @property
    def forward_return(self) -> float:
        """Fractional market move from the execution to the end of the horizon."""
        return self.exit_price / self.entry_price - 1.0


@dataclass(frozen=True)
class Dataset:
    """Rows in decision-time order. `returns` are market forward returns (not side-signed),
    as the backtest of `msd.ml.evaluation.metrics` expects; `missing` counts excluded rows by
    the first feature that could not be computed, `bad_prices` those with a price <= 0."""
    X: np.ndarray
    y: np.ndarray
    returns: np.ndarray
    timestamps: np.ndarray          # epoch seconds of the decisions
    signal_ids: tuple[str, ...]
    missing: Mapping[str, int] = field(default_factory=dict)
    bad_prices: int = 0             # rows left out because an entry or exit price was <= 0
    inside_fee_band: int = 0        # rows left out because neither side would have paid

    @property
    def n(self) -> int:
        return len(self.y)


def side_paid(side: str, forward_return: float, round_trip_fee: float) -> bool:
    """Did `side` make money over the horizon after paying the round trip's fees?"""
    signed = forward_return if side == "buy" else -forward_return
    return signed - round_trip_fee > 0


def outcome_label(outcome: Outcome, round_trip_fee: float) -> int:
    """The market-direction label of `msd.ml.features.LABELS` for one executed decision."""
    side = outcome.side.lower()
    return label_from_outcome(side, side_paid(side, outcome.forward_return, round_trip_fee))


class DatasetBuilder:
    """Accumulates outcomes chunk by chunk, so a million rows never sit in memory as dicts.

    Each chunk is packed into arrays as it arrives: a million per-row vectors would cost more
    in object headers than in numbers.
    """

    def __init__(self, round_trip_fee: float) -> None:
        if not (isinstance(round_trip_fee, (int, float)) and 0 <= round_trip_fee < 1):
            raise ValueError(f"round_trip_fee: {round_trip_fee!r} is invalid; expected a "
                             "fraction in [0, 1)")
        self.round_trip_fee = float(round_trip_fee)
        self._blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._ids: list[str] = []
        self.missing: Counter[str] = Counter()
        self.bad_prices = 0
        self.inside_fee_band = 0

    def add(self, outcomes: Iterable[Outcome]) -> None:
        rows, labels, returns, times = [], [], [], []
        for outcome in outcomes:
            if not (outcome.entry_price > 0 and outcome.exit_price > 0):
                # One corrupt bar must not fail every future training run; it is counted.
                self.bad_prices += 1
                continue
            if abs(outcome.forward_return) <= self.round_trip_fee:
                # Neither direction would have paid after fees: there is no right answer to
                # learn. Labelling it "the other side" would teach a model to bet against
                # whatever feature the warm-up heuristic used, and pass the gate doing so.
                self.inside_fee_band += 1
                continue
            vector = features_from_snapshot(outcome.snapshot, {"decided_at": outcome.decided_at})
            if isinstance(vector, MissingFeature):
                self.missing[vector.name] += 1
                continue
            rows.append(vector)
            labels.append(outcome_label(outcome, self.round_trip_fee))
            returns.append(outcome.forward_return)
            times.append(outcome.decided_at.timestamp())
            self._ids.append(outcome.signal_id)
        if rows:
            self._blocks.append((np.vstack(rows), np.asarray(labels, dtype=np.int64),
                                 np.asarray(returns, dtype=np.float64),
                                 np.asarray(times, dtype=np.float64)))

    def build(self) -> Dataset:
        if self._blocks:
            X, y, returns, times = (np.concatenate(parts) for parts in zip(*self._blocks))
        else:
            X = np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
            y, returns, times = (np.empty(0, dtype=t) for t in (np.int64, np.float64, np.float64))
        # Stable sort: the split and walk-forward assume time order, and equal times keep the
        # order the store gave (signal_id), so a rebuild is byte-identical.
        order = np.argsort(times, kind="stable")
        return Dataset(X=X[order], y=y[order], returns=returns[order], timestamps=times[order],
                       signal_ids=tuple(self._ids[i] for i in order),
                       missing=dict(self.missing), bad_prices=self.bad_prices,
                       inside_fee_band=self.inside_fee_band)


def build_dataset(outcomes: Iterable[Outcome], round_trip_fee: float) -> Dataset:
    """The dataset of `outcomes` in one call (see DatasetBuilder for chunked building)."""
    builder = DatasetBuilder(round_trip_fee)
    builder.add(outcomes)
    return builder.build()
