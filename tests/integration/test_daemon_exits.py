"""The exit engine end to end: real broker, real database, the daemon as a subprocess.

Position updates go in exactly as position-manager publishes them (CONTRACTS §3), prices come
from the shared `positions` table and ws-gateway tickers, and exit signals are read off the
signals queue and checked by the test suite's own reading of order-manager's rules (§1.2).
"""
import os
import signal
import urllib.request
import uuid
from datetime import timedelta
from decimal import Decimal

import time

import pytest
import yaml

from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.exit_helpers import (
    POSITIONS_QUEUE, SignalReader, execute, mark_price, open_position, position_update, publish, stored_state,
    utc_now,
)
from tests.integration.market_feed import ticker_event, trade_event

pytestmark = pytest.mark.integration

EXITS = {
    "fallback_after_s": 3600, "poll_interval_s": 0.2, "debounce_s": 0.3, "debounce_max_delay_s": 1.0,
    "asset_rate": {"rate_per_s": 1, "burst": 3},
    "rules": {"stop_loss_pct": 2, "take_profit": {"pct": 50}, "cooldown_seconds": 60,
              "trailing": {"activation_pct": 1.5, "distance_pct": 0.8}},
}


@pytest.fixture(scope="module")
def daemon(resources, tmp_path_factory):
    dsn, vhost = resources
    tmp = tmp_path_factory.mktemp("exits")
    d = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), exits=EXITS))
    d.start()
    d.wait_running("exits")
    yield d
    d.close()


@pytest.fixture
def signals(resources):
    reader = SignalReader(amqp_url(resources[1]))
    yield reader
    reader.close()


def one_signal(signals, position_id, what):
    return wait_for(lambda: signals.for_position(position_id), 15, what=what)


def exits_status(daemon):
    return daemon.role("exits")["status"]


def test_contract_updates_produce_closing_signals_in_usdt(daemon, resources, channel, signals):
    dsn, _ = resources
    # The long's mark reaches its stop only just before its event (position-manager writes the row,
    # then publishes): at 97 from the start, the role's 5 s table read could decide it first, with a
    # trace of its own, while the test waits for the ticker (seen under load).
    long_id = open_position(dsn, "SLOSSUSDT", "2.00000000", "100", "100.00000000")
    short_id = open_position(dsn, "TPSHORTUSDT", "-3.00000000", "100", "40.00000000")
    # The mark in the table is older than the ticker, so the ticker's price must win.
    market_id = open_position(dsn, "MKTUSDT", "1.50000000", "100", "100.00000000",
                              last_updated=utc_now() - timedelta(seconds=30))
    publish(channel, "ws-gateway.ticker", ticker_event("MKTUSDT", 97.0))
    wait_for(lambda: exits_status(daemon).get("priced_assets", 0) >= 1, 10, what="ticker reached exits")
    mark_price(dsn, "SLOSSUSDT", "97.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(long_id, "SLOSSUSDT", "2.00000000", "t-long",
                                                      unrealized_pnl_pct=None, time_held_minutes=-3))
    publish(channel, POSITIONS_QUEUE, position_update(short_id, "TPSHORTUSDT", "-3.00000000", "t-short",
                                                      unrealized_pnl="0E-8", unrealized_pnl_pct="0E+8"))
    publish(channel, POSITIONS_QUEUE, position_update(market_id, "MKTUSDT", "1.50000000"))

    [(long_exit, headers)] = one_signal(signals, long_id, "stop-loss exit")
    # Amount and snapshot price are exact decimal strings: amount / price is exactly the size.
    assert (long_exit["signal_type"], long_exit["asset"], long_exit["amount"]) == ("sell", "SLOSSUSDT", "194")
    assert headers["trace_id"] == long_exit["trace_id"] == "t-long"
    meta = long_exit["metadata"]
    assert meta["exit_reason"] == "stop_loss" and meta["price_source"] == "positions_table"
    assert (Decimal(meta["entry_price"]), Decimal(meta["trigger_price"]), Decimal(meta["fraction"])) == (100, 97, 1)
    assert Decimal(meta["pnl_pct"]) == -3 and meta["rule_params"]["stop_loss_pct"] == "2"
    assert long_exit["market_data_snapshot"]["price"] == "97" and long_exit["strategy_id"] == "exit-engine"

    [(short_exit, _)] = one_signal(signals, short_id, "take-profit exit of the short")
    assert (short_exit["signal_type"], short_exit["amount"]) == ("buy", "120")
    assert short_exit["metadata"]["exit_reason"] == "take_profit"
    assert short_exit["metadata"]["position_side"] == "short"

    [(market_exit, _)] = one_signal(signals, market_id, "exit priced by the ticker")
    assert market_exit["metadata"]["price_source"] == "market_last_price"
    assert (market_exit["amount"], Decimal(market_exit["metadata"]["trigger_price"])) == ("145.5", 97)
    modes = execute(dsn, "SELECT DISTINCT mode FROM msd.signals WHERE strategy_id = 'exit-engine'")
    assert modes == [("exit",)]


