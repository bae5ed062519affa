"""The bulk training read (binary COPY of stored snapshot columns, array features and labels)
against the row-by-row reading it replaced, on the real PostgreSQL server (issue #13).

The reference is the previous pipeline, row by row: the store's Decision rows, the strategy's
cost fills, a RollingCost fed fill by fill, label_decision per decision and the live path's
features_from_snapshot per snapshot. Both must give the same dataset (bit for bit) and the same
counts, whatever the snapshots hold.
"""
import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from msd.learning.costs import RollingCost
from msd.learning.dataset import bulk_dataset, inputs_of_columns
from msd.learning.outcomes import label_decision
from msd.ml.features import (MISSING_NAMES, NOT_MISSING, NUMBER_PATHS, OBJECT_PATHS,
                             MissingFeature, feature_matrix, features_from_snapshot)
from msd.ml.params import TrainingParams
from msd.store.datasets import LabelWindow, load_cost_fills, load_training_rows
from msd.store.training_columns import (cost_fill_columns, decision_columns,
                                        decision_fill_counts)
from tests import learning_data

pytestmark = pytest.mark.integration

T0 = datetime(2025, 11, 20, 10, 0, 30, tzinfo=timezone.utc)
WINDOW = LabelWindow(horizon_s=900, max_bar_lag_s=120, now=T0 + timedelta(hours=3))
PARAMS = TrainingParams(horizon_s=900, max_bar_lag_s=120, round_trip_fee_pct=0.2,
                        cost_window_s=3600, cost_min_fills=3)
GOOD = {"price": 100.0, "spread": 0.01, "volatility": 0.001, "volume_24h": 5,
        "orderbook_depth": {"bid_depth": 3.0, "ask_depth": 1.0},
        "technical_indicators": {"return_1m": 0.001, "return_5m": -0.002, "return_15m": 0.003,
                                 "sma_60m": 99.5}}


