"""The store contract (issue 12): one fixture through PostgreSQL (PgDecisionStore, the daemon's
reads) and memory (MemoryDecisionStore, the backtest's) gives the same decisions, datasets,
outcomes, in-flight exposure and data-threshold trigger counts, at the same injected `now`."""
import json
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from msd.learning.dataset import build_dataset, label_all
from msd.learning.records import ExecutionRecord, MemoryDecisionStore, SignalRecord
from msd.ml.params import TrainingParams
from msd.store.decision_store import PgDecisionStore
from msd.store.neighbours import create_neighbour_tables
from tests import learning_data
from tests.learning_data import BAR_COLUMNS, EXECUTION_COLUMNS, SIGNAL_COLUMNS, copy_rows, synthetic

HORIZON, LAG = float(learning_data.HORIZON_S), 120.0


def fixture():
    """Two strategies; bars missing (no label), late within the lag (a later bar labels it) and
    signals with no order yet (in flight); one training attempt."""
    a = synthetic(240, strength=3.0, seed=11, strategy="alpha")
    b = synthetic(160, strength=0.0, seed=12, strategy="beta", asset="ETHUSDT")
    signals, executions, bars = a.signals + b.signals, [], []
    for i, row in enumerate(a.executions + b.executions):
        if i % 23 != 5:                        # these decisions never got an order
            executions.append(row)
    for i, row in enumerate(a.bars + b.bars):
        # three bars missing in a row: the first decision finds none within the 120 s lag (never
        # labelled), the next two are labelled by a later bar
        if i % 11 not in (3, 4, 5):
            bars.append(row)
    return signals, executions, bars


def load_memory(signals, executions, bars) -> MemoryDecisionStore:
    store = MemoryDecisionStore()
    for (signal_id, strategy, asset, side, amount, confidence, mode, _body, snapshot, created, _state) in signals:
        store.add_signal(SignalRecord(signal_id, strategy, asset, side, Decimal(amount), confidence, mode, None,
                                      datetime.fromisoformat(created), json.loads(snapshot)))
    for (order_id, signal_id, strategy, asset, side, qty, price, fee, _cum, executed, _src) in executions:
        store.add_execution(ExecutionRecord(order_id, signal_id, strategy, asset, side, Decimal(repr(qty)),
                                            Decimal(repr(price)), Decimal(repr(fee)), datetime.fromisoformat(executed)))
    for (asset, minute, _o, _h, _l, close, *_rest) in bars:
        store.add_bar(asset, datetime.fromisoformat(minute), Decimal(repr(close)))
    return store


def load_pg(db, signals, executions, bars) -> PgDecisionStore:
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        copy_rows(conn, "msd.signals", SIGNAL_COLUMNS, signals)
        copy_rows(conn, "msd.executions", EXECUTION_COLUMNS, executions)
        copy_rows(conn, "msd.market_bars", BAR_COLUMNS, bars)
        with conn.cursor() as cur:
            for row in executions:          # order-manager's order row for every executed signal
                cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                               VALUES (%s, %s, %s, 'Buy', 'Market', 0.01, 'filled')""", (row[0], row[1], row[3]))
    return PgDecisionStore(db)


def comparable(decisions):
    return [(d.signal_id, d.strategy_id, d.side, d.decided_at.timestamp(), d.amount, d.confidence, d.mode,
             d.horizon_close, d.fills, d.filled_notional, json.dumps(d.snapshot, sort_keys=True)) for d in decisions]


def test_postgresql_and_memory_stores_answer_alike(db):
    signals, executions, bars = fixture()
    memory, pg = load_memory(signals, executions, bars), load_pg(db, signals, executions, bars)
    trained_at = learning_data.START + timedelta(minutes=90)
    memory.add_training_attempt("alpha", trained_at)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.training_outcomes (strategy_id, outcome, reason, at)
                       VALUES ('alpha', 'skipped', 'contract fixture', %s)""", (trained_at,))
    params = TrainingParams.from_mapping(learning_data.params(max_bar_lag_s=LAG))
    for strategy in ("alpha", "beta"):
        mine, theirs = memory.decisions(strategy, HORIZON, LAG), pg.decisions(strategy, HORIZON, LAG)
        assert len(mine) > 100 and comparable(mine) == comparable(theirs)
        fills_m, fills_p = memory.cost_fills(strategy, None), pg.cost_fills(strategy, None)
        assert [(f.executed_at.timestamp(), f.side, f.quantity, f.price, f.fee, f.snapshot_price) for f in fills_m] == \
               [(f.executed_at.timestamp(), f.side, f.quantity, f.price, f.fee, f.snapshot_price) for f in fills_p]
        a, b = build_dataset(mine, params, fills_m), build_dataset(theirs, params, fills_p)
        assert a.n > 100
        np.testing.assert_array_equal(a.signal_ids, b.signal_ids)
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        outcomes_m, outcomes_p = label_all(mine, fills_m, params), label_all(theirs, fills_p, params)
        assert [(r.label, r.move, r.cost) for r in outcomes_m] == [(r.label, r.move, r.cost) for r in outcomes_p]
    for minutes in (30, 100, 200, 300):
        now = learning_data.START + timedelta(minutes=minutes, seconds=15)
        assert memory.labelled_counts(HORIZON, now) == pg.labelled_counts(HORIZON, now), minutes
        for asset in ("BTCUSDT", "ETHUSDT"):
            assert memory.in_flight_notional(asset, 3600, now) == pg.in_flight_notional(asset, 3600, now), minutes
    assert memory.labelled_counts(HORIZON, learning_data.START + timedelta(minutes=300))["alpha"] > 0
    assert memory.in_flight_notional("BTCUSDT", 86400, learning_data.START + timedelta(minutes=300)) != 0
