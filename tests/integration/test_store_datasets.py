"""Training rows, labels from recorded bars, dataset sizes and `orders` reconciliation."""
import json
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.store.datasets import (LabelWindow, dataset_sizes, load_cost_fills,
                                load_training_rows, reconcile_executions)
from msd.store.executions import count_executions, executions_of_order
from msd.store.neighbours import create_neighbour_tables

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2025, 11, 20, 10, 0, 30, tzinfo=timezone.utc)   # decisions mid-minute
WINDOW = LabelWindow(horizon_s=900, max_bar_lag_s=120, now=T0 + timedelta(days=1))
SNAPSHOT = {"price": 100.0, "spread": 0.01, "volatility": 0.001,
            "orderbook_depth": {"bid_depth": 1.0, "ask_depth": 1.0},
            "technical_indicators": {"return_1m": 0.0, "return_5m": 0.0, "return_15m": 0.0,
                                     "sma_60m": 100.0}}


def add_signal(conn, side="buy", at=T0, strategy="momentum_v1", asset="BTCUSDT") -> str:
    signal_id = str(uuid.uuid4())
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.signals (signal_id, strategy_id, asset, signal_type, amount,
                                                confidence, mode, body, snapshot, created_at)
                       VALUES (%s, %s, %s, %s, 100, 0.5, 'warmup', '{}', %s, %s)""",
                    (signal_id, strategy, asset, side, json.dumps(SNAPSHOT), at))
    return signal_id


def add_fill(conn, signal_id, *, side="buy", quantity="0.01", price="100", cumulative=None,
             order_id=None, at=T0, strategy="momentum_v1", asset="BTCUSDT"):
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.executions (order_id, signal_id, strategy_id, asset, side,
                                                   quantity, price, fee, cumulative_quantity,
                                                   executed_at, source)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, 0.001, %s, %s, 'event')""",
                    (order_id or f"o-{signal_id}", signal_id, strategy, asset, side, D(quantity),
                     None if price is None else D(price), D(cumulative or quantity), at))


def add_bar(conn, minute, close, confirmed=True, asset="BTCUSDT"):
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.market_bars (asset, minute, open, high, low, close,
                                                    volume, turnover, confirmed)
                       VALUES (%s, %s, %s, %s, %s, %s, 1, 1, %s)""",
                    (asset, minute, close, close, close, close, confirmed))


def add_snapshot_signal(conn, snapshot, **kwargs) -> str:
    signal_id = add_signal(conn, **kwargs)
    with conn.cursor() as cur:
        cur.execute("UPDATE msd.signals SET snapshot = %s WHERE signal_id = %s",
                    (json.dumps(snapshot), signal_id))
    return signal_id


def test_horizon_close_is_the_first_bar_closing_at_or_after_the_horizon(db):
    with db.transaction() as conn:
        signal_id = add_signal(conn)
        add_fill(conn, signal_id, price="100.5", at=T0 + timedelta(seconds=3))
        # horizon ends 10:15:30: the 10:14 bar closes too early, 10:15 closes at 10:16
        add_bar(conn, datetime(2025, 11, 20, 10, 14, tzinfo=timezone.utc), 90)
        add_bar(conn, datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc), 101, confirmed=False)
        add_bar(conn, datetime(2025, 11, 20, 10, 16, tzinfo=timezone.utc), 102)
        rows = load_training_rows(conn, "momentum_v1", WINDOW)

    [decision] = rows.decisions
    # the unconfirmed 10:15 bar is not final, so the next confirmed one (within the lag) counts
    assert decision.horizon_close == 102.0 and decision.price == 100.0   # the snapshot's price
    assert decision.signal_id == signal_id and decision.decided_at == T0
    assert decision.snapshot == SNAPSHOT and (decision.amount, decision.mode) == (100.0, "warmup")


def test_partial_fills_make_one_decision(db):
    with db.transaction() as conn:
        signal_id = add_signal(conn)
        add_fill(conn, signal_id, quantity="1", price="100", cumulative="1", order_id="o1")
        add_fill(conn, signal_id, quantity="3", price="104", cumulative="4", order_id="o1")
        add_bar(conn, datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc), 110)
        rows = load_training_rows(conn, "momentum_v1", WINDOW)
        fills = load_cost_fills(conn, "momentum_v1")

    [decision] = rows.decisions
    assert (rows.counts.executions, rows.counts.signals, rows.counts.labelled) == (2, 1, 1)
    # both fills feed the cost estimate, each against the decision price of its signal
    assert [(f.price, f.snapshot_price, f.side) for f in fills] == [(100.0, 100.0, "buy"), (104.0, 100.0, "buy")]


def test_decided_side_comes_from_the_signal_not_the_execution(db):
    # The executed side is never used to label: order-manager may report the fill of an exit
    # under the other side, and the decision is what the model is judged on.
    with db.transaction() as conn:
        signal_id = add_signal(conn, side="sell")
        add_fill(conn, signal_id, side="buy")
        add_bar(conn, datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc), 99)
        [decision] = load_training_rows(conn, "momentum_v1", WINDOW).decisions
    assert decision.side == "sell"


def test_unlabelled_rows_are_counted_by_reason_not_trained_on(db):
    with db.transaction() as conn:
        labelled = add_signal(conn)
        add_fill(conn, labelled)
        add_bar(conn, datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc), 101)
        recent = add_signal(conn, at=WINDOW.now - timedelta(minutes=5))
        add_fill(conn, recent, at=WINDOW.now - timedelta(minutes=5))
        gap = add_signal(conn, at=T0 + timedelta(hours=2))          # no bar was ever recorded
        add_fill(conn, gap, at=T0 + timedelta(hours=2))
        unpriced = add_snapshot_signal(conn, {**SNAPSHOT, "price": None}, at=T0 + timedelta(hours=3))
        add_fill(conn, unpriced, at=T0 + timedelta(hours=3))
        add_signal(conn, at=T0 + timedelta(hours=4))                 # never executed, no bar either
        other = add_signal(conn, strategy="other")
        add_fill(conn, other, strategy="other")
        rows = load_training_rows(conn, "momentum_v1", WINDOW)
        sizes = dataset_sizes(conn, WINDOW)

    assert [d.signal_id for d in rows.decisions] == [labelled]
    # the never-executed decision is a decision too (review finding 3): only its bar is missing
    expected = {"executions": 4, "signals": 5, "labelled": 1, "pending_label": 1,
                "no_price": 1, "no_bars": 2, "filled": 4, "fill_rate": 0.8}
    assert rows.counts.as_dict() == expected
    assert sizes == {"momentum_v1": expected,
                     "other": {"executions": 1, "signals": 1, "labelled": 1, "pending_label": 0,
                               "no_price": 0, "no_bars": 0, "filled": 1, "fill_rate": 1.0}}


def insert_order(conn, signal_id, order_id, *, status="filled", filled="0.01", price="95000",
                 updated_at=datetime(2025, 11, 20, 10, 16), side="Buy"):
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity,
                                           price, status, filled_quantity, average_price, fees,
                                           updated_at, executed_at)
                       VALUES (%s, %s, 'BTCUSDT', %s, 'Limit', 0.01, %s, %s, %s, %s, 0.095,
                               %s, %s)""",
                    (order_id, signal_id, side, D(price), status, D(filled), D(price), updated_at,
                     updated_at))


