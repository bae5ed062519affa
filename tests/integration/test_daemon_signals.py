"""Warm-up trading end to end: the real daemon, broker and database; signals read off the queue.

Every signal a test receives is checked by the independent order-manager rules in
tests/contract (not msd's own validator). Timings are read from the signals' own timestamps.
"""
import time
from collections import Counter
from datetime import datetime

import psycopg2
import pytest
import yaml

from msd.store.neighbours import create_neighbour_tables
from tests.contract.order_manager_rules import assert_accepted
from tests.fixtures.pg import ADMIN_DSN, create_database, drop_database
from tests.fixtures.rabbit import amqp_url, close_vhost_connections, rabbitmqctl
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.market_feed import MarketFeed, SignalTap, drain_queue

pytestmark = pytest.mark.integration


def strategy(sid, assets, *, rate=(100, 100), frequency=0.01, heuristic="random", randomness=0.0,
             cap=1_000_000, seed=1, trigger="schedule"):
    return {"id": sid, "assets": list(assets), "trigger": trigger, "seed": seed,
            "rate": {"rate_per_s": rate[0], "burst": rate[1]},
            "warmup": {"frequency_s": frequency, "heuristic": heuristic, "randomness": randomness,
                       "min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": cap}}


@pytest.fixture
def dsn():
    dsn = create_database()
    with psycopg2.connect(dsn) as conn:     # the neighbours' shared tables exist in production
        create_neighbour_tables(conn)
    yield dsn
    drop_database(dsn)


@pytest.fixture
def make_daemon(tmp_path, dsn, fresh_vhost):
    started = []

    def start(strategies, global_rate=(1000, 1000), conflicts=None, max_signal_age_s=60, tmp=None):
        signaller = {"strategies": strategies, "global_rate": {"rate_per_s": global_rate[0], "burst": global_rate[1]},
                     "max_data_age_s": 2, "conflicts": conflicts or {"policy": "allow"},
                     "max_signal_age_s": max_signal_age_s}
        where = tmp or tmp_path
        d = Daemon(where, base_config(where, dsn, amqp_url(fresh_vhost), signaller=signaller))
        started.append(d)
        d.start()
        d.wait_running("signaller")
        return d

    yield start
    for d in started:
        d.close()


def view(daemon, sid):
    """One strategy's line of the signaller's status ({} until the role has reported it)."""
    return daemon.role("signaller")["status"].get("strategies", {}).get(sid, {})


def stamps(bodies):
    return [datetime.fromisoformat(b["timestamp"].replace("Z", "+00:00")).timestamp() for b in bodies]


def edit_signaller(daemon, **changes):
    cfg = yaml.safe_load(daemon.config_path.read_text())
    cfg["signaller"].update(changes)
    daemon.write_config(cfg)


def test_burst_then_steady_rate_and_a_live_retune(make_daemon, fresh_vhost):
    d = make_daemon([strategy("burst", ["BTCUSDT"], rate=(2, 5))])
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["BTCUSDT"]), SignalTap(url) as tap:
        wait_for(lambda: len(tap.bodies()) >= 9, 15, what="9 signals")
        t = stamps(tap.bodies())
        # A 6th token takes 0.5 s at 2/s: exactly `burst` signals go out at once, i.e. on the
        # turns (every 10 ms, each one committed write and confirmed publish) before the first
        # token comes back. 0.4 s, not 0.25 s: five turns took over 0.25 s on a loaded machine.
        assert sum(1 for x in t if x - t[0] < 0.4) == 5
        assert 0.45 <= t[5] - t[0] <= 0.7          # the 6th waits for the first refilled token
        steady = [b - a for a, b in zip(t[5:], t[6:9])]
        assert all(0.4 <= gap <= 0.7 for gap in steady), steady
        pid, loaded = d.role("signaller")["pid"], d.status()["daemon"]["config_loaded_at"]
        edit_signaller(d, strategies=[strategy("burst", ["BTCUSDT"], rate=(10, 1))])
        wait_for(lambda: d.status()["daemon"]["config_loaded_at"] > loaded, 5, what="reload")
        count = len(tap.bodies())
        wait_for(lambda: len(tap.bodies()) >= count + 12, 10, what="signals at the new rate")
        later = stamps(tap.bodies())[count + 1:count + 12]
        mean_gap = (later[-1] - later[0]) / (len(later) - 1)
        assert 0.07 <= mean_gap <= 0.2, mean_gap
        assert d.role("signaller")["pid"] == pid          # applied live, not by a restart
    for body in tap.bodies():
        assert_accepted(body)