def test_burst_of_20_updates_is_decided_once_on_the_tables_size_and_not_again_while_in_flight(daemon, resources,
                                                                                            channel, signals):
    dsn, _ = resources
    pid = open_position(dsn, "BURSTUSDT", "20.00000000", "100", "97.00000000")
    for size in range(1, 21):
        publish(channel, POSITIONS_QUEUE, position_update(pid, "BURSTUSDT", f"{size}.00000000", f"t-burst-{size}"))
    [(exit_signal, _)] = one_signal(signals, pid, "one exit for the burst")
    # 20 x 97: the size is the table's (an event only triggers a re-read), the trace the newest event's.
    assert (exit_signal["amount"], exit_signal["trace_id"]) == ("1940", "t-burst-20")
    held_before = exits_status(daemon).get("exits_suppressed", {}).get("in_flight", 0)
    for size in range(1, 6):
        publish(channel, POSITIONS_QUEUE, position_update(pid, "BURSTUSDT", f"{size}.00000000"))
    wait_for(lambda: exits_status(daemon).get("exits_suppressed", {}).get("in_flight", 0) > held_before, 15,
             what="the later updates held back while the exit is in flight")
    assert len(signals.for_position(pid)) == 1


def test_trailing_peak_survives_killing_the_exits_role(daemon, resources, channel, signals):
    dsn, _ = resources
    pid = open_position(dsn, "TRAILUSDT", "1.00000000", "100", "110.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "TRAILUSDT", "1.00000000"))
    wait_for(lambda: (stored_state(dsn, pid) or {}).get("extreme_price") == "110.00000000", 15,
             what="peak 110 stored")
    before = daemon.role("exits")
    os.kill(before["pid"], signal.SIGKILL)
    daemon.wait_running("exits", timeout=30, other_than_pid=before["pid"])
    # 109 is below the trailing stop under the 110 peak (109.12) but far above one under a
    # peak rebuilt from the entry price: only the restored peak fires.
    mark_price(dsn, "TRAILUSDT", "109.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "TRAILUSDT", "1.00000000"))
    [(exit_signal, _)] = one_signal(signals, pid, "trailing stop after the restart")
    meta = exit_signal["metadata"]
    assert meta["exit_reason"] == "trailing_stop" and Decimal(meta["rule_params"]["extreme_price"]) == 110
    assert exit_signal["signal_type"] == "sell" and exit_signal["amount"] == "109"


def test_new_position_on_an_asset_whose_old_one_closed_does_not_inherit_its_peak(daemon, resources, channel,
                                                                                 signals):
    dsn, _ = resources
    pid = open_position(dsn, "REOPENUSDT", "1.00000000", "100", "110.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "REOPENUSDT", "1.00000000"))
    wait_for(lambda: (stored_state(dsn, pid) or {}).get("extreme_price") == "110.00000000", 15, what="old peak")
    mark_price(dsn, "REOPENUSDT", "110.00000000", size="0E-8")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "REOPENUSDT", "0E-8"))
    wait_for(lambda: stored_state(dsn, pid) is None, 15, what="state dropped on close")
    # position-manager keeps one row per asset and mode: the new position reuses the id.
    open_position(dsn, "REOPENUSDT", "1.00000000", "100", "109.00000000", position_id=pid,
                  created_at=utc_now())
    publish(channel, POSITIONS_QUEUE, position_update(pid, "REOPENUSDT", "1.00000000"))
    # A later stop loss on another asset is decided after the reopened position was evaluated.
    barrier = open_position(dsn, "BARRIERUSDT", "1.00000000", "100", "90.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(barrier, "BARRIERUSDT", "1.00000000"))
    one_signal(signals, barrier, "barrier exit")
    stored = wait_for(lambda: (lambda s: s if s.get("row") else None)(stored_state(dsn, pid) or {}), 5,
                      what="the reopened position's state")
    assert Decimal(stored["extreme_price"]) == 109 and stored["opened_by"] == "event"
    assert signals.for_position(pid) == []


def test_invalid_or_incomplete_updates_are_logged_counted_and_skipped(daemon, resources, channel, signals):
    dsn, _ = resources
    no_entry = open_position(dsn, "NOENTRYUSDT", "1.00000000", None, "50.00000000")
    valid = open_position(dsn, "VALIDUSDT", "1.00000000", "100", "95.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(str(uuid.uuid4()), "GHOSTUSDT", "1.00000000", "t-ghost"))
    publish(channel, POSITIONS_QUEUE, position_update(no_entry, "NOENTRYUSDT", "1.00000000", "t-no-entry"))
    publish(channel, POSITIONS_QUEUE, position_update(valid, "VALIDUSDT", "1.00000000"))
    one_signal(signals, valid, "the valid position's exit")
    skipped = wait_for(lambda: [r for r in daemon.log_records()
                                if r.get("message", "").startswith("position not evaluated")
                                and r.get("trace_id") in ("t-ghost", "t-no-entry")], 10, what="skip log lines")
    reasons = {r["trace_id"]: r["reason"] for r in skipped}
    assert reasons == {"t-ghost": "position_not_in_table", "t-no-entry": "incomplete_position"}
    assert {"position_id", "asset", "size", "update_source", "event_timestamp"} <= set(skipped[0])
    counted = wait_for(lambda: (lambda c: c if {"position_not_in_table", "incomplete_position"} <= set(c) else None)(
        exits_status(daemon).get("invalid_updates", {})), 10, what="skips counted in status")
    assert min(counted.values()) >= 1 and exits_status(daemon)["evaluation_errors"] == 0


def test_fallback_polls_the_positions_table_and_returns_to_events(daemon, resources, channel, signals):
    dsn, _ = resources
    config = yaml.safe_load(daemon.config_path.read_text())
    config["exits"] = {**EXITS, "fallback_after_s": 0.5, "poll_interval_s": 0.3}
    daemon.write_config(config)
    assert daemon.ctl("reload")[0] == 0
    wait_for(lambda: exits_status(daemon).get("mode") == "fallback", 15, what="fallback mode")
    port = daemon.config["metrics"]["port"]
    wait_for(lambda: "msd_exits_fallback 1.0" in urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode(), 10, what="fallback metric")
    # No update is ever published for this position: only the poll can find it.
    pid = open_position(dsn, "POLLEDUSDT", "4.00000000", "100", "97.50000000")
    [(exit_signal, _)] = one_signal(signals, pid, "exit from the poll")
    assert exit_signal["metadata"]["trigger"] == "poll" and exit_signal["amount"] == "390"
    # Back to a long quiet period first, so the switch back is not undone before it is seen.
    config["exits"] = EXITS
    daemon.write_config(config)
    assert daemon.ctl("reload")[0] == 0
    other = open_position(dsn, "BACKUSDT", "1.00000000", "100", "100.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(other, "BACKUSDT", "1.00000000"))
    wait_for(lambda: exits_status(daemon).get("mode") == "event", 10, what="back to event mode")


def test_late_update_of_a_position_the_table_shows_flat_sends_no_exit(daemon, resources, channel, signals):
    """Regression: the size came from the event alone, so a late or redelivered update re-opened
    a closed position and a stop loss on it would have opened the reverse side."""
    dsn, _ = resources
    position_id = open_position(dsn, "STALEUSDT", "2.00000000", "100", "90.00000000")   # at a stop loss
    execute(dsn, "UPDATE positions SET size = 0, last_updated = now() AT TIME ZONE 'utc' WHERE id = %s "
                 "RETURNING id", (position_id,))
    late = (utc_now() - timedelta(seconds=30)).isoformat()
    publish(channel, POSITIONS_QUEUE, position_update(position_id, "STALEUSDT", "2.00000000", "t-late",
                                                      timestamp=late))
    wait_for(lambda: exits_status(daemon).get("invalid_updates", {}).get("stale_update"), 10,
             what="the late update recognised")
    time.sleep(0.5)
    assert signals.for_position(position_id) == []


def test_exits_do_not_pile_up_in_the_outbox_while_the_broker_is_down(daemon, resources):
    """Regression: during an outage each cooldown produced another full-size exit for the same
    position; sent together on recovery, the second one would have opened the reverse side. The
    first exit is in flight (recorded, effect not seen) and holds every later one back."""
    import yaml
    from tests.fixtures.rabbit import close_vhost_connections, rabbitmqctl
    dsn, vhost = resources
    cfg = yaml.safe_load(daemon.config_path.read_text())
    cfg["exits"].update(fallback_after_s=1, poll_interval_s=0.2)
    cfg["exits"]["rules"]["cooldown_seconds"] = 1
    daemon.write_config(cfg)
    wait_for(lambda: exits_status(daemon).get("mode") == "fallback", 10, what="fallback polling")
    position_id = open_position(dsn, "OUTAGEUSDT", "2.00000000", "100", "100.00000000")
    held_before = exits_status(daemon).get("exits_suppressed", {}).get("in_flight", 0)
    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    close_vhost_connections(vhost)
    try:
        mark_price(dsn, "OUTAGEUSDT", "97.00000000")             # stop loss, seen by the poll
        rows = "SELECT outbox_state FROM msd.signals WHERE body->'metadata'->>'position_id' = %s"
        wait_for(lambda: execute(dsn, rows, (position_id,)), 10, what="exit recorded")
        # A hold is counted once per position while it lasts (review 12), not per evaluation.
        wait_for(lambda: exits_status(daemon).get("exits_suppressed", {}).get("in_flight", 0) > held_before, 10,
                 what="later exits held back while the first is in flight")
        assert execute(dsn, rows, (position_id,)) == [("pending",)]
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    # Once it is out, nothing here executes it, so after the cooldown the still-open position
    # may exit again: what matters is that the queued one went out, alone and first.
    first = rows + " ORDER BY created_at LIMIT 1"
    wait_for(lambda: execute(dsn, first, (position_id,)) == [("sent",)], 20, what="the one exit sent")


def test_fast_rise_and_fall_arms_the_trailing_stop_from_the_true_peak(daemon, resources, channel, signals):
    """Regression (issue 8): under continuous ticks only the price current when the debouncer
    released was folded into the peak; a spike shorter than that never moved it (SC-016)."""
    dsn, _ = resources
    pid = open_position(dsn, "TRUEPKUSDT", "1.00000000", "100", "100.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "TRUEPKUSDT", "1.00000000"))
    wait_for(lambda: (stored_state(dsn, pid) or {}).get("row"), 10, what="position watched, its row read")
    rise = [f"{100 + i * 0.25:.2f}" for i in range(14)]                 # 100 .. 103.25
    for price in rise + ["103.31", "102.9", "102.6", "102.45"]:         # one tick at the peak
        publish(channel, "ws-gateway.trade", trade_event("TRUEPKUSDT", price))
    [(exit_signal, _)] = one_signal(signals, pid, "trailing stop from the 103.31 peak")
    meta = exit_signal["metadata"]
    # 103.31 x (1 - 0.8 %) = 102.48352: only a peak of 103.31 puts 102.45 through the stop; the
    # price at any debounce release (102.45) would have left the peak at 100 and the stop unarmed.
    assert meta["exit_reason"] == "trailing_stop" and Decimal(meta["rule_params"]["extreme_price"]) == Decimal("103.31")


def test_after_a_restart_a_quiet_positions_stop_loss_fires_from_price_ticks_alone(daemon, resources, channel,
                                                                                  signals):
    """Regression (issue 8): restored positions were not watched; only a new position_updated or
    the fallback poll would evaluate them."""
    dsn, _ = resources
    pid = open_position(dsn, "QUIETUSDT", "1.00000000", "100", "100.00000000")     # no update, ever
    before = daemon.role("exits")
    os.kill(before["pid"], signal.SIGKILL)
    daemon.wait_running("exits", timeout=30, other_than_pid=before["pid"])
    wait_for(lambda: stored_state(dsn, pid), 10, what="the new exits process watches every open row")
    publish(channel, "ws-gateway.trade", trade_event("QUIETUSDT", "97.5"))
    [(exit_signal, _)] = one_signal(signals, pid, "stop loss from a tick")
    assert exit_signal["metadata"]["exit_reason"] == "stop_loss" and exit_signal["metadata"]["trigger"] == "price"


def test_an_absurd_event_size_never_sizes_an_exit(daemon, resources, channel, signals):
    """Regression (issue 10 overlap): an event of size "-1e10" on a real open long of 2; the exit
    is sized from the positions table only, never above |size| x price."""
    dsn, _ = resources
    pid = open_position(dsn, "ABSURDUSDT", "2.00000000", "100", "97.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "ABSURDUSDT", "-1e10", "t-absurd"))
    publish(channel, POSITIONS_QUEUE, position_update(pid, "ABSURDUSDT", "2.00000000", "t-real"))
    [(exit_signal, _)] = one_signal(signals, pid, "one exit of the table's size")
    assert (exit_signal["signal_type"], exit_signal["amount"], exit_signal["metadata"]["quantity"]) == \
        ("sell", "194", "2")
    time.sleep(0.5)
    assert len(signals.for_position(pid)) == 1


def test_a_lone_surrogate_position_id_does_not_take_the_exits_role_down(daemon, resources, channel, signals):
    """Regression (DESIGN §9): such an update crashed the exits role until it went FATAL."""
    dsn, _ = resources
    before = daemon.role("exits")
    body = position_update(str(uuid.uuid4()), "SURRUSDT", "1.00000000").replace(
        b'"position_id": "', b'"position_id": "\\ud800', 1)
    publish(channel, POSITIONS_QUEUE, body)
    pid = open_position(dsn, "AFTERSURRUSDT", "1.00000000", "100", "97.00000000")
    publish(channel, POSITIONS_QUEUE, position_update(pid, "AFTERSURRUSDT", "1.00000000"))
    one_signal(signals, pid, "the next position's exit")
    # The consumer's codec now refuses such text at the edge (issue 10), so the update is parked
    # there; the exits role's own containment of it is pinned in-process (test_exit_role.py).
    parked = "SELECT reason FROM msd.dead_letters WHERE encode(payload, 'escape') LIKE '%%SURRUSDT%%'"
    assert wait_for(lambda: execute(dsn, parked), 5, what="the update dead-lettered") == [("bad_text",)]
    after = daemon.role("exits")
    assert (after["pid"], after["state"]) == (before["pid"], "RUNNING")