def _insert(conn, snapshot, at, *, strategy="s1", side="buy", fills=(), bar=None):
    signal_id = str(uuid.uuid4())
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.signals (signal_id, strategy_id, asset, signal_type, amount,
                                                confidence, mode, body, snapshot, created_at)
                       VALUES (%s, %s, 'BTCUSDT', %s, 100, 0.5, 'warmup', '{}', %s, %s)""",
                    (signal_id, strategy, side,
                     snapshot if isinstance(snapshot, str) else json.dumps(snapshot), at))
        for n, (price, fee) in enumerate(fills):
            cur.execute("""INSERT INTO msd.executions (order_id, signal_id, strategy_id, asset,
                               side, quantity, price, fee, cumulative_quantity, executed_at, source)
                           VALUES (%s, %s, %s, 'BTCUSDT', %s, 1, %s, %s, 1, %s, 'event')""",
                        (f"o-{signal_id}-{n}", signal_id, strategy, side, price, fee,
                         at + timedelta(seconds=2 + n)))
        if bar is not None:
            minute = (at + timedelta(seconds=900 - 60)).replace(second=0, microsecond=0) \
                + timedelta(minutes=1)
            cur.execute("""INSERT INTO msd.market_bars (asset, minute, open, high, low, close,
                                                        volume, turnover, confirmed)
                           VALUES ('BTCUSDT', %s, %s, %s, %s, %s, 1, 1, true)
                           ON CONFLICT DO NOTHING""", (minute, bar, bar, bar, bar))
    return signal_id


def _bulk(conn, strategy="s1"):
    decisions = decision_columns(conn, strategy, WINDOW, NUMBER_PATHS, OBJECT_PATHS)
    counts = decision_fill_counts(conn, strategy)
    return bulk_dataset(decisions, counts, cost_fill_columns(conn, strategy), PARAMS)


def _row_by_row(conn, strategy="s1"):
    """The previous pipeline: decisions and fills as Python objects, one at a time."""
    rows = load_training_rows(conn, strategy, WINDOW)
    fills = iter(load_cost_fills(conn, strategy))
    rolling, upcoming = RollingCost(PARAMS.round_trip_fee, PARAMS.cost_window_s,
                                    PARAMS.cost_min_fills), None
    upcoming = next(fills, None)
    X, y, moves, costs, ids, missing, bad = [], [], [], [], [], Counter(), 0
    for decision in rows.decisions:
        while upcoming is not None and upcoming.executed_at < decision.decided_at:
            rolling.add(upcoming)
            upcoming = next(fills, None)
        labelled = label_decision(decision, rolling.at(decision.decided_at))
        if labelled is None:
            bad += 1
            continue
        vector = features_from_snapshot(decision.snapshot, {"decided_at": decision.decided_at})
        if isinstance(vector, MissingFeature):
            missing[vector.name] += 1
            continue
        X.append(vector), y.append(labelled.label), moves.append(labelled.move)
        costs.append(labelled.cost), ids.append(decision.signal_id.encode())
    return (np.array(X).reshape(-1, 9), np.array(y), np.array(moves), np.array(costs), ids,
            dict(missing), bad, rows.counts)


def _assert_same(bulk, reference):
    dataset, counts = bulk
    X, y, moves, costs, ids, missing, bad, ref_counts = reference
    np.testing.assert_array_equal(dataset.X, X)
    np.testing.assert_array_equal(dataset.y, y)
    np.testing.assert_array_equal(dataset.moves, moves)
    np.testing.assert_array_equal(dataset.costs, costs)
    assert dataset.signal_ids.tolist() == ids
    assert (dataset.missing, dataset.bad_prices) == (missing, bad)
    assert counts == ref_counts


def test_bulk_dataset_equals_the_row_by_row_dataset_on_a_mixed_history(db):
    """Filled and unfilled decisions, decisions without a bar (open and overdue), unusable
    prices and closes, numbers as text, odd text the database leaves to Python, and features
    missing in every way: the same dataset and counts both ways."""
    odd = [
        {**GOOD, "price": "100.5", "spread": "0.02"},                 # numeric text
        {**GOOD, "price": " 101 ", "volatility": "1_0e-3"},           # text SQL leaves to Python
        json.dumps({**GOOD, "price": "BIG"}).replace('"BIG"', "1e400"),   # beyond float64
        {**GOOD, "price": True}, {**GOOD, "price": 0}, {k: v for k, v in GOOD.items() if k != "price"},
        {**GOOD, "volatility": -1}, {**GOOD, "volatility": None}, {**GOOD, "spread": "abc"},
        {**GOOD, "orderbook_depth": [1, 2]}, {**GOOD, "orderbook_depth": {"bid_depth": 0, "ask_depth": 0}},
        {**GOOD, "technical_indicators": "n/a", "spread": -1},        # not an object wins
        {**GOOD, "technical_indicators": {**GOOD["technical_indicators"], "return_5m": "NaN"}},
        json.dumps({**GOOD, "technical_indicators": {**GOOD["technical_indicators"],
                                                     "sma_60m": "TINY"}}).replace('"TINY"', "1e-400"),
        {**GOOD, "spread": 1e-320},                                   # subnormal: Python reads it
    ]
    with db.transaction() as conn:
        at = T0
        for i in range(60):                                           # enough fills for costs
            fills = [(100.0 + 0.05 * (i % 3), 0.1)] if i % 4 else []   # every 4th never filled
            _insert(conn, {**GOOD, "spread": 0.01 * (i % 5)}, at, fills=fills,
                    side="buy" if i % 2 else "sell", bar=100.0 + (i % 7 - 3) * 0.4)
            at += timedelta(minutes=1)
        for snapshot in odd:
            _insert(conn, snapshot, at, fills=[(100.1, 0.1)], bar=99.0)
            at += timedelta(minutes=1)
        _insert(conn, GOOD, at, bar=0.0)                              # unusable close
        _insert(conn, GOOD, T0 - timedelta(hours=5))                  # no bar, overdue
        _insert(conn, GOOD, WINDOW.now - timedelta(minutes=5))        # no bar yet, open
        _insert(conn, GOOD, at, strategy="other", bar=99.0)           # another strategy
        bulk, reference = _bulk(conn), _row_by_row(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM msd.signals WHERE snap_unusual")
            reread_in_python = cur.fetchone()[0]
    _assert_same(bulk, reference)
    # text that is not plainly numeric (" 101 ", "abc", "NaN") and magnitudes beyond float8's
    # range (1e400, 1e-400, 1e-320) are read again in Python
    assert reread_in_python == 6
    dataset, counts = bulk
    assert counts.signals == 78 and counts.no_bars == 1 and counts.pending_label == 1
    assert counts.filled == 45 + len(odd) and dataset.bad_prices == 1
    assert dataset.missing and dataset.n > 40


def test_bulk_dataset_equals_the_row_by_row_dataset_on_the_benchmark_data(db):
    data = learning_data.synthetic(400, strength=2.0, seed=3)
    with db.transaction() as conn:
        learning_data.insert(conn, data)
        bulk, reference = _bulk(conn, "momentum_v1"), _row_by_row(conn, "momentum_v1")
    _assert_same(bulk, reference)
    assert bulk[0].n == 400


NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-10**20, max_value=10**20),
    st.floats(min_value=1e-6, max_value=1e6).map(repr),              # numeric text
    st.sampled_from(["1e400", "-0", " 2 ", "1_000", "Infinity", "NaN", "abc", "", "0x10", ".5",
                     "5.", "+3e-2", "1e-400"]),
    st.booleans(), st.none(), st.just([1]), st.just({"a": 1}),
)


def _maybe(draw_from):
    return st.one_of(st.just("absent"), draw_from)


@st.composite
def snapshots(draw):
    snapshot = {}
    for key in ("price", "volatility", "spread"):
        value = draw(_maybe(NUMBERS))
        if value != "absent":
            snapshot[key] = value
    for key, inner in (("orderbook_depth", ("bid_depth", "ask_depth")),
                       ("technical_indicators", ("return_1m", "return_5m", "return_15m",
                                                 "sma_60m"))):
        shape = draw(st.sampled_from(["object", "object", "object", "absent", "text", "list"]))
        if shape == "object":
            snapshot[key] = {k: v for k in inner if (v := draw(_maybe(NUMBERS))) != "absent"}
        elif shape != "absent":
            snapshot[key] = "n/a" if shape == "text" else [1, 2]
    return snapshot


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(snapshots(), min_size=1, max_size=8),
       seconds=st.integers(min_value=0, max_value=86_399), micros=st.integers(0, 999_999))
def test_bulk_features_equal_the_live_features_for_any_snapshot(db, batch, seconds, micros):
    """The stored snapshot columns and the array features give, for any snapshot, what the
    live path computes from that snapshot: the same vector (within 1e-12) or the same missing
    feature."""
    strategy = f"h-{uuid.uuid4().hex[:8]}"
    at = T0.replace(hour=0, minute=0, second=0) + timedelta(seconds=seconds, microseconds=micros)
    moments = [at + timedelta(minutes=i) for i in range(len(batch))]
    with db.transaction() as conn:
        for moment, snapshot in zip(moments, batch):
            _insert(conn, snapshot, moment, strategy=strategy)
        columns = decision_columns(conn, strategy, WINDOW, NUMBER_PATHS, OBJECT_PATHS)
        with conn.cursor() as cur:      # the snapshots as the row path reads them back
            cur.execute("SELECT snapshot FROM msd.signals WHERE strategy_id = %s"
                        " ORDER BY created_at", (strategy,))
            stored = [row[0] for row in cur.fetchall()]
    X, missing = feature_matrix(inputs_of_columns(columns["numbers"], columns["objects"],
                                                  columns["decided_us"]))
    for i, (snapshot, moment) in enumerate(zip(stored, moments)):
        live = features_from_snapshot(snapshot, {"decided_at": moment})
        if isinstance(live, MissingFeature):
            assert missing[i] != NOT_MISSING and MISSING_NAMES[missing[i]] == live.name
        else:
            assert missing[i] == NOT_MISSING
            np.testing.assert_allclose(X[i], live, rtol=1e-12, atol=1e-12)
