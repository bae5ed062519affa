"""Regression tests of issue #10 through the real daemon, broker and database.

Hostile input that used to crash or mislead a role (the "\\ud800" flood, an absurd size), a
database outage that the roles misreported, an idle publisher connection that the broker
dropped, and stray output that broke the JSON log stream. One daemon for the module, with a
1-second AMQP heartbeat so that "idle past twice the heartbeat" takes seconds.
"""
import json
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

import psycopg2
import pytest
import yaml

from tests import examples
from tests.fixtures.pg import ADMIN_DSN
from tests.fixtures.rabbit import amqp_url, close_vhost_connections, rabbitmqctl
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.exit_helpers import (
    POSITIONS_QUEUE, SignalReader, execute, mark_price, open_position, position_update, publish, stored_state,
)
from tests.integration.market_feed import MarketFeed

pytestmark = pytest.mark.integration
ORDER_QUEUE = "order-manager.order_events"
ROLES = ("consumer", "signaller", "exits")
EXITS = {"fallback_after_s": 3600, "poll_interval_s": 0.2, "debounce_s": 0.05, "debounce_max_delay_s": 0.2,
         "rules": {"stop_loss_pct": 2, "take_profit": {"pct": 50}, "cooldown_seconds": 60}}
STRATEGY = {"id": "probe", "assets": ["BTCUSDT"], "trigger": "schedule", "seed": 3,
            "rate": {"rate_per_s": 2, "burst": 2},
            "warmup": {"frequency_s": 0.5, "heuristic": "random", "min_amount_usdt": 10, "max_amount_usdt": 20,
                       "max_exposure_usdt": 1_000_000}}


@pytest.fixture(scope="module")
def daemon(resources, tmp_path_factory):
    dsn, vhost = resources
    tmp = tmp_path_factory.mktemp("hardening")
    config = base_config(tmp, dsn, amqp_url(vhost), exits=EXITS, rabbitmq={"heartbeat_s": 1},
                         signaller={"strategies": [STRATEGY], "max_data_age_s": 2},
                         trainer={"job": "tests.jobs:stray_output"})
    d = Daemon(tmp, config)
    d.start()
    for role in ROLES:
        d.wait_running(role)
    yield d
    d.close()


@pytest.fixture
def signals(resources):
    reader = SignalReader(amqp_url(resources[1]))
    yield reader
    reader.close()


def scalar(dsn, sql, args=()):
    return execute(dsn, sql, args)[0][0]