def test_one_second_frequency_matches_within_one_signal(make_daemon, fresh_vhost):
    make_daemon([strategy("every_second", ["ETHUSDT"], frequency=1.0)])
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["ETHUSDT"]), SignalTap(url) as tap:
        wait_for(lambda: len(tap.bodies()) >= 6, 15, what="6 signals")
        t = stamps(tap.bodies())
        in_window = sum(1 for x in t if x - t[0] <= 4.0)
        assert abs(in_window - 5) <= 1, t      # t0, t0+1 … t0+4
    for body in tap.bodies():
        assert_accepted(body)


def test_five_strategies_stay_separate_and_a_stale_asset_stops_only_its_strategy(make_daemon, fresh_vhost):
    strategies = [strategy("slow_btc", ["BTCUSDT"], rate=(1, 1), frequency=0.1, seed=1),
                  strategy("fast_btc", ["BTCUSDT"], rate=(5, 1), frequency=0.1, seed=2),
                  strategy("eth", ["ETHUSDT"], rate=(3, 1), frequency=0.1, seed=3),
                  strategy("sol", ["SOLUSDT"], rate=(3, 1), frequency=0.1, seed=4, trigger="market"),
                  strategy("xrp", ["XRPUSDT"], rate=(5, 5), frequency=0.1, seed=5)]
    d = make_daemon(strategies)
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]) as feed, SignalTap(url) as tap:
        wait_for(lambda: len(tap.bodies("xrp")) >= 2, 10, what="xrp signals while fresh")
        feed.assets.discard("XRPUSDT")            # XRP data goes stale (max_data_age_s: 2)
        wait_for(lambda: d.role("signaller")["status"].get("assets", {}).get("XRPUSDT") == "stale", 10, what="stale")
        stale_at = time.time()
        time.sleep(2.0)
        counts = Counter(b["strategy_id"] for b in tap.bodies())
    assert all(x < stale_at for x in stamps(tap.bodies("xrp")))
    for sid in ("slow_btc", "fast_btc", "eth", "sol"):
        assert counts[sid] >= 2, counts
    assert counts["fast_btc"] > counts["slow_btc"]              # separate buckets, separate rates
    views = d.role("signaller")["status"]["strategies"]
    assert views["xrp"]["dropped"].get("stale", 0) >= 1
    assert all(views[s]["dropped"].get("stale", 0) == 0 for s in ("slow_btc", "fast_btc", "eth", "sol"))
    # the status is reported once a second: it catches up with what the tap saw
    wait_for(lambda: view(d, "fast_btc").get("sent", 0) >= counts["fast_btc"], 5, what="status caught up")
    for body in tap.bodies():
        assert_accepted(body)


