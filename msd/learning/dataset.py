"""Decisions -> the training set of msd.ml (X from the decision-time snapshot, y from the
outcome function, the cost each outcome was judged against). Pure: the store hands columns
(or decisions and fills) in, nothing here reads a clock or a database.

One path, whatever the source: decisions become columns (decision time, horizon close, the
snapshot numbers the features read), fills become columns, and `dataset_of` labels and
featurises them with array code. The bulk training read (msd.store.training_columns) yields
such columns straight from SQL; a list of `Decision`s (the live learning loop, tests) is turned
into the same columns by msd.ml.features.snapshot_inputs, the parser of the live path.

A row whose features cannot be computed is left out and counted under the feature's name,
never filled with 0; one without a usable decision price or horizon close is counted as a bad
price. Every other decision is a row, whatever its outcome: there is no "no right answer" row
to drop (a move inside the cost band is the outcome *neither*).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, Mapping

import numpy as np

from msd.learning.costs import CostFill, one_way_costs, rolling_costs
from msd.learning.outcomes import Decision, Labelled, market_moves, outcome_labels
from msd.ml.dataset import Dataset
from msd.ml.features import (MISSING_NAMES, N_INPUTS, NOT_MISSING, PRICE, MissingFeature,
                             feature_matrix, features_from_snapshot, seconds_of_day,
                             snapshot_inputs)
from msd.ml.params import TrainingParams
from msd.values.parsing import epoch_microseconds
from msd.values.records import RowCounts

Columns = Mapping[str, np.ndarray]
Progress = Callable[[], None]


def inputs_of_columns(numbers: list[np.ndarray], objects: list[np.ndarray],
                      decided_us: np.ndarray) -> list[np.ndarray]:
    """The N_INPUTS feature input columns of bulk columns: snapshot numbers in NUMBER_PATHS
    order, object flags in OBJECT_PATHS order, decision times in epoch microseconds."""
    return [*numbers, *(flag.astype(np.float64) for flag in objects), seconds_of_day(decided_us)]


def columns_of_decisions(decisions: Iterable[Decision]) -> dict[str, np.ndarray]:
    """A list of decisions as the columns `dataset_of` reads (snapshots parsed one by one)."""
    rows = list(decisions)
    closes = [np.nan if d.horizon_close is None else float(d.horizon_close) for d in rows]
    return {"signal_id": np.array([d.signal_id.encode() for d in rows], dtype=np.bytes_),
            "decided_us": np.array([epoch_microseconds(d.decided_at) for d in rows],
                                   dtype=np.int64),
            "horizon_close": np.array(closes, dtype=np.float64),
            "inputs": list((np.array([snapshot_inputs(d.snapshot, d.decided_at) for d in rows])
                            if rows else np.empty((0, N_INPUTS))).T)}


def columns_of_fills(fills: Iterable[CostFill]) -> dict[str, np.ndarray]:
    """Cost fills (execution order) as the columns `dataset_of` reads."""
    rows = list(fills)
    number = lambda name: np.array([float(getattr(f, name)) for f in rows], dtype=np.float64)
    return {"executed_us": np.array([epoch_microseconds(f.executed_at) for f in rows],
                                    dtype=np.int64),
            "buy": np.array([f.side == "buy" for f in rows], dtype=bool),
            **{name: number(name) for name in ("quantity", "price", "fee", "snapshot_price")}}


def row_counts(fill_counts: tuple[int, int], price: np.ndarray,
               horizon_close_recorded: np.ndarray, is_open: np.ndarray) -> RowCounts:
    """Recorded decisions by labelling state (see RowCounts), from bulk columns and the
    decisions' (fills, decisions with a fill)."""
    price_ok = price > 0
    waiting = price_ok & ~horizon_close_recorded
    return RowCounts(executions=fill_counts[0], signals=len(price),
                     labelled=int(np.count_nonzero(price_ok & horizon_close_recorded)),
                     pending_label=int(np.count_nonzero(waiting & is_open)),
                     no_price=int(np.count_nonzero(~price_ok)),
                     no_bars=int(np.count_nonzero(waiting & ~is_open)),
                     filled=fill_counts[1])