def metric(daemon, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` in a live scrape."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.config['metrics']['port']}/metrics", timeout=5).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def health(daemon):
    try:
        response = urllib.request.urlopen(f"http://127.0.0.1:{daemon.config['metrics']['port']}/healthz", timeout=5)
        return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def pids(daemon):
    return {role: (daemon.role(role)["pid"], daemon.role(role)["restarts"]) for role in ROLES}


def test_lone_surrogate_flood_is_dead_lettered_and_no_role_goes_down(daemon, resources, channel):
    """Regression: position updates whose position_id was "\\ud800" passed the codec and crashed
    the exits role in psycopg2; five of them in 8 s made it FATAL and /healthz stayed 503."""
    dsn, _ = resources
    before, dead_before = pids(daemon), scalar(dsn, "SELECT count(*) FROM msd.dead_letters")
    hostile_position = position_update(str(uuid.uuid4()), "BTCUSDT", "1.00000000").replace(
        b'"position_id": "', b'"position_id": "\\ud800', 1)
    hostile_order = examples.FILLED_EVENT.replace(b'"order_id": "1c9a', b'"order_id": "\\ud800', 1)
    for i in range(200):
        publish(channel, POSITIONS_QUEUE, hostile_position)
        publish(channel, ORDER_QUEUE, hostile_order)
        if i % 10 == 0:
            event = json.loads(examples.FILLED_EVENT)
            event["order"].update(order_id=f"surrogate-flood-{i}", signal_id=str(uuid.uuid4()))
            publish(channel, ORDER_QUEUE, json.dumps(event).encode())
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.dead_letters") - dead_before == 400, 30,
             what="400 dead letters")
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.executions WHERE order_id LIKE 'surrogate-flood-%%'")
             == 20, 20, what="the valid events among them")
    assert set(r for (r,) in execute(dsn, "SELECT DISTINCT reason FROM msd.dead_letters WHERE id > "
                                          "(SELECT max(id) - 400 FROM msd.dead_letters)")) == {"bad_text"}
    assert pids(daemon) == before
    assert health(daemon)[0] == 200
    # The log is not flooded: a few lines per (queue, reason), then a summary.
    lines = [r for r in daemon.log_records() if r.get("message", "").startswith("invalid message dead-lettered")
             and r.get("reason") == "bad_text"]
    assert 0 < len(lines) <= 20


def test_position_size_minus_1e10_never_becomes_an_exit(daemon, resources, channel, signals):
    """Regression: `"size": "-1e10"` for a real open position produced a 29,396,350,000,000 USDT exit."""
    dsn, _ = resources
    position_id = open_position(dsn, "ABSURDUSDT", "2.00000000", "100", "97.00000000")     # at its stop loss
    publish(channel, POSITIONS_QUEUE, position_update(position_id, "ABSURDUSDT", "-1e10", "t-absurd"))
    parked = f"SELECT reason FROM msd.dead_letters WHERE encode(payload, 'escape') LIKE '%%{position_id}%%'"
    assert wait_for(lambda: execute(dsn, parked), 10, what="the absurd update dead-lettered") == [("out_of_range",)]
    # The exit role reads every open row on its own, so the position (at its stop loss) exits
    # whatever the event said, sized from the table: 2 at 97, never 1e10.
    publish(channel, POSITIONS_QUEUE, position_update(position_id, "ABSURDUSDT", "2.00000000", "t-sane"))
    [(exit_signal, _)] = wait_for(lambda: signals.for_position(position_id), 15, what="the sane exit")
    assert exit_signal["signal_type"] == "sell"
    assert Decimal(str(exit_signal["amount"])) <= Decimal("2") * Decimal("97") * Decimal("1.01")


def test_idle_exits_publisher_survives_twice_the_heartbeat_and_exits_without_reconnecting(
        daemon, resources, channel, signals):
    """Regression: the exits role's publishing connection answered no heartbeats while no exit was
    sent, so the broker dropped it after a quiet spell and the next exit paid a reconnect."""
    dsn, vhost = resources
    heartbeat = daemon.config["rabbitmq"]["heartbeat_s"]
    wait_for(lambda: metric(daemon, "msd_broker_connections_opened_total", connection="msd-exits") >= 1, 10,
             what="the exits publisher connected before it is needed")
    opened = metric(daemon, "msd_broker_connections_opened_total", connection="msd-exits")
    time.sleep(3 * heartbeat)                                # idle: no exit, no publish
    assert "msd-exits" in broker_connection_names(vhost)
    position_id = open_position(dsn, "IDLEUSDT", "1.00000000", "100", "97.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(position_id, "IDLEUSDT", "1.00000000"))
    wait_for(lambda: signals.for_position(position_id), 15, what="the exit after the quiet spell")
    assert metric(daemon, "msd_broker_connections_opened_total", connection="msd-exits") == opened


def test_broker_side_close_is_noticed_and_repaired_before_the_next_signal(daemon, resources):
    """Regression: after a broker-side close the signaller noticed only at its next publish."""
    _, vhost = resources
    opened = {name: metric(daemon, "msd_broker_connections_opened_total", connection=name)
              for name in ("msd-exits", "msd-signaller")}
    assert close_vhost_connections(vhost) >= 3
    for name, before in opened.items():
        # No signal is sent meanwhile (no market data, no position): only the idle check can notice.
        wait_for(lambda: metric(daemon, "msd_broker_connections_opened_total", connection=name) > before, 10,
                 what=f"{name} reconnected by itself")
    wait_for(lambda: {"msd-exits", "msd-signaller", "msd-consumer"} <= set(broker_connection_names(vhost)), 10,
             what="all connections back")


def broker_connection_names(vhost):
    rows = rabbitmqctl("list_connections", "vhost", "client_properties").splitlines()
    return [name for row in rows if row.startswith(vhost + "\t")
            for name in ("msd-exits", "msd-signaller", "msd-consumer") if f'"{name}"' in row]


def test_stray_output_of_a_child_is_wrapped_and_every_stdout_line_is_json(daemon):
    """Regression: non-JSON lines ("leaked semaphore") appeared in the JSON log stream."""
    request = daemon.call("retrain", reason="stray output")
    wait_for(lambda: any(r["request_id"] == request["request_id"] for r in daemon.status()["trainer"]["recent"]),
             30, what="the training run ended")
    stray = wait_for(lambda: [r for r in daemon.log_records() if r.get("stray_output")], 10, what="wrapped lines")
    texts = " ".join(r["message"] for r in stray)
    assert "a stray print to stdout" in texts and "leaked semaphore" in texts
    lines = daemon.log_path.read_text(errors="replace").splitlines()
    not_json = [line for line in lines if not _is_json_object(line)]
    assert lines and not_json == []


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def test_promtool_finds_a_live_scrape_clean(daemon):
    from tests.integration.promtool import check_metrics
    body = urllib.request.urlopen(f"http://127.0.0.1:{daemon.config['metrics']['port']}/metrics", timeout=5).read()
    assert b"msd_dependency_up" in body and b"msd_broker_connections_opened_total" in body
    assert check_metrics(body) == ""


def _reconfigure(daemon, **sections):
    config = yaml.safe_load(daemon.config_path.read_text())
    for section, values in sections.items():
        config[section].update(values)
    daemon.write_config(config)
    assert daemon.ctl("reload")[0] == 0


def _sql_admin(statement, args=()):
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
    finally:
        conn.close()


def _dependency(daemon, role, name):
    return (daemon.role(role)["status"].get("dependencies") or {}).get(name, {})


def test_database_outage_is_reported_as_the_database_by_every_role_and_healthz(daemon, resources, channel):
    """Regression: during a PostgreSQL outage the exits role logged "the database is back" four
    times and never showed as degraded; the consumer reported broker=down and "rabbitmq degraded"
    while only PostgreSQL was down. (The issue's outage lasted 20 s; a few seconds show the same.)"""
    dsn, vhost = resources
    name = dsn.rsplit("/", 1)[1]
    _reconfigure(daemon, exits={"fallback_after_s": 0.5, "poll_interval_s": 0.3})   # the exits role polls the table
    wait_for(lambda: daemon.role("exits")["status"].get("mode") == "fallback", 10, what="exits polling")
    log_start = len(daemon.log_records())
    with MarketFeed(amqp_url(vhost), ["BTCUSDT"]):          # the strategy reads its exposure every turn
        # ...once it has market data: the consumer forwards ticks only while it can commit.
        start = daemon.role("signaller")["status"].get("market_updates", 0)
        wait_for(lambda: daemon.role("signaller")["status"].get("market_updates", 0) > start, 10,
                 what="market data reaches the signaller before the outage")
        _sql_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            _sql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            event = json.loads(examples.FILLED_EVENT)
            event["order"].update(order_id="during-outage", signal_id=str(uuid.uuid4()))
            publish(channel, ORDER_QUEUE, json.dumps(event).encode())
            for role in ROLES:
                wait_for(lambda: _dependency(daemon, role, "database").get("up") is False, 15,
                         what=f"{role} reports the database down")
            code, body = health(daemon)
            assert code == 503
            for role in ROLES:
                assert any(p.startswith(f"{role}: database down: ") for p in body["problems"]), body
            assert not any("broker" in p or "rabbitmq" in p for p in body["problems"]), body
            assert _dependency(daemon, "consumer", "broker").get("up") is True
            assert daemon.role("consumer")["status"]["broker"] == "up"
            code, text = daemon.ctl("status")
            assert "broker up, database DOWN" in text and "DEGRADED" in text
            assert metric(daemon, "msd_dependency_up", role="exits", dependency="database") == 0
        finally:
            _sql_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        for role in ROLES:
            wait_for(lambda: _dependency(daemon, role, "database").get("up") is True, 20,
                     what=f"{role} reports the database back")
    # Healthy again but for what other tests of the module left: open positions in assets
    # without market data (the exits role reports those as its own problem).
    wait_for(lambda: all(p.startswith("exits: market_data") for p in health(daemon)[1]["problems"]), 10,
             what="healthy again")
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.executions WHERE order_id = 'during-outage'") == 1,
             10, what="the event held during the outage recorded")
    records = daemon.log_records()[log_start:]
    for role in ROLES:
        mine = [r for r in records if r.get("role") == role and r.get("dependency") == "database"]
        assert [r["message"].split(":")[0].split(" after ")[0] for r in mine] == ["database down", "database back"], mine
        assert mine[1]["failed_attempts"] >= 1
    assert not [r for r in records if r.get("dependency") == "broker"]
    assert not [r for r in records if "resumed" in r.get("message", "")]
    _reconfigure(daemon, exits={"fallback_after_s": 3600, "poll_interval_s": 0.2})


def test_exit_expiring_during_broker_outage_is_redecided_at_the_current_price_not_sent_stale(daemon, resources):
    """Regression: an exit that waited in the outbox through a broker outage went out whenever the
    broker returned, however old, and its ladder step and breakeven stop stayed marked. Now it
    expires after exits.max_signal_age_s, is undone in the expiring transaction, and the position
    is decided again at the price of the moment."""
    dsn, vhost = resources
    ladder = {"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1}],
                              "breakeven_after_first_step": True}, "stop_loss_pct": 2, "cooldown_seconds": 60}
    _reconfigure(daemon, exits={"fallback_after_s": 0.5, "poll_interval_s": 0.2, "max_signal_age_s": 1,
                                "rules": ladder})           # the exits role polls the table: no events needed
    wait_for(lambda: daemon.role("exits")["status"].get("mode") == "fallback", 10, what="exits polling")
    position_id = open_position(dsn, "STALEUSDT", "2.00000000", "100", "100.00000000")
    wait_for(lambda: stored_state(dsn, position_id), 10, what="the position watched")
    exits = """SELECT signal_id::text, outbox_state, body->'metadata'->>'exit_reason',
                      body->'metadata'->>'quantity' FROM msd.signals
                WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at"""
    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    close_vhost_connections(vhost)
    try:
        mark_price(dsn, "STALEUSDT", "103.50000000")                  # the first ladder step...
        wait_for(lambda: [r for r in execute(dsn, exits, (position_id,)) if r[2] == "take_profit_step"], 10,
                 what="the step recorded while the broker is down")
        mark_price(dsn, "STALEUSDT", "97.00000000")                   # ...then the market falls through the stop
        # The step expires unsent and is undone (with its breakeven stop); decided again at 97, the
        # position gets a full stop loss, not a stop for what an unsent slice would have left.
        wait_for(lambda: [r for r in execute(dsn, exits, (position_id,))
                          if r[1:] == ("pending", "stop_loss", "2")], 15, what="a full stop loss decided again")
        state = stored_state(dsn, position_id)
        assert state["ladder_steps_done"] == [] and state["stop_moved_to_breakeven"] is False
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    signals = SignalReader(amqp_url(vhost))         # (the outage closed every connection of the vhost)
    try:
        _sent_once_after_the_outage(daemon, dsn, signals, position_id, exits)
    finally:
        signals.close()
    _reconfigure(daemon, exits={**EXITS, "max_signal_age_s": 60})


def test_pending_exit_for_a_position_closed_during_a_broker_outage_is_voided_not_sent(daemon, resources):
    """Regression (issue #8): an exit recorded while the broker was down went out when it came
    back even though its position had been closed meanwhile, and order-manager, seeing nothing to
    reduce, opened a position the other way with it. Now a pending exit is checked against the
    positions row before it is sent: this one is voided, never published."""
    dsn, vhost = resources
    _reconfigure(daemon, exits={"fallback_after_s": 0.5, "poll_interval_s": 0.2, "max_signal_age_s": 60,
                                "rules": {"stop_loss_pct": 2, "cooldown_seconds": 1}})
    wait_for(lambda: daemon.role("exits")["status"].get("mode") == "fallback", 10, what="exits polling")
    position_id = open_position(dsn, "GONEUSDT", "2.00000000", "100", "100.00000000")
    wait_for(lambda: stored_state(dsn, position_id), 10, what="the position watched")
    exits = """SELECT signal_id::text, outbox_state FROM msd.signals
                WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at"""
    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    close_vhost_connections(vhost)
    try:
        mark_price(dsn, "GONEUSDT", "97.00000000")                    # through the stop: an exit waits
        [(exit_id, _)] = wait_for(lambda: execute(dsn, exits, (position_id,)), 10, what="the stop loss recorded")
        mark_price(dsn, "GONEUSDT", "97.00000000", size="0")          # closed by hand during the outage
        wait_for(lambda: stored_state(dsn, position_id) is None, 10, what="the position seen flat")
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    signals = SignalReader(amqp_url(vhost))
    try:
        wait_for(lambda: execute(dsn, exits, (position_id,)) == [(exit_id, "voided")], 20,
                 what="the pending exit voided once the broker is back")
        wait_for(lambda: metric(daemon, "msd_signals_voided_total", mode="exit", reason="position_flat") >= 1, 10,
                 what="the voided exit counted")
        time.sleep(0.5)
        assert signals.for_position(position_id) == []                # order-manager never got it
    finally:
        signals.close()
    _reconfigure(daemon, exits=EXITS)


def _sent_once_after_the_outage(daemon, dsn, signals, position_id, exits):
    [(sent, _)] = wait_for(lambda: signals.for_position(position_id), 20, what="the exit once the broker is back")
    rows = wait_for(lambda: (lambda r: r if all(state != "pending" for _, state, _, _ in r) else None)(
        execute(dsn, exits, (position_id,))), 10, what="nothing left pending")
    expired = {sid for sid, state, _, _ in rows if state == "expired"}
    assert expired and {r[2] for r in rows if r[0] in expired} >= {"take_profit_step", "stop_loss"}
    assert [sid for sid, state, _, _ in rows if state == "sent"] == [sent["signal_id"]]
    assert sent["signal_id"] not in expired and not expired & set(signals.received)
    metadata = sent["metadata"]
    assert (metadata["exit_reason"], metadata["quantity"], metadata["full_close"]) == ("stop_loss", "2", True)
    assert Decimal(metadata["trigger_price"]) == Decimal("97")
    assert metric(daemon, "msd_signals_expired_total", mode="exit") >= len(expired)
    time.sleep(0.5)
    assert len(signals.for_position(position_id)) == 1


def test_status_and_metrics_report_the_memory_of_every_process(daemon):
    status = daemon.status()
    memory = status["memory_rss_bytes"]
    for name in ("supervisor",) + ROLES:
        assert memory[name] > 10_000_000, (name, memory)     # a Python process with its imports
    assert memory["total_without_trainer"] == sum(memory[name] for name in ("supervisor",) + ROLES)
    assert "trainer" in memory
    code, text = daemon.ctl("status")
    assert code == 0 and "memory (RSS): supervisor " in text
    code, raw = daemon.ctl("status", "--json")
    assert code == 0 and json.loads(raw)["result"]["memory_rss_bytes"]["signaller"] > 0
    wait_for(lambda: all(metric(daemon, "msd_process_rss_bytes", role=name) > 0 for name in ("supervisor",) + ROLES),
             10, what="msd_process_rss_bytes of every process")