def test_broker_outage_every_outbox_signal_published_and_repeated_only_after_a_lost_confirm(
        make_daemon, fresh_vhost, dsn):
    """Delivery is at least once. The age limit is far above the outage, so nothing expires: every
    signal must go out. It may go out twice only if the broker closed the connection while its
    publish waited for the confirm (the broker routes a message before it confirms it, so the
    republish can be a second copy): the outbox logs each such signal by id.

    Regression: this test asserted exactly once and failed now and then with one duplicate. The
    failing run's log showed `broker down: publish to ...: 320 CONNECTION_FORCED` (a publish
    waiting for its confirm when the test closed the connection; the passing runs mostly showed
    `broker down: connect ...`, the close found the publisher idle): a lost confirm, not a bug of
    the outbox. tests/integration/test_outbox.py reproduces it deterministically."""
    d = make_daemon([strategy("steady", ["BTCUSDT"], rate=(20, 1), frequency=0.01)], max_signal_age_s=120)
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["BTCUSDT"]):
        wait_for(lambda: d.role("signaller")["status"].get("published", 0) >= 10, 10, what="signals flowing")
        close_vhost_connections(fresh_vhost)          # a blip: the publisher reconnects on its own
        # An outage: the broker refuses msd (and everyone) on this vhost for a while.
        rabbitmqctl("clear_permissions", "-p", fresh_vhost, "guest")
        close_vhost_connections(fresh_vhost)
        wait_for(lambda: d.role("signaller")["status"].get("outbox_backlog"), 10, what="signals waiting")
        time.sleep(1.0)
        rabbitmqctl("set_permissions", "-p", fresh_vhost, "guest", ".*", ".*", ".*")
        wait_for(lambda: d.role("signaller")["status"].get("published", 0) >= 40, 20, what="flowing again")
        edit_signaller(d, strategies=[])
        time.sleep(1.0)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        wait_for(lambda: _pending(cur) == 0, 20, what="outbox drained")
        cur.execute("SELECT signal_id::text, max(attempts) FROM msd.signals GROUP BY signal_id")
        rows = dict(cur.fetchall())
    on_queue = Counter(body["signal_id"] for body, _ in drain_queue(url))
    unconfirmed = Counter(r["signal_id"] for r in d.log_records() if r.get("unconfirmed") and r["role"] == "signaller")
    assert set(on_queue) == set(rows)       # every recorded signal, and nothing else
    repeated = {sid: n for sid, n in on_queue.items() if n > 1}
    assert all(n - 1 <= unconfirmed[sid] for sid, n in repeated.items()), (repeated, unconfirmed)
    assert all(rows[sid] > 1 for sid in unconfirmed)       # each went out again after its lost confirm
    wait_for(lambda: d.role("signaller")["status"].get("unconfirmed") == sum(unconfirmed.values()), 5,
             what="the status counts the lost confirms the log names")
    assert any(attempts > 1 for attempts in rows.values()), "the outage should have delayed some signals"


def test_signal_expiring_during_a_broker_outage_is_not_sent_late(make_daemon, fresh_vhost, dsn):
    """Regression: a signal that waited in the outbox through an outage was published whenever
    the broker returned, however old. Now one older than signaller.max_signal_age_s expires."""
    d = make_daemon([strategy("steady", ["BTCUSDT"], rate=(20, 1), frequency=0.01)], max_signal_age_s=1)
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["BTCUSDT"]):
        wait_for(lambda: d.role("signaller")["status"].get("published", 0) >= 5, 10, what="signals flowing")
        rabbitmqctl("clear_permissions", "-p", fresh_vhost, "guest")
        close_vhost_connections(fresh_vhost)
        # Signals decided in the outage's first seconds (until the market data it also stops goes
        # stale) wait in the outbox; after 1 s they expire. How many depends on the machine's load.
        wait_for(lambda: d.role("signaller")["status"].get("expired", 0) >= 1, 30, what="signals expiring")
        time.sleep(1.5)        # anything still pending from the outage is older than the limit now
        rabbitmqctl("set_permissions", "-p", fresh_vhost, "guest", ".*", ".*", ".*")
        published = d.role("signaller")["status"]["published"]
        wait_for(lambda: d.role("signaller")["status"].get("published", 0) >= published + 5, 20,
                 what="flowing again")
        edit_signaller(d, strategies=[])
        time.sleep(1.0)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        wait_for(lambda: _pending(cur) == 0, 20, what="outbox drained")
        cur.execute("SELECT signal_id::text, outbox_state, last_error, expired_at IS NOT NULL FROM msd.signals")
        rows = {sid: (state, error, stamped) for sid, state, error, stamped in cur.fetchall()}
    expired = {sid for sid, (state, _, _) in rows.items() if state == "expired"}
    sent = {sid for sid, (state, _, _) in rows.items() if state == "sent"}
    assert expired and sent and expired | sent == set(rows)
    assert all(rows[sid][1].startswith("expired unsent after") and rows[sid][2] for sid in expired)
    on_queue = Counter(body["signal_id"] for body, _ in drain_queue(url))
    assert set(on_queue) == sent and not expired & set(on_queue)
    # A second copy only of a signal whose confirm was lost (it is sent again, never expired).
    unconfirmed = Counter(r["signal_id"] for r in d.log_records() if r.get("unconfirmed") and r["role"] == "signaller")
    assert all(n - 1 <= unconfirmed[sid] for sid, n in on_queue.items()), (on_queue, unconfirmed)
    audit = [r for r in d.log_records() if r.get("message", "").startswith("signal ") and "expired unsent" in r["message"]]
    assert {r["signal_id"] for r in audit} == expired


