"""The learning lifecycle through the real daemon (issue 9): a cancelled run that had promoted
one strategy still switches the signaller; a cancelled schedule run is resumed with its full
scope; a paused strategy sends nothing and resumes on `msd-ctl resume` (and a spent warm-up
pauses by itself, loudly); the online challenger is promoted on a learnable stream and never
on noise."""
import time
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from msd import ctl
from msd.learning.job import train_strategies
from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.neighbours import create_neighbour_tables
from msd.store.versions import rollback
from tests import learning_data
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.market_feed import MarketFeed, SignalTap, publish_history

pytestmark = pytest.mark.integration


def minutes_ago(minutes: int) -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes)


def rows(dsn, sql, args=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def strategy(sid, asset="BTCUSDT", **warmup):
    return {"id": sid, "assets": [asset], "rate": {"rate_per_s": 10, "burst": 5},
            "warmup": {"frequency_s": 0.3, "min_amount_usdt": 10, "max_amount_usdt": 20,
                       "max_exposure_usdt": 1_000_000, **warmup}}


@pytest.fixture
def dsn():
    dsn = create_database()
    apply_migrations(dsn)
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    yield dsn
    drop_database(dsn)


def config(tmp_path, dsn, vhost, strategies, **trainer):
    training = learning_data.params(models_dir=str(tmp_path / "models"), confidence_threshold=0.5)
    return base_config(tmp_path, dsn, amqp_url(vhost),
                       signaller={"strategies": strategies, "global_rate": {"rate_per_s": 100, "burst": 100},
                                  "conflicts": {"policy": "allow", "window_s": 1}},
                       trainer={"data_threshold": None, "schedule": None, "check_interval_s": 0.3,
                                "training": training, **trainer})


def messages(d):
    return [r.get("message") or "" for r in d.log_records()]


def test_a_cancelled_run_that_had_promoted_one_strategy_still_switches_the_signaller(dsn, fresh_vhost, tmp_path):
    with psycopg2.connect(dsn) as conn:
        learning_data.insert(conn, learning_data.synthetic(1200, strength=4.0, seed=1, start=minutes_ago(1700),
                                                           strategy="alpha"))
    # Only the supervisor's notice can switch it: the signaller's own check runs once at start.
    cfg = config(tmp_path, dsn, fresh_vhost, [strategy("alpha"), strategy("beta")],
                 check_interval_s=3600, job="tests.jobs:train_first_then_hang")
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        d.wait_running("signaller")
        d.call("retrain")
        wait_for(lambda: any(m.startswith("first strategy done: alpha v1 promoted=True") for m in messages(d)),
                 60, what="alpha promoted inside the run")
        assert d.role("signaller")["status"]["strategies"]["alpha"]["mode"] == "warmup"
        d.call("retrain", strategy="beta")            # cancels the run that is "training beta"
        wait_for(lambda: any(r["outcome"] == "cancelled" for r in d.status()["trainer"]["recent"]), 20,
                 what="the run cancelled")
        view = wait_for(lambda: d.role("signaller")["status"]["strategies"]["alpha"]["model_version"] == 1
                        and d.role("signaller")["status"]["strategies"]["alpha"], 10, what="alpha switched")
        assert view["mode"] == "model"
        assert any("training request 1 cancelled" in m for m in messages(d))
    finally:
        d.close()


def test_a_cancelled_schedule_run_is_resumed_with_its_full_scope(dsn, fresh_vhost, tmp_path):
    rows(dsn, "INSERT INTO msd.schedule_state (name, next_run_at) VALUES ('training', now() - interval '1 minute') "
              "RETURNING name")
    cfg = config(tmp_path, dsn, fresh_vhost, [strategy("alpha"), strategy("beta")],
                 schedule={"every_s": 3600}, job="tests.jobs:report_scope_then_hang")
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        scope = lambda: [r for r in d.log_records() if (r.get("message") or "").startswith("training scope")]  # noqa: E731
        wait_for(lambda: scope(), 20, what="the scheduled run started")
        assert scope()[0]["scope"] is None                     # the schedule trains every strategy
        assert d.ctl("retrain", "--strategy", "beta")[0] == 0  # a narrower request cancels it
        second = wait_for(lambda: len(scope()) >= 2 and scope()[1], 20, what="the next run")
        assert second["scope"] is None                         # ...but the broad scope is kept
        recent = d.status()["trainer"]["recent"]
        assert recent[0]["outcome"] == "cancelled" and recent[0]["request_id"] == 1
        assert "merged with request 1" in d.status()["trainer"]["running"]["reason"]
    finally:
        d.close()


def test_a_paused_strategy_sends_nothing_and_resumes_on_msd_ctl_resume(dsn, fresh_vhost, tmp_path):
    cfg = config(tmp_path, dsn, fresh_vhost,
                 [strategy("steady", heuristic="random"), strategy("brief", heuristic="random", max_duration_s=1)])
    d = Daemon(tmp_path, cfg)
    url = amqp_url(fresh_vhost)
    try:
        d.start()
        d.wait_running("signaller")
        publish_history(url, "BTCUSDT")
        with MarketFeed(url, ["BTCUSDT"]), SignalTap(url) as tap:
            wait_for(lambda: tap.bodies("steady"), 20, what="signals of steady")
            # A warm-up whose duration is spent without a promoted model pauses itself, loudly.
            wait_for(lambda: d.role("signaller")["status"]["strategies"]["brief"]["mode"] == "paused", 20,
                     what="brief paused")
            alert = next(r for r in d.log_records() if r.get("alert") == "warmup_duration_spent")
            assert alert["level"] == "ERROR" and alert["message"].startswith("ALERT: strategy brief paused")
            assert "warm-up paused brief" in d.role("signaller")["status"]["degraded"]
            code, out = d.ctl("status")
            assert code == 0 and "warm-up steady: spent" in out and "PAUSED" in out
            # An operator pause stops entries at once; exits are not touched.
            assert ctl.main(["-c", str(d.config_path), "pause", "--strategy", "steady"]) == 0
            wait_for(lambda: d.role("signaller")["status"]["strategies"]["steady"]["mode"] == "paused", 10,
                     what="steady paused")
            seen = {s: len(tap.bodies(s)) for s in ("steady", "brief")}
            time.sleep(1.5)                                     # five signal periods
            assert {s: len(tap.bodies(s)) for s in ("steady", "brief")} == seen
            assert ctl.main(["-c", str(d.config_path), "resume", "--strategy", "steady"]) == 0
            wait_for(lambda: len(tap.bodies("steady")) > seen["steady"], 10, what="steady signalling again")
        audit = rows(dsn, "SELECT strategy_id, to_mode, event FROM msd.mode_transitions "
                          "WHERE event IN ('pause', 'resume') ORDER BY id")
        assert audit == [("brief", "paused", "pause"), ("steady", "paused", "pause"), ("steady", "warmup", "resume")]
        [(cause,)] = rows(dsn, "SELECT cause FROM msd.strategy_pauses")
        assert cause == "duration"
    finally:
        d.close()


def _active_on_noise(dsn, models_dir, sid, seed, asset):
    """v1 of `sid`: trained on outcomes shuffled between decisions, activated by an operator."""
    db = Database(dsn)
    try:
        with db.transaction() as conn:
            learning_data.insert(conn, learning_data.synthetic(1200, strength=4.0, seed=seed, strategy=sid,
                                                               asset=asset, start=minutes_ago(16000),
                                                               shuffle_outcomes=True,
                                                               order_prefix=f"{sid}-old"))
        request = {"id": "setup", "strategy": sid, "params": learning_data.params(models_dir=models_dir)}
        ctx = type("Ctx", (), {"config": None, "beat": lambda self: None})()
        assert train_strategies(ctx, db, request)["strategies"][sid]["promoted"] is False
        with db.transaction() as conn:
            rollback(conn, sid, 1, reason="operator", now=datetime.now(timezone.utc))
    finally:
        db.close()


def test_the_online_challenger_is_promoted_on_a_learnable_stream_and_never_on_noise(dsn, fresh_vhost, tmp_path):
    models_dir = str(tmp_path / "models")
    _active_on_noise(dsn, models_dir, "learner", 1, "BTCUSDT")
    _active_on_noise(dsn, models_dir, "noisy", 2, "ETHUSDT")
    with psycopg2.connect(dsn) as conn:
        # Decisions 20 minutes apart: longer than horizon + bar lag (17 min), so each outcome is
        # independent evidence for the net-return bound (calls closer than that share moves).
        for sid, strength, seed, asset in (("learner", 4.0, 3, "BTCUSDT"), ("noisy", 0.0, 4, "ETHUSDT")):
            learning_data.insert(conn, learning_data.synthetic(700, strength=strength, seed=seed, strategy=sid,
                                                               asset=asset, start=minutes_ago(14500), step_s=1200,
                                                               order_prefix=f"{sid}-new"))
    cfg = config(tmp_path, dsn, fresh_vhost, [strategy("learner"), strategy("noisy", "ETHUSDT")],
                 online={"window": 200, "learning_rate": 0.1, "lookback_s": 30 * 86400})
    # blocks of 200 decisions: 50 calibrate, 17 embargo, ~133 scored; two passes publish
    cfg["trainer"]["training"].update(min_samples=100, min_emitted_calls=30)
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        online = lambda: d.role("signaller")["status"].get("learning", {}).get("online", {})  # noqa: E731
        promoted = wait_for(lambda: rows(dsn, "SELECT version, metrics->>'source', promoted_when_trained, is_active "
                                              "FROM msd.model_versions WHERE strategy_id = 'learner' AND version = 2"),
                            60, what="the learner's challenger published")
        assert promoted == [(2, "online", True, True)]
        [(event, reason)] = rows(dsn, "SELECT event, reason FROM msd.mode_transitions WHERE strategy_id = 'learner' "
                                      "AND model_version = 2 AND event = 'activation'")
        assert "(online) passed the promotion gate" in reason
        [(looks, confirmed)] = rows(dsn, "SELECT metrics->>'gate_looks', metrics->>'confirmed_on_a_fresh_block' "
                                         "FROM msd.model_versions WHERE strategy_id = 'learner' AND version = 2")
        assert int(looks) >= 2 and confirmed == "true"
        wait_for(lambda: online().get("noisy", {}).get("learned") == 700, 30, what="noisy learned its stream")
        assert "fail:" in online()["noisy"]["last_verdict"]
        assert rows(dsn, "SELECT count(*) FROM msd.model_versions WHERE strategy_id = 'noisy'") == [(1,)]
        wait_for(lambda: d.role("signaller")["status"]["strategies"]["learner"]["model_version"] == 2, 10,
                 what="the signaller serving v2")
    finally:
        d.close()