def test_reconcile_records_fills_the_event_stream_missed_exactly_once(db):
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        ours = add_signal(conn)
        theirs = str(uuid.uuid4())                 # an order of a signal msd never made
        insert_order(conn, ours, "ord-1")
        insert_order(conn, ours, "ord-2", status="cancelled", filled="0")
        insert_order(conn, theirs, "ord-3")

    with db.transaction() as conn:
        first = reconcile_executions(conn)
    with db.transaction() as conn:
        again = reconcile_executions(conn)
        [execution] = executions_of_order(conn, "ord-1")

    assert (first, again) == (1, 0)
    assert (execution.source, execution.side, execution.quantity, execution.strategy_id) == (
        "reconcile", "buy", D("0.01"), "momentum_v1")
    assert execution.executed_at == datetime(2025, 11, 20, 10, 16, tzinfo=timezone.utc)
    with db.transaction() as conn:
        assert count_executions(conn) == 1


def test_reconcile_picks_up_an_order_that_grew_after_the_watermark(db):
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        signal_id = add_signal(conn)
        insert_order(conn, signal_id, "ord-1", status="partially_filled", filled="0.004")
        reconcile_executions(conn)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""UPDATE orders SET status = 'filled', filled_quantity = 0.01,
                              updated_at = '2025-11-20 10:20' WHERE order_id = 'ord-1'""")
        recorded = reconcile_executions(conn)
        fills = executions_of_order(conn, "ord-1")

    assert recorded == 1
    assert [f.quantity for f in fills] == [D("0.004"), D("0.006")]


def test_reconcile_without_an_orders_table_records_nothing(db):
    with db.transaction() as conn:
        assert reconcile_executions(conn) == 0


def test_expired_signals_are_not_counted_as_decisions(db):
    """A warm-up or model signal that expired in the outbox (#10) never reached order-manager:
    counting it as a decision made the fill rate and the training set include calls never placed."""
    with db.transaction() as conn:
        sent = add_signal(conn)
        add_fill(conn, sent)
        expired = add_signal(conn, at=T0 + timedelta(seconds=5))
        conn.cursor().execute("UPDATE msd.signals SET outbox_state = 'expired', expired_at = %s "
                              "WHERE signal_id = %s", (T0 + timedelta(seconds=70), expired))
        add_bar(conn, datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc), 101)
        rows = load_training_rows(conn, "momentum_v1", WINDOW)
        sizes = dataset_sizes(conn, WINDOW)

    assert [d.signal_id for d in rows.decisions] == [sent]
    assert sizes["momentum_v1"]["signals"] == 1 and sizes["momentum_v1"]["fill_rate"] == 1.0