def test_random_explorer_continues_its_stream_after_a_restart(make_daemon, fresh_vhost, dsn, tmp_path):
    """Regression: after a restart the random explorer repeated its first decisions from the seed."""
    explorer = strategy("explorer", ["BTCUSDT"], rate=(5, 1), frequency=0.1, seed=11)
    url = amqp_url(fresh_vhost)
    decisions = []
    for run in range(2):
        (tmp_path / f"run{run}").mkdir()
        d = make_daemon([explorer], tmp=tmp_path / f"run{run}")
        with MarketFeed(url, ["BTCUSDT"]):
            wait_for(lambda: d.role("signaller")["status"].get("published", 0) >= 4, 15, what="decisions")
            edit_signaller(d, strategies=[])
            time.sleep(0.5)
        d.close()
        decisions.append([(b["signal_type"], b["amount"], b["confidence"]) for b, _ in drain_queue(url)])
    first, second = decisions
    assert len(first) >= 4 and len(second) >= 4
    assert not set(first) & set(second), "the second run repeated decisions of the first"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT seed, draws FROM msd.strategy_random_state WHERE strategy_id = 'explorer'")
        seed, draws = cur.fetchone()
    assert seed == "11" and draws >= len(first) + len(second)


def _pending(cur):
    cur.execute("SELECT count(*) FROM msd.signals WHERE outbox_state = 'pending'")
    return cur.fetchone()[0]


def _sql(dsn, statement, args=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, args)


