"""record_order_events against the real server, with the CONTRACTS.md §2.5 example events."""
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from msd.values.messages import OrderEvent, OrderSnapshot
from msd.store.db import Database
from msd.store.executions import (count_executions, count_order_events, executions_of_order,
                                  record_order_events)

pytestmark = pytest.mark.integration

D = Decimal


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def snapshot(**fields) -> OrderSnapshot:
    """The §2.5 partially_filled Limit buy; keyword arguments override its fields."""
    base = dict(
        id="6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", order_id="1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80",
        signal_id="b028389f-2f98-489a-a4a7-a9c20e69f568", asset="BTCUSDT", side="buy",
        order_type="Limit", quantity=D("0.01000000"), price=D("94900.00000000"),
        status="partially_filled", filled_quantity=D("0.00400000"),
        average_price=D("94900.00000000"), fees=None, created_at=utc("2025-11-20T10:15:30.123456"),
        updated_at=utc("2025-11-20T10:15:31.002345"), executed_at=None, is_dry_run=False)
    base.update(fields)
    return OrderSnapshot(**base)


def event(event_type: str, order: OrderSnapshot, *, at: str, trace_id: str = "t-77",
          **fields) -> OrderEvent:
    return OrderEvent(event_id=str(uuid.uuid4()), event_type=event_type, timestamp=utc(at),
                      trace_id=trace_id, order=order, **fields)


PARTIAL = event("partially_filled", snapshot(), at="2025-11-20T10:15:32.000100")
# The same order, filled: cumulative 0.01 at average 94870 means the next 0.006 went at 94850.
FILLED = event("filled", snapshot(status="filled", filled_quantity=D("0.01000000"),
                                  average_price=D("94870.00000000"), fees=D("0.52177000"),
                                  executed_at=utc("2025-11-20T10:15:40.001000")),
               at="2025-11-20T10:15:40.422890")
REJECTED = event(
    "rejected",
    snapshot(order_id="REJECTED-b028389f-2f98-489a-a4a7-a9c20e69f568", side="sell",
             order_type="Market", quantity=D("0.00105200"), price=None, status="rejected",
             filled_quantity=D("0E-8"), average_price=None),
    at="2025-11-20T10:15:31.423038", trace_id="a1b2c3",
    rejection_reason="Risk limit exceeded: Position size would exceed limit",
    market_price=D("95000.5"), strategy_id="momentum_v1")
CANCELLED = event(
    "cancelled",
    snapshot(id="0a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
             order_id="5f0d3c2b-1a09-4e8f-b7d6-c5b4a3928170",
             signal_id="7e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6", asset="ETHUSDT",
             quantity=D("0.05000000"), price=D("3050.00000000"), status="cancelled",
             filled_quantity=D("0.02000000"), average_price=D("3050.00000000"),
             fees=D("0.01098000"), updated_at=utc("2025-11-20T11:00:30.250000")),
    at="2025-11-20T11:00:30.260000", trace_id="c0ffee")


def record(db: Database, events):
    with db.transaction() as conn:
        return record_order_events(conn, events)


def executions(db: Database, order_id: str):
    with db.transaction() as conn:
        return executions_of_order(conn, order_id)


def test_partial_then_fill_gives_two_executions_with_the_deltas(db):
    result = record(db, [PARTIAL, FILLED])

    assert (result.events_recorded, result.duplicates) == (2, 0)
    rows = executions(db, PARTIAL.order.order_id)
    assert [(r.quantity, r.price, r.fee) for r in rows] == [
        (D("0.004"), D("94900"), D("0")), (D("0.006"), D("94850"), D("0.52177"))]
    assert [r.cumulative_quantity for r in rows] == [D("0.004"), D("0.01")]
    assert [r.executed_at for r in rows] == [PARTIAL.timestamp, FILLED.order.executed_at]
    assert all(r.source == "event" and r.side == "buy" and r.asset == "BTCUSDT" for r in rows)
    assert list(result.executions) == rows


def test_recording_the_same_batch_twice_creates_nothing_new(db):
    record(db, [PARTIAL, FILLED, CANCELLED, REJECTED])

    again = record(db, [PARTIAL, FILLED, CANCELLED, REJECTED])

    assert (again.events_recorded, again.duplicates, again.executions) == (0, 4, ())
    with db.transaction() as conn:
        assert count_order_events(conn) == 4
        assert count_executions(conn) == 3