def costs_at(decided_us: np.ndarray, fills: Columns, params: TrainingParams,
             progress: Progress = lambda: None) -> np.ndarray:
    """The round-trip cost each decision (decision-time order) is judged against."""
    one_way = one_way_costs(fills["buy"], fills["quantity"], fills["price"], fills["fee"],
                            fills["snapshot_price"])
    return rolling_costs(decided_us, fills["executed_us"], one_way, params.round_trip_fee,
                         params.cost_window_s, params.cost_min_fills, progress)


def dataset_of(decisions: Columns, fills: Columns, params: TrainingParams,
               progress: Progress = lambda: None) -> Dataset:
    """The dataset of decisions given as columns `signal_id`, `decided_us`, `horizon_close`
    (NaN: none) and `inputs` (the N_INPUTS feature input columns), with the strategy's fills
    as cost columns."""
    decided_us = decisions["decided_us"]
    # the split assumes time order; the store sorts already, so usually nothing moves
    ordered = bool(np.all(decided_us[1:] >= decided_us[:-1]))
    order = slice(None) if ordered else np.argsort(decided_us, kind="stable")
    decided_us, inputs = decided_us[order], [column[order] for column in decisions["inputs"]]
    usable, moves = market_moves(inputs[PRICE], decisions["horizon_close"][order])
    costs = costs_at(decided_us, fills, params, progress)
    X, missing = feature_matrix(inputs)
    del inputs
    names = np.asarray(MISSING_NAMES)[missing[usable & (missing != NOT_MISSING)]]
    kept = usable & (missing == NOT_MISSING)
    keep = (lambda a: a) if kept.all() else (lambda a: a[kept])
    return Dataset(keep(X), outcome_labels(keep(moves), keep(costs)), keep(moves), keep(costs),
                   keep(decided_us) / 1e6, keep(decisions["signal_id"][order]),
                   dict(Counter(names.tolist())), int(np.count_nonzero(~usable)))


def bulk_dataset(decisions: dict[str, np.ndarray], fill_counts: tuple[int, int],
                 fills: Columns, params: TrainingParams,
                 progress: Progress = lambda: None) -> tuple[Dataset, RowCounts]:
    """The dataset and row counts of the store's bulk columns (msd.store.training_columns);
    `decisions` is consumed (its big arrays are released as soon as they are used)."""
    price = decisions["numbers"][PRICE]
    counts = row_counts(fill_counts, price, decisions["close_recorded"], decisions["open"])
    ready = (price > 0) & decisions["close_recorded"]
    del price
    pick = (lambda column: column) if ready.all() else (lambda column: column[ready])
    inputs = inputs_of_columns([pick(c) for c in decisions.pop("numbers")],
                               [pick(c) for c in decisions.pop("objects")],
                               pick(decisions["decided_us"]))
    columns = {"signal_id": pick(decisions.pop("signal_id")), "inputs": inputs,
               "decided_us": pick(decisions["decided_us"]),
               "horizon_close": pick(decisions["horizon_close"])}
    del inputs
    return dataset_of(columns, fills, params, progress), counts


def build_dataset(decisions: Iterable[Decision], params: TrainingParams,
                  fills: Iterable[CostFill] = ()) -> Dataset:
    """The dataset of `decisions` (decision-time order) in one call."""
    return dataset_of(columns_of_decisions(decisions), columns_of_fills(fills), params)


def label_all(decisions: Iterable[Decision], fills: Iterable[CostFill],
              params: TrainingParams) -> list[Labelled]:
    """Every labelled decision (sorted by decision time first), unusable ones left out."""
    ordered = sorted(decisions, key=lambda d: (d.decided_at, d.signal_id))
    columns = columns_of_decisions(ordered)
    usable, moves = market_moves(columns["inputs"][PRICE], columns["horizon_close"])
    costs = costs_at(columns["decided_us"], columns_of_fills(fills), params)
    labels = outcome_labels(np.nan_to_num(moves), costs)
    return [Labelled(d, float(moves[i]), float(costs[i]), int(labels[i]))
            for i, d in enumerate(ordered) if usable[i]]


def features_of(decision: Decision) -> np.ndarray | MissingFeature:
    return features_from_snapshot(decision.snapshot, {"decided_at": decision.decided_at})
