"""Exits through the daemon and the faithful paper exchange (msd-sim), which keeps one positions
row per asset forever (CONTRACTS §3.5), sizes orders as order-manager does and sends reduceOnly
only while position-manager's row shows a position to reduce (§3.6).

The test plays the strategy that opens positions (a market buy on the signals queue); msd-sim
fills it, writes the row and publishes the events; msd's exit role does the rest. Exits are
read from msd's outbox (the sim consumes the signals queue) and from the shared tables.
"""
import json
import threading
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pika
import pytest

from msd.sim.exchange import SimControls
from msd.sim.market import MarketParams
from msd.sim.runner import SimConfig, run
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.exit_helpers import execute, stored_state, utc_now

pytestmark = pytest.mark.integration

QUICK_EXIT = {"time_exit": {"max_hold_seconds": 1, "min_profit_pct": -50}, "cooldown_seconds": 1}
EXITS = {
    "fallback_after_s": 3600, "debounce_s": 0.05, "debounce_max_delay_s": 0.2, "in_flight_timeout_s": 2,
    "asset_rate": {"rate_per_s": 5, "burst": 5},
    "rules": {"stop_loss_pct": 50, "cooldown_seconds": 1},
    "per_asset": {"BTCUSDT": QUICK_EXIT, "SOLUSDT": QUICK_EXIT, "XRPUSDT": QUICK_EXIT,
                  "ETHUSDT": {"time_exit": {"max_hold_seconds": 3600}, "cooldown_seconds": 1}},
}


@pytest.fixture(scope="module")
def exchange(resources):
    dsn, vhost = resources
    # order-manager's cached filters for BTC as Bybit has them (lot 0.001); the sim keeps this row.
    execute(dsn, """INSERT INTO instrument_info (symbol, lot_size, min_order_qty, max_order_qty, min_order_value,
                                                 price_tick_size) VALUES ('BTCUSDT', 0.001, 0.001, 100, 5, 0.1)""")
    controls, stop, failure = SimControls(), threading.Event(), []
    config = SimConfig(amqp_url=amqp_url(vhost), dsn=dsn, assets=("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"),
                       seed=11, speed=1.0, tick_rate=10.0, position_update_s=1.0,
                       start=datetime.now(timezone.utc), market=MarketParams(regime="noise"))

    def target():
        try:
            run(config, stop, controls)
        except BaseException as exc:  # reported by the fixture
            failure.append(exc)

    thread = threading.Thread(target=target, name="msd-sim")
    thread.start()
    try:
        yield controls
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failure, failure


@pytest.fixture(scope="module")
def daemon(resources, exchange, tmp_path_factory):
    dsn, vhost = resources
    tmp = tmp_path_factory.mktemp("exits-sim")
    d = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), exits=EXITS))
    d.start()
    d.wait_running("exits")
    yield d
    d.close()


def buy(resources, asset, amount, price):
    """A strategy's market buy, as order-manager reads it (CONTRACTS §1.2)."""
    signal = {"signal_id": str(uuid.uuid4()), "signal_type": "buy", "asset": asset, "amount": amount,
              "confidence": 0.95, "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
              "strategy_id": "test-opener", "market_data_snapshot": {"price": price}}
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(resources[1])))
    try:
        conn.channel().basic_publish("", "model-service.trading_signals", json.dumps(signal).encode(),
                                     pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()
    return signal["signal_id"]


def row(dsn, asset):
    rows = execute(dsn, "SELECT id::text, size, created_at, version FROM positions WHERE asset = %s", (asset,))
    return rows[0] if rows else None


def exits_of(dsn, position_id):
    """msd's exit signals for the position and what order-manager made of each, oldest first."""
    return execute(dsn, """SELECT s.signal_id::text, s.body->>'amount', o.status, o.quantity, o.filled_quantity
                             FROM msd.signals s LEFT JOIN orders o ON o.signal_id = s.signal_id
                            WHERE s.mode = 'exit' AND s.body->'metadata'->>'position_id' = %s
                            ORDER BY s.created_at""", (position_id,))


def opened(resources, asset, amount, price):
    dsn = resources[0]
    buy(resources, asset, amount, price)
    return wait_for(lambda: (lambda r: r if r and r[1] > 0 else None)(row(dsn, asset)), 15,
                    what=f"the sim's {asset} position")


def healthz(daemon):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.config['metrics']['port']}/healthz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def test_position_reopened_on_a_days_old_row_is_not_exited(daemon, resources):
    """Regression (issue 8): position-manager keeps the row and its created_at forever; msd took
    created_at as the open time and time-exited every reopened position at once."""
    dsn = resources[0]
    long_ago = utc_now() - timedelta(days=5)
    execute(dsn, """INSERT INTO positions (asset, size, mode, created_at, closed_at, last_updated, version)
                    VALUES ('ETHUSDT', 0, 'one-way', %s, %s, %s, 7)""", (long_ago, long_ago + timedelta(hours=2),
                                                                          long_ago + timedelta(hours=2)))
    pid, size, created, _ = opened(resources, "ETHUSDT", "30", "3000")
    assert size == Decimal("0.01") and created == long_ago, "the sim kept the old row and its created_at"
    state = wait_for(lambda: (lambda s: s if s and s.get("row") else None)(stored_state(dsn, pid)), 10,
                     what="msd watching the reopened position")
    assert datetime.fromisoformat(state["opened_at"]) > datetime.now(timezone.utc) - timedelta(seconds=30)
    # A time exit from the 5-day-old created_at would have fired at the first evaluation, whose
    # exit is saved with its state; the sim's marks (every second) make it evaluate again too.
    seen = daemon.role("exits")["status"].get("evaluations", 0)
    wait_for(lambda: daemon.role("exits")["status"].get("evaluations", 0) > seen + 1, 10, what="more evaluations")
    assert exits_of(dsn, pid) == [] and row(dsn, "ETHUSDT")[1] == Decimal("0.01")