def test_republished_event_with_a_new_event_id_is_a_duplicate(db):
    record(db, [PARTIAL])

    result = record(db, [replace(PARTIAL, event_id=str(uuid.uuid4()))])

    assert (result.events_recorded, result.duplicates) == (0, 1)


def test_late_partial_after_the_fill_adds_no_execution(db):
    first = record(db, [FILLED])
    late = record(db, [PARTIAL])

    assert [e.quantity for e in first.executions] == [D("0.01")]
    assert first.executions[0].price == D("94870")
    assert (late.events_recorded, late.executions) == (1, ())
    with db.transaction() as conn:
        assert count_executions(conn, order_id=PARTIAL.order.order_id) == 1


def test_cancelled_with_fills_counts_as_an_execution(db):
    result = record(db, [CANCELLED])

    [execution] = result.executions
    assert (execution.quantity, execution.price, execution.fee) == (
        D("0.02"), D("3050"), D("0.01098"))
    assert execution.executed_at == CANCELLED.timestamp
    assert execution.trace_id == "c0ffee"


def test_rejected_event_is_recorded_without_execution(db):
    result = record(db, [REJECTED])

    assert (result.events_recorded, result.executions) == (1, ())
    with db.transaction() as conn:
        assert count_executions(conn, signal_id=REJECTED.order.signal_id) == 0
        assert count_order_events(conn, order_id=REJECTED.order.order_id) == 1


def test_decimals_are_stored_exactly(db):
    long_fee = D("0.5319391488848105256103006884")
    order = snapshot(order_id="precise", status="filled", filled_quantity=D("0.00400000"),
                     fees=long_fee)
    record(db, [REJECTED, event("filled", order, at="2025-11-20T10:16:00")])

    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT filled_quantity, payload->'order'->>'filled_quantity'"
                    " FROM msd.order_events WHERE order_id = %s", (REJECTED.order.order_id,))
        assert cur.fetchone() == (D("0E-8"), "0E-8")
    [execution] = executions(db, "precise")
    assert str(execution.fee) == "0.5319391488848105256103006884"
    assert str(execution.quantity) == "0.00400000"


def test_strategy_comes_from_the_recorded_signal(db):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.signals (signal_id, strategy_id, asset, signal_type, amount,
                                        confidence, mode, body, snapshot, created_at)
               VALUES (%s, 'momentum_v1', 'BTCUSDT', 'buy', 100, 0.7, 'model', '{}', '{}', %s)""",
            (PARTIAL.order.signal_id, PARTIAL.order.created_at))

    [execution] = record(db, [PARTIAL]).executions

    assert execution.strategy_id == "momentum_v1"


def test_reconciled_order_rows_fill_what_the_stream_missed_once(db):
    record(db, [PARTIAL])
    # The filled event went to a competing consumer; the shared orders table still shows it.
    reconciled = record(db, [FILLED.order])
    reconciled_again = record(db, [FILLED.order])
    late_event = record(db, [FILLED])

    [execution] = reconciled.executions
    assert (execution.source, execution.quantity, execution.price) == (
        "reconcile", D("0.006"), D("94850"))
    assert execution.executed_at == FILLED.order.executed_at
    assert reconciled.events_recorded == 0
    assert reconciled_again.executions == ()
    assert (late_event.events_recorded, late_event.executions) == (1, ())
    with db.transaction() as conn:
        assert count_executions(conn, order_id=PARTIAL.order.order_id, source="event") == 1
        assert count_executions(conn, order_id=PARTIAL.order.order_id, source="reconcile") == 1


def test_a_null_cumulative_fee_is_not_read_as_a_refund(db):
    """Regression: fees 0.05 recorded, then an observation with fees null (order-manager's
    'zero or unknown') booked a -0.05 fee and forgot the 0.05 already paid."""
    first = event("partially_filled", snapshot(fees=D("0.05")), at="2025-11-20T10:15:32")
    later = event("partially_filled", snapshot(filled_quantity=D("0.00800000"), fees=None,
                                               status="partially_filled", order_type="Market"),
                  at="2025-11-20T10:15:33")
    with db.transaction() as conn:
        record_order_events(conn, [first])
        record_order_events(conn, [replace(later, event_id=str(uuid.uuid4()))])
        fees = [e.fee for e in executions_of_order(conn, first.order.order_id)]
    assert fees == [D("0.05"), D(0)]