def test_exposure_limit_and_unknown_exposure_fail_closed(make_daemon, fresh_vhost, dsn):
    _sql(dsn, "INSERT INTO positions (asset, size, average_entry_price, current_price) "
              "VALUES ('BTCUSDT', 0.002, 50000, 50000)")        # 100 USDT long: at the cap
    d = make_daemon([strategy("capped", ["BTCUSDT"], rate=(10, 5), frequency=0.05, randomness=1.0, cap=100)])
    url = amqp_url(fresh_vhost)
    name = dsn.rsplit("/", 1)[1]
    with MarketFeed(url, ["BTCUSDT"]), SignalTap(url) as tap:
        # The exit role watches the open row too (and may exit it): only the strategy's signals count here.
        wait_for(lambda: len(tap.bodies("capped")) >= 5, 10, what="signals")
        assert tap.bodies("capped")[0]["signal_type"] == "sell"        # at the cap: no buy first
        # Replay the cap: position (100 USDT) plus every earlier signal, which msd counts as
        # exposure until it shows up as an order (none does here: there is no order-manager).
        exposure = 100.0
        for body in tap.bodies("capped"):
            signed = body["amount"] if body["signal_type"] == "buy" else -body["amount"]
            if signed > 0:
                assert exposure + signed <= 100.0 + 1e-9, (exposure, body)
            exposure += signed
        wait_for(lambda: view(d, "capped").get("dropped", {}).get("exposure_limit"),
                 5, what="exposure_limit counted")
        # The database goes away: the exposure cannot be checked, so nothing at all is emitted.
        _sql(ADMIN_DSN, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        _sql(ADMIN_DSN, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            wait_for(lambda: view(d, "capped").get("degraded"), 10,
                     what="strategy degraded")
            before = len(tap.bodies("capped"))
            time.sleep(1.5)
            assert len(tap.bodies("capped")) == before
            assert "strategy capped" in d.role("signaller")["status"]["degraded"]
        finally:
            _sql(ADMIN_DSN, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        wait_for(lambda: view(d, "capped").get("degraded") is None, 15,
                 what="recovered")
        # The shared table disappears (or is malformed): fail closed again, saying why.
        _sql(dsn, "DROP TABLE positions")
        wait_for(lambda: "positions" in (view(d, "capped").get("degraded") or ""),
                 10, what="degraded naming the missing table")
        before = len(tap.bodies("capped"))
        time.sleep(1.0)
        assert len(tap.bodies("capped")) == before
    assert d.role("signaller")["restarts"] == 0
    for body in tap.bodies():
        assert_accepted(body)


def _opposing_within(bodies, window_s):
    rows = sorted(zip(stamps(bodies), bodies), key=lambda r: r[0])
    return [(a["strategy_id"], b["strategy_id"]) for i, (ta, a) in enumerate(rows) for tb, b in rows[i + 1:]
            if tb - ta <= window_s and a["strategy_id"] != b["strategy_id"] and a["signal_type"] != b["signal_type"]]


def test_conflicting_signals_follow_the_configured_policy(make_daemon, fresh_vhost):
    pair = [strategy("left", ["BTCUSDT"], rate=(10, 2), frequency=0.1, randomness=1.0, seed=11),
            strategy("right", ["BTCUSDT"], rate=(10, 2), frequency=0.1, randomness=1.0, seed=12)]
    d = make_daemon(pair, conflicts={"policy": "suppress_later", "window_s": 60})
    url = amqp_url(fresh_vhost)
    with MarketFeed(url, ["BTCUSDT"]), SignalTap(url) as tap:
        wait_for(lambda: sum(view(d, s).get("suppressed", 0) for s in ("left", "right"))
                 >= 3, 15, what="suppressed conflicts")
        assert _opposing_within(tap.bodies(), 60) == []
        seen = len(tap.bodies())
        edit_signaller(d, conflicts={"policy": "allow", "window_s": 60})
        wait_for(lambda: _opposing_within(tap.bodies()[seen:], 60), 15, what="independent strategies")
    for body in tap.bodies():
        assert_accepted(body)


def test_every_market_update_is_decided_on_or_counted_as_coalesced(make_daemon, fresh_vhost):
    """Issue 13: ticks may be merged into a newer tick of the same asset before a decision turn,
    but each one is then counted; none is lost. A burst makes some coalesce."""
    import pika
    from tests.integration.market_feed import ticker_event
    quick = strategy("quick", ["BTCUSDT", "ETHUSDT"], trigger="market", frequency=3600)
    d = make_daemon([quick])
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(fresh_vhost)))
    channel = conn.channel()
    for i in range(300):
        asset = ("BTCUSDT", "ETHUSDT")[i % 2]
        channel.basic_publish("", "ws-gateway.ticker", ticker_event(asset, 100.0 + i))
    conn.close()
    status = wait_for(lambda: (s := d.role("signaller")["status"]).get("market_updates") == 300 and s, 60,
                      what="all 300 updates applied")
    status = wait_for(lambda: (s := d.role("signaller")["status"])["strategies"]["quick"]["decisions"]
                      + s["coalesced"] == 300 and s, 10, what="decisions and coalesced updates reported")
    assert status["market_updates_by_asset"] == {"BTCUSDT": 150, "ETHUSDT": 150}
    assert sum(status["coalesced_by_asset"].values()) == status["coalesced"]
    assert d.role("consumer")["status"]["dropped"] == 0
