"""Dead letters, market bars and training runs against the real server."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.values.messages import Kline, OrderEvent, OrderSnapshot
from msd.store.db import Database
from msd.store.deadletters import count_dead_letters, record_dead_letter
from msd.store.executions import record_order_events
from msd.store.market import upsert_bars
from msd.store.training import execution_summary, finish_run, get_run, start_run

pytestmark = pytest.mark.integration

D = Decimal
MINUTE = datetime(2025, 11, 20, 10, 15, tzinfo=timezone.utc)


def kline(close: str, *, confirmed: bool, start: datetime = MINUTE,
          asset: str = "BTCUSDT") -> Kline:
    return Kline(asset=asset, start=start, open=D("94998.00"), high=D("95020.00"),
                 low=D("94990.50"), close=D(close), volume=D("12.345"),
                 turnover=D("1172839.12"), confirmed=confirmed,
                 timestamp=start + timedelta(seconds=31))


def bars(db: Database) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT asset, minute, close, confirmed FROM msd.market_bars"
                    " ORDER BY asset, minute")
        return cur.fetchall()


def test_dead_letter_keeps_bytes_and_headers(db):
    payload = b'{"event_type": "filled", \xff\x00 not json'
    with db.transaction() as conn:
        letter_id = record_dead_letter(conn, "order-manager.order_events", "invalid_json",
                                       "Expecting value: line 1 column 28", payload,
                                       {"trace_id": b"a1b2c3", "attempt": 2}, "a1b2c3")

    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT source, reason, payload, headers, trace_id FROM msd.dead_letters"
                    " WHERE id = %s", (letter_id,))
        source, reason, stored, headers, trace_id = cur.fetchone()
        assert count_dead_letters(conn, source="order-manager.order_events") == 1
        assert count_dead_letters(conn, source="ws-gateway.kline") == 0
    assert (source, reason, trace_id) == ("order-manager.order_events", "invalid_json", "a1b2c3")
    assert bytes(stored) == payload
    assert headers == {"trace_id": "a1b2c3", "attempt": 2}


def test_bar_updates_of_a_minute_keep_the_latest(db):
    with db.transaction() as conn:
        upsert_bars(conn, [kline("95001", confirmed=False), kline("95002", confirmed=False)])
    with db.transaction() as conn:
        written = upsert_bars(conn, [kline("95010.20", confirmed=True),
                                     kline("95100", confirmed=False,
                                           start=MINUTE + timedelta(minutes=1)),
                                     kline("3050", confirmed=True, asset="ETHUSDT")])

    assert written == 3
    assert bars(db) == [("BTCUSDT", MINUTE, D("95010.20"), True),
                        ("BTCUSDT", MINUTE + timedelta(minutes=1), D("95100"), False),
                        ("ETHUSDT", MINUTE, D("3050"), True)]


def test_redelivered_open_bar_does_not_undo_the_closed_one(db):
    with db.transaction() as conn:
        upsert_bars(conn, [kline("95010.20", confirmed=True)])
    with db.transaction() as conn:
        upsert_bars(conn, [kline("95001", confirmed=False)])

    assert bars(db) == [("BTCUSDT", MINUTE, D("95010.20"), True)]


def test_training_run_lifecycle(db):
    with db.transaction() as conn:
        run_id = start_run(conn, "schedule", "nightly retrain", 4242, strategy_id="momentum_v1")
    with db.transaction() as conn:
        running = get_run(conn, run_id)
        assert finish_run(conn, run_id, "succeeded", summary={"executions": 3}) is True
        # The supervisor's late cancel loses against the trainer's result.
        assert finish_run(conn, run_id, "cancelled", error="newer trigger") is False
        finished = get_run(conn, run_id)

    assert (running["status"], running["finished_at"], running["pid"]) == ("running", None, 4242)
    assert finished["status"] == "succeeded"
    assert finished["summary"] == {"executions": 3}
    assert finished["error"] is None
    assert finished["finished_at"] >= finished["started_at"]


def test_finish_run_refuses_a_non_final_status(db):
    with db.transaction() as conn:
        run_id = start_run(conn, "manual", None, None)
        with pytest.raises(ValueError, match="running"):
            finish_run(conn, run_id, "running")


def fill(order_id: str, asset: str, side: str, quantity: str, price: str,
         at: datetime) -> OrderEvent:
    order = OrderSnapshot(
        id=order_id, order_id=order_id, signal_id="b028389f-2f98-489a-a4a7-a9c20e69f568",
        asset=asset, side=side, order_type="Market", quantity=D(quantity), price=None,
        status="filled", filled_quantity=D(quantity), average_price=D(price), fees=None,
        created_at=at, updated_at=at, executed_at=at, is_dry_run=False)
    return OrderEvent(event_id=order_id, event_type="filled", timestamp=at, trace_id=None,
                      order=order)


def test_execution_summary_counts_per_asset_and_side(db):
    with db.transaction() as conn:
        empty = execution_summary(conn)
        record_order_events(conn, [
            fill("o1", "BTCUSDT", "buy", "0.001", "95000", MINUTE),
            fill("o2", "BTCUSDT", "buy", "0.002", "95100", MINUTE + timedelta(minutes=3)),
            fill("o3", "ETHUSDT", "sell", "0.05", "3050", MINUTE + timedelta(minutes=1))])
        summary = execution_summary(conn)

    assert empty == {"executions": 0, "first_executed_at": None, "last_executed_at": None,
                     "by_asset_side": []}
    assert summary["executions"] == 3
    assert summary["first_executed_at"] == MINUTE.isoformat()
    assert summary["last_executed_at"] == (MINUTE + timedelta(minutes=3)).isoformat()
    assert [(g["asset"], g["side"], g["executions"], D(g["quantity"]), D(g["notional"]))
            for g in summary["by_asset_side"]] == [
        ("BTCUSDT", "buy", 2, D("0.003"), D("285.2")),
        ("ETHUSDT", "sell", 1, D("0.05"), D("152.5"))]


def test_dead_letter_with_nul_in_headers_and_trace_id_is_still_parked(db):
    """Regression: a NUL in a header made the dead-letter insert itself fail, so the message
    could neither be processed nor parked."""
    from msd.store.deadletters import count_dead_letters, record_dead_letter
    with db.transaction() as conn:
        record_dead_letter(conn, "q", "bad_json", "detail\x00", b"\x00raw", {"trace_id": "t\x00", "x": b"a\x00b"},
                           "t\x00")
    with db.transaction() as conn:
        assert count_dead_letters(conn, source="q") == 1
