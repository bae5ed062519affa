"""The exit role in-process against the real database and broker: containment of bad messages,
sizes only from the table, every tick in the peak, exits in flight, restart and upgrade cases.

The role is driven turn by turn (`advance`), so each test is exact about what happened between
two turns; the daemon-level tests (test_daemon_exits*.py) cover the same behaviour end to end.
"""
import logging
import multiprocessing
import queue
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import psycopg2
import psycopg2.extras
import pytest
import yaml

from msd import metrics
from msd.values.messages import Kline, PositionUpdate, Trade
from msd.bus.publisher import ConfirmingPublisher
from msd.config import load_config
from msd.roles.exits.main import ExitRole
from msd.roles.runtime.outbox import Outbox
from msd.roles.runtime.process import RoleContext
from msd.supervisor.spawn import ChildSpec
from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.neighbours import create_neighbour_tables
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost
from tests.integration.exit_helpers import execute, mark_price, open_position, utc_now

pytestmark = pytest.mark.integration

RULES = {"stop_loss_pct": 2, "cooldown_seconds": 1, "trailing": {"activation_pct": 1, "distance_pct": 0.5}}


@pytest.fixture(scope="module")
def backend():
    dsn, vhost = create_database(), create_vhost()
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    apply_migrations(dsn)
    yield dsn, vhost
    drop_database(dsn)
    delete_vhost(vhost)