def test_full_close_leaves_size_exactly_zero_in_the_sim(daemon, resources):
    """Regression (issue 8): the amount rounded to the cent made order-manager's quantity one
    lot short (0.003 BTC at 97,123.4 became 0.002), leaving a remainder open."""
    dsn = resources[0]
    pid, size, _, _ = opened(resources, "BTCUSDT", "291.3702", "97123.4")     # 0.003 BTC
    assert size == Decimal("0.003")
    wait_for(lambda: row(dsn, "BTCUSDT")[1] == 0, 15, what="the time exit closing the position")
    [(_, amount, status, quantity, filled)] = exits_of(dsn, pid)
    assert (status, quantity, filled) == ("filled", Decimal("0.003"), Decimal("0.003"))
    assert row(dsn, "BTCUSDT")[1] == 0


def test_exit_with_the_positions_row_frozen_is_sent_once_and_the_stall_reported(daemon, resources, exchange):
    """Regression (issue 8): with position-manager down the row kept the old size and every
    cooldown sent another full exit; once flat, order-manager sends it without reduceOnly and
    reverses the position. Now: one exit, then a stall report, nothing re-sent."""
    dsn = resources[0]
    pid, size, _, _ = opened(resources, "XRPUSDT", "6.6", "2.2")               # 3 XRP
    exchange.position_manager_down.set()
    try:
        wait_for(lambda: exits_of(dsn, pid), 10, what="the exit")
        stalled = wait_for(lambda: daemon.role("exits")["status"].get("exits_stalled"), 10, what="stall reported")
        assert list(stalled) == [f"XRPUSDT {pid}"]
        problems = healthz(daemon)["problems"]
        assert any("exits_in_flight" in p for p in problems), problems
        assert any(r.get("level") == "ERROR" and r["message"].startswith("EXIT STALLED")
                   for r in daemon.log_records())
        [(_, _, status, _, filled)] = exits_of(dsn, pid)      # the row still says 3: nothing more went
        assert (status, filled) == ("filled", Decimal(3)) and row(dsn, "XRPUSDT")[1] == 3
    finally:
        exchange.position_manager_down.clear()
    wait_for(lambda: row(dsn, "XRPUSDT")[1] == 0, 10, what="position-manager catching up")
    wait_for(lambda: not daemon.role("exits")["status"].get("exits_stalled"), 10, what="stall cleared")
    assert len(exits_of(dsn, pid)) == 1 and row(dsn, "XRPUSDT")[1] == 0, "not reversed"


def test_a_rejected_exit_is_decided_again(daemon, resources, exchange):
    dsn = resources[0]
    pid, size, _, _ = opened(resources, "SOLUSDT", "14", "140")                # 0.1 SOL
    exchange.reject_next(1)
    wait_for(lambda: row(dsn, "SOLUSDT")[1] == 0, 15, what="the second exit closing the position")
    (_, _, first, _, _), (_, _, second, _, filled) = exits_of(dsn, pid)
    assert (first, second, filled) == ("rejected", "filled", size)