class Harness:
    def __init__(self, dsn, vhost, tmp_path, **exits):
        config = {"database": {"dsn": dsn}, "rabbitmq": {"url": amqp_url(vhost).replace("guest:guest@", "guest@")},
                  "exits": {"debounce_s": 0, "debounce_max_delay_s": 0, "fallback_after_s": 3600,
                            "asset_rate": {"rate_per_s": 100, "burst": 100}, "rules": RULES, **exits}}
        path = tmp_path / "msd.yaml"
        path.write_text(yaml.safe_dump(config))
        self.config = load_config(path, env={})
        self.dsn = dsn
        self.queues = {"positions": queue.Queue(), "exit_prices": queue.Queue()}
        ctx = RoleContext(ChildSpec("exits", "msd.roles.exits.main", self.config, multiprocessing.Pipe()[0], self.queues))
        self.ctx = ctx
        self.db = Database(dsn)
        self.publisher = ConfirmingPublisher(amqp_url(vhost), connection_name="test-exits")
        self.role = ExitRole(ctx, self.db, Outbox(self.db, self.publisher, "model-service.trading_signals", ("exit",)))

    def turn(self, times=1):
        for _ in range(times):
            self.role.step()
            # as the loop does every turn (run_publishing_role): confirms applied, marked sent
            self.role.outbox.service_connection()
            self.role.outbox.commit_marks()
            self.role.save(now=True)

    def until(self, predicate, timeout=5.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.turn()
            value = predicate()
            if value:
                return value
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    def exits(self, position_id):
        return execute(self.dsn, """SELECT signal_id::text, body FROM msd.signals
                                     WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at""",
                       (position_id,))

    def status(self):
        self.role.report()
        return self.ctx.status()

    def close(self):
        self.publisher.close()
        self.db.close()


@pytest.fixture
def make(backend, tmp_path):
    dsn, vhost = backend
    for table in ("msd.position_exit_state", "msd.signals", "msd.order_events", "positions", "orders",
                  "instrument_info"):
        execute(dsn, f"DELETE FROM {table}")
    made = []

    def build(**exits):
        harness = Harness(dsn, vhost, tmp_path, **exits)
        made.append(harness)
        return harness
    yield build
    for harness in made:
        harness.close()


def update(position_id, asset, size, *, at=None, mode="one-way"):
    return PositionUpdate(position_id, asset, D(size), D(0), D(0), mode, None, None, "order_execution", None,
                          at or datetime.now(timezone.utc))


def trade(asset, price, at=None):
    return Trade(asset, at or datetime.now(timezone.utc), D(str(price)), D(1), "buy", str(uuid.uuid4()))


def counter(metric, *labels):
    return (metric.labels(*labels) if labels else metric)._value.get()


def test_lone_surrogate_in_a_position_id_is_contained_to_its_message(make, caplog):
    """Regression (DESIGN §9): one update with a lone surrogate in its id crashed the exits role
    (psycopg2 raised UnicodeEncodeError in its read of the positions table) until it went FATAL."""
    h = make()
    pid = open_position(h.dsn, "SURRUSDT", "2.00000000", "100", "97.00000000")
    invalid_before = counter(metrics.EXIT_INPUTS_INVALID, "invalid_position_id")
    errors_before = counter(metrics.EXIT_ERRORS)
    with caplog.at_level(logging.ERROR, logger="msd.exits"):
        h.queues["positions"].put(update("\ud800", "SURRUSDT", "2"))
        h.queues["positions"].put(update(pid, "SURRUSDT", "2"))
        h.until(lambda: h.exits(pid), what="the valid update's exit")
        assert counter(metrics.EXIT_INPUTS_INVALID, "invalid_position_id") == invalid_before + 1
        # The database read itself: a value the driver cannot send is narrowed down to its id.
        rows = h.role.tables.rows(["\ud800", pid])
    assert set(rows) == {pid}
    assert counter(metrics.EXIT_ERRORS) == errors_before + 1
    lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("invalid_position_id" in r.getMessage() for r in lines)
    assert any("UnicodeEncodeError" in r.getMessage() for r in lines)


def test_event_size_of_minus_1e10_on_a_real_open_position_exits_at_most_the_held_size(make):
    """Regression (issue 10 overlap): the exit amount came from the event's size; the size is the
    table's alone and the amount is never more than |size| x price (plus the rounding padding)."""
    h = make()
    pid = open_position(h.dsn, "HUGEUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "HUGEUSDT", "-1e10"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="the exit")
    assert (body["signal_type"], body["amount"], body["metadata"]["quantity"]) == ("sell", "194", "2")
    assert D(body["amount"]) <= 2 * 97
    state = h.role.book[("HUGEUSDT", pid)]
    assert state.side.value == "long" and state.size == 2


def test_every_tick_moves_the_peak_even_when_the_decision_is_debounced(make):
    """Regression (issue 8): only the price current when the debouncer released was folded in,
    so a spike shorter than the debounce never moved the trailing peak."""
    h = make(debounce_s=5, debounce_max_delay_s=5)
    pid = open_position(h.dsn, "SPIKEUSDT", "1.00000000", "100", "100.00000000")
    h.queues["positions"].put(update(pid, "SPIKEUSDT", "1"))
    h.until(lambda: ("SPIKEUSDT", pid) in h.role.book, what="watched")
    h.role.verify(datetime.now(timezone.utc))                      # read the row without waiting 5 s
    prices = [100 + i / 10 for i in range(30)] + [107.77] + [102.5 - i / 10 for i in range(30)]
    for price in prices:
        h.queues["exit_prices"].put(trade("SPIKEUSDT", price))
    h.turn(3)
    state = h.role.book[("SPIKEUSDT", pid)]
    assert state.extreme_price == D("107.77") and state.highest_pnl_pct == D("7.77")
    start = (state.opened_at + timedelta(minutes=1)).replace(second=0, microsecond=0)    # began after the open
    bar = Kline("SPIKEUSDT", start, D(101), D("108.5"), D(99), D(100), D(1), D(100), True, start)
    h.queues["exit_prices"].put(bar)
    h.turn()
    assert h.role.book[("SPIKEUSDT", pid)].extreme_price == D("108.5"), "a closed bar's high is a traded price"


def test_restored_quiet_position_is_watched_and_exits_on_ticks_alone(make):
    """Regression (issue 8): after a restart a position with no new update was only evaluated
    when the whole role fell back to polling."""
    first = make()
    pid = open_position(first.dsn, "QUIETUSDT", "1.00000000", "100", "100.00000000")
    first.turn()                                    # restores (nothing) and reads every open row
    assert ("QUIETUSDT", pid) in first.role.book
    second = make()                                 # a new process: no update will ever come
    second.turn()
    assert ("QUIETUSDT", pid) in second.role.book
    second.queues["exit_prices"].put(trade("QUIETUSDT", "97.5"))
    [(_, body)] = second.until(lambda: second.exits(pid), what="stop loss from ticks")
    assert body["metadata"]["exit_reason"] == "stop_loss" and body["metadata"]["price_source"] == "market_last_price"


def test_stale_row_exit_is_sent_once_then_reported_stalled(make):
    h = make(in_flight_timeout_s=0.3)
    pid = open_position(h.dsn, "STALLUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "STALLUSDT", "2"))
    h.until(lambda: h.exits(pid), what="first exit")
    stalls = counter(metrics.EXIT_STALLS)
    status = h.until(lambda: (lambda s: s if s["exits_stalled"] else None)(h.status()), what="stall reported")
    assert "exits_in_flight" in status["degraded"] and counter(metrics.EXIT_STALLS) == stalls + 1
    for _ in range(5):                              # ticks and cooldowns pass: nothing is re-sent
        h.queues["exit_prices"].put(trade("STALLUSDT", "96"))
        time.sleep(0.25)
        h.turn()
    assert len(h.exits(pid)) == 1
    execute(h.dsn, "UPDATE positions SET version = version + 1, last_updated = %s WHERE id = %s",
            (utc_now(), pid))                       # a newer row (still 2): the next exit may go
    h.queues["positions"].put(update(pid, "STALLUSDT", "2"))       # the write's event
    h.until(lambda: len(h.exits(pid)) == 2, what="second exit after a newer row")
    assert h.status()["exits_stalled"] == {}


def test_rejected_exit_is_decided_again_at_once(make):
    h = make(rules={**RULES, "cooldown_seconds": 60})
    pid = open_position(h.dsn, "REJUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "REJUSDT", "2"))
    [(signal_id, _)] = h.until(lambda: h.exits(pid), what="first exit")
    execute(h.dsn, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                      VALUES (%s, %s, 'REJUSDT', 'SELL', 'Market', 2, 'rejected')""",
            (f"REJECTED-{signal_id}", signal_id))
    h.until(lambda: len(h.exits(pid)) == 2, what="the exit decided again within the 60 s cooldown")


def test_ladder_step_and_its_outbox_row_are_saved_in_one_transaction(make):
    """Regression (issue 8): the step was saved, then the outbox row written; a crash between the
    two lost that step for good. Here the outbox INSERT fails: the step must not be saved."""
    h = make(rules={"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1}]}})
    pid = open_position(h.dsn, "LADUSDT", "2.00000000", "100", "104.00000000")
    execute(h.dsn, """CREATE FUNCTION pg_temp_fail() RETURNS trigger LANGUAGE plpgsql AS
                      $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$""".replace("pg_temp_fail", "msd.fail_exit"))
    execute(h.dsn, "CREATE TRIGGER fail_exit BEFORE INSERT ON msd.signals FOR EACH ROW EXECUTE FUNCTION msd.fail_exit()")
    try:
        h.queues["positions"].put(update(pid, "LADUSDT", "2"))
        h.turn(3)
        stored = execute(h.dsn, "SELECT state FROM msd.position_exit_state WHERE position_key = %s", (pid,))
        assert stored and stored[0][0]["ladder_steps_done"] == [] and stored[0][0]["in_flight"] == []
        assert h.role.book[("LADUSDT", pid)].ladder_steps_done == ()
    finally:
        execute(h.dsn, "DROP TRIGGER fail_exit ON msd.signals")
        execute(h.dsn, "DROP FUNCTION msd.fail_exit()")
    h.queues["exit_prices"].put(trade("LADUSDT", "104"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="the step once the outbox works")
    stored = execute(h.dsn, "SELECT state FROM msd.position_exit_state WHERE position_key = %s", (pid,))[0][0]
    assert stored["ladder_steps_done"] == [0] and stored["in_flight"][0]["signal_id"] == body["signal_id"]


def test_hedge_mode_rows_are_refused_once_and_reported(make, caplog):
    h = make()
    execute(h.dsn, """INSERT INTO positions (asset, size, mode, long_size, short_size, average_entry_price,
                                             current_price, last_updated, created_at)
                      VALUES ('HEDGEUSDT', 0, 'hedge', 1, 2, 100, 50, %s, %s)""", (utc_now(), utc_now()))
    with caplog.at_level(logging.ERROR, logger="msd.exits"):
        h.turn()
        h.role.verify(datetime.now(timezone.utc))
    assert len([r for r in caplog.records if "hedge" in r.getMessage()]) == 1
    status = h.status()
    assert list(status["left_alone"].values()) == ["hedge_mode"] and "hedge_mode_positions" in status["degraded"]
    assert status["open_positions"] == 0 and execute(h.dsn, "SELECT count(*) FROM msd.signals") == [(0,)]


def test_disabled_asset_is_left_alone(make):
    h = make(per_asset={"LEFTUSDT": {"enabled": False}})
    pid = open_position(h.dsn, "LEFTUSDT", "2.00000000", "100", "90.00000000")
    h.queues["positions"].put(update(pid, "LEFTUSDT", "2"))
    h.turn(3)
    assert h.exits(pid) == [] and h.status()["left_alone"] == {f"LEFTUSDT {pid}": "disabled"}


def test_position_without_market_data_is_reported_and_evaluated_from_the_table(make):
    h = make()
    pid = open_position(h.dsn, "NOMKTUSDT", "1.00000000", "100", "99.00000000")
    h.turn()
    status = h.status()
    assert status["without_market_data"] == {"NOMKTUSDT": 1} and "market_data" in status["degraded"]
    execute(h.dsn, "UPDATE positions SET current_price = 97, version = version + 1, last_updated = %s "
                   "WHERE id = %s", (utc_now(), pid))
    h.queues["positions"].put(update(pid, "NOMKTUSDT", "1"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="exit from the table's price")
    assert body["metadata"]["price_source"] == "positions_table"


def test_position_below_the_minimum_order_value_is_warned_once_and_never_exited(make, caplog):
    h = make()
    pid = open_position(h.dsn, "DUSTUSDT", "0.04000000", "100", "97.00000000")     # 3.88 USDT
    with caplog.at_level(logging.WARNING, logger="msd.exits"):
        for _ in range(3):
            h.queues["positions"].put(update(pid, "DUSTUSDT", "0.04"))
            h.turn(2)
    assert len([r for r in caplog.records if "minimum order value" in r.getMessage()]) == 1
    assert h.exits(pid) == [] and list(h.status()["below_min_order_value"]) == [f"DUSTUSDT {pid}"]
    assert metrics.EXIT_POSITIONS_BELOW_MINIMUM._value.get() == 1


def test_instrument_info_rounds_a_doge_like_exit(make):
    h = make()
    execute(h.dsn, """INSERT INTO instrument_info (symbol, lot_size, min_order_qty, max_order_qty, min_order_value,
                                                   price_tick_size) VALUES ('DOGELIKEUSDT', 1, 1, 1000000, 5, 0.00001)""")
    pid = open_position(h.dsn, "DOGELIKEUSDT", "1234.00000000", "0.2", "0.16213")
    h.queues["positions"].put(update(pid, "DOGELIKEUSDT", "1234"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="exit")
    assert (body["amount"], body["market_data_snapshot"]["price"]) == ("200.06842", "0.16213")
    assert body["metadata"]["sizing"]["lot_step"] == "1" and body["metadata"]["sizing"]["instrument_source"] == \
        "instrument_info"


def test_websocket_reopen_takes_the_entry_from_the_fill_path(make):
    """CONTRACTS §3.5: a reopen via the websocket path keeps a stale average_entry_price."""
    h = make()
    closed = utc_now() - timedelta(minutes=5)
    pid = open_position(h.dsn, "WSUSDT", "1.00000000", "150", "96.00000000")       # 150: the old position's
    execute(h.dsn, "UPDATE positions SET closed_at = %s WHERE id = %s", (closed, pid))
    execute(h.dsn, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status,
                                          filled_quantity, average_price, updated_at)
                      VALUES ('o-1', %s, 'WSUSDT', 'Buy', 'Market', 1, 'filled', 1, 98.5, %s)""",
            (str(uuid.uuid4()), closed + timedelta(minutes=1)))
    h.queues["positions"].put(update(pid, "WSUSDT", "1"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="exit")
    meta = body["metadata"]
    assert (D(meta["entry_price"]), meta["entry_source"], meta["exit_reason"]) == (D("98.5"), "fill_path", "stop_loss")


def test_close_and_reopen_while_msd_was_down_starts_a_new_position(make):
    first = make(rules={"trailing": {"activation_pct": 1, "distance_pct": 0.5}})
    pid = open_position(first.dsn, "DOWNUSDT", "1.00000000", "100", "110.00000000")
    first.turn()
    assert first.role.book[("DOWNUSDT", pid)].extreme_price == D(110)
    seen = first.role.book[("DOWNUSDT", pid)].row.last_updated.replace(tzinfo=None)
    for n, (side, qty) in enumerate([("SELL", 1), ("Buy", 1)]):                    # closed, then reopened
        execute(first.dsn, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status,
                                                  filled_quantity, average_price, updated_at)
                              VALUES (%s, %s, 'DOWNUSDT', %s, 'Market', %s, 'filled', %s, 105, %s)""",
                (f"d-{n}", str(uuid.uuid4()), side, qty, qty, seen + timedelta(seconds=n + 1)))
    mark_price(first.dsn, "DOWNUSDT", "105", size="0E-8")                           # two writes (§3.5)
    open_position(first.dsn, "DOWNUSDT", "1.00000000", "105", "109.00000000", position_id=pid)
    second = make(rules={"trailing": {"activation_pct": 1, "distance_pct": 0.5}})
    second.turn()
    state = second.role.book[("DOWNUSDT", pid)]
    assert (state.extreme_price, state.entry_price) == (D(109), D(105)), "not the old position's 110 peak"
    assert state.opened_at > datetime.now(timezone.utc) - timedelta(seconds=10)


def test_states_stored_by_the_first_version_are_not_time_exited_early(tmp_path):
    """Upgrade (issue 8): format-1 states carry opened_at = the row's created_at, days ago for a
    reopened position; sql/005 dates them from the upgrade, keeping their peak."""
    import shutil
    from msd.store.migrate import DEFAULT_SQL_DIR
    dsn, vhost = create_database(), create_vhost()
    try:
        old_sql = tmp_path / "sql"
        old_sql.mkdir()
        for path in sorted(DEFAULT_SQL_DIR.glob("00[1-4]_*.sql")):
            shutil.copy(path, old_sql / path.name)
        apply_migrations(dsn, old_sql)
        with psycopg2.connect(dsn) as conn:
            create_neighbour_tables(conn)
        days_ago = utc_now() - timedelta(days=6)
        pid = open_position(dsn, "OLDUSDT", "1.00000000", "100", "101.00000000", created_at=days_ago)
        v1 = {"version": 1, "asset": "OLDUSDT", "side": "long", "position_id": pid, "entry_price": "100",
              "opened_at": days_ago.replace(tzinfo=timezone.utc).isoformat(), "extreme_price": "104",
              "highest_pnl_pct": "4", "ladder_steps_done": [], "stop_moved_to_breakeven": False,
              "last_exit_at": None}
        execute(dsn, "INSERT INTO msd.position_exit_state (asset, side, position_key, state) VALUES (%s, %s, %s, %s)",
                ("OLDUSDT", "long", pid, psycopg2.extras.Json(v1)))
        apply_migrations(dsn)
        harness = Harness(dsn, vhost, tmp_path, rules={"time_exit": {"max_hold_seconds": 3600,
                                                                     "min_profit_pct": -50}})
        try:
            harness.turn(3)
            state = harness.role.book[("OLDUSDT", pid)]
            assert (state.opened_by, state.extreme_price) == ("upgrade", D(104))
            assert state.opened_at > datetime.now(timezone.utc) - timedelta(minutes=1)
            assert harness.exits(pid) == []
        finally:
            harness.close()
    finally:
        drop_database(dsn)
        delete_vhost(vhost)


def test_a_confirmed_exit_is_published_in_its_state_without_a_lookup_in_msd_signals(make, monkeypatch):
    """Since publishes are pipelined, an exit is never confirmed at submit: the outbox's verdict
    marks it published (the msd.signals lookup, here made to find nothing, is for a restart)."""
    h = make()
    monkeypatch.setattr(h.role, "_published", lambda ids: set())
    pid = open_position(h.dsn, "CONFUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "CONFUSDT", "2"))
    [(signal_id, _)] = h.until(lambda: h.exits(pid), what="the exit")
    h.until(lambda: all(f.published for f in h.role.book[("CONFUSDT", pid)].in_flight), what="published")
    [flight] = h.role.book[("CONFUSDT", pid)].in_flight
    assert flight.signal_id == signal_id
