"""Learning end to end with the real daemon: a learnable execution history makes the data
threshold trigger a training run; the promoted version switches the live signaller to model
mode; a rollback switches it again; bad live outcomes trip the quality alert and a retrain."""
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from msd import ctl
from msd.store.migrate import apply_migrations
from msd.store.neighbours import create_neighbour_tables
from tests import learning_data
from tests.contract.order_manager_rules import assert_accepted
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for
from tests.integration.market_feed import MarketFeed, SignalTap, publish_history

pytestmark = pytest.mark.integration
STRATEGY = "momentum_v1"      # the synthetic history's strategy


def minutes_ago(minutes: int) -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes)


def rows(dsn, sql, args=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


@pytest.fixture
def dsn():
    dsn = create_database()
    apply_migrations(dsn)
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
        learning_data.insert(conn, learning_data.synthetic(1200, strength=4.0, seed=1, start=minutes_ago(1700),
                                                           strategy=STRATEGY))
    yield dsn
    drop_database(dsn)


def config(tmp_path, dsn, vhost):
    strategy = {"id": STRATEGY, "assets": ["BTCUSDT"], "rate": {"rate_per_s": 10, "burst": 5},
                "warmup": {"frequency_s": 0.5, "min_amount_usdt": 10, "max_amount_usdt": 20,
                           "max_exposure_usdt": 1_000_000}}
    training = learning_data.params(models_dir=str(tmp_path / "models"), confidence_threshold=0.5)
    return base_config(tmp_path, dsn, amqp_url(vhost),
                       signaller={"strategies": [strategy], "global_rate": {"rate_per_s": 100, "burst": 100}},
                       trainer={"data_threshold": 100, "check_interval_s": 0.5, "schedule": None,
                                "quality": {"threshold": 0.6, "hysteresis": 0.05, "min_samples": 5, "window": 50},
                                "training": training})


def model_bodies(tap, version):
    return [b for b in tap.bodies() if b.get("model_version") == version]


def fail_every_call(dsn, version):
    """Fill the model's signals and record the market moving against each call (1 %)."""
    calls = rows(dsn, "SELECT signal_id::text, signal_type, created_at FROM msd.signals "
                      "WHERE mode = 'model' AND model_version = %s", (version,))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for i, (signal_id, side, created) in enumerate(calls):
            against = 0.99 if side == "buy" else 1.01
            cur.execute("""INSERT INTO msd.executions (order_id, signal_id, strategy_id, asset, side, quantity,
                                      price, fee, cumulative_quantity, executed_at, source)
                           VALUES (%s, %s, %s, 'BTCUSDT', %s, 0.001, 95000, 0, 0.001, %s, 'event')""",
                        (f"bad-{i}", signal_id, STRATEGY, side, created))
            minute = created + timedelta(seconds=learning_data.HORIZON_S - 60)
            minute = minute.replace(second=0, microsecond=0) + timedelta(minutes=1)
            cur.execute("""INSERT INTO msd.market_bars (asset, minute, open, high, low, close, volume, turnover,
                                                        confirmed)
                           VALUES ('BTCUSDT', %s, %s, %s, %s, %s, 1, 1, true) ON CONFLICT DO NOTHING""",
                        (minute, *(95000 * against,) * 4))
    return len(calls)


def test_warmup_to_model_mode_rollback_and_quality_alert(dsn, fresh_vhost, tmp_path):
    d = Daemon(tmp_path, config(tmp_path, dsn, fresh_vhost))
    url = amqp_url(fresh_vhost)
    try:
        d.start()
        d.wait_running("signaller")
        publish_history(url, "BTCUSDT")
        with MarketFeed(url, ["BTCUSDT"]), SignalTap(url) as tap:
            wait_for(lambda: any(b["is_warmup"] for b in tap.bodies()), 20, what="a warm-up signal")
            # The data threshold fires, the trainer promotes v1, the signaller switches at once.
            wait_for(lambda: model_bodies(tap, "v1"), 90, what="a model signal from v1")
            wait_for(lambda: d.role("signaller")["status"]["strategies"][STRATEGY]["model_version"] == 1, 5,
                     what="status in model mode")
            assert d.role("signaller")["status"]["strategies"][STRATEGY]["mode"] == "model"
            body = model_bodies(tap, "v1")[0]
            assert body["is_warmup"] is False and 0.5 <= body["confidence"] <= 1
            assert body["metadata"]["prediction_result"]["buy_probability"] >= 0
            assert any("data threshold" in (r.get("message") or "") for r in d.log_records())
            sizes = wait_for(lambda: d.role("signaller")["status"].get("learning", {}).get("datasets", {}).get(STRATEGY),
                             10, what="dataset sizes in status")
            assert sizes["labelled"] >= 1200 and sizes["executions"] >= 1200
            assert rows(dsn, "SELECT from_mode, to_mode, model_version FROM msd.mode_transitions "
                             "WHERE strategy_id = %s AND to_mode = 'model' ORDER BY id LIMIT 1",
                        (STRATEGY,)) == [("warmup", "model", 1)]
            # No new data: a retrain is skipped as a data drought, visibly (status and metric).
            d.call("retrain", strategy=STRATEGY)
            last = wait_for(lambda: (d.role("signaller")["status"].get("learning", {}).get("last_training") or {}
                                     ).get(STRATEGY, {}).get("outcome") == "skipped" and
                            d.role("signaller")["status"]["learning"]["last_training"][STRATEGY], 20,
                            what="the drought in status")
            assert last["reason"].startswith("data drought")
            port = d.config["metrics"]["port"]
            metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert 'msd_training_skipped_total{cause="data drought"' in metrics_text
            # New history arrives, a manual retrain writes v2, and a rollback switches to it.
            with psycopg2.connect(dsn) as conn:
                learning_data.insert(conn, learning_data.synthetic(300, strength=4.0, seed=7, start=minutes_ago(480),
                                                                   strategy=STRATEGY, order_prefix="second"))
            d.call("retrain", strategy=STRATEGY)
            wait_for(lambda: rows(dsn, "SELECT count(*) FROM msd.model_versions")[0][0] == 2, 60, what="v2")
            assert ctl.main(["-c", str(d.config_path), "rollback", "--strategy", STRATEGY, "--to", "v2"]) == 0
            wait_for(lambda: model_bodies(tap, "v2"), 20, what="signals carrying the rolled-back version")
            # Every live call of v2 turns out wrong: the quality alert fires and asks for a retrain.
            wait_for(lambda: len(model_bodies(tap, "v2")) >= 6, 20, what="six v2 calls")
            assert fail_every_call(dsn, "v2") >= 6
            degraded = wait_for(lambda: d.role("signaller")["status"].get("degraded", {}).get(
                f"model quality {STRATEGY}"), 20, what="quality degraded")
            assert "live accuracy 0.000" in degraded
            wait_for(lambda: any(line.startswith("STATUS=") and "model quality" in line for line in d.notify.lines()),
                     5, what="systemd STATUS line with the alert")
            records = d.log_records()
            assert any(r.get("level") == "ERROR" and r.get("alert") == "model_quality_degraded" for r in records)
            assert any("quality degradation" in (r.get("message") or "") for r in records)
            # The degraded version is no longer served: the last good one (v1) is back at once.
            seen = len(tap.bodies())
            wait_for(lambda: any(b.get("model_version") == "v1" for b in tap.bodies()[seen:]), 20,
                     what="the last good version serving again")
            assert rows(dsn, "SELECT event, model_version FROM msd.mode_transitions WHERE strategy_id = %s "
                             "ORDER BY id DESC LIMIT 1", (STRATEGY,))[0] == ("rollback", 1)
        for body in tap.bodies():
            assert_accepted(body)
    finally:
        d.close()


def test_a_schedule_missed_while_down_runs_once_at_start_and_survives_a_restart(tmp_path, fresh_vhost):
    dsn = create_database()
    apply_migrations(dsn)
    rows(dsn, "INSERT INTO msd.schedule_state (name, next_run_at) VALUES ('training', now() - interval '3 hours') "
              "RETURNING name")
    cfg = base_config(tmp_path, dsn, amqp_url(fresh_vhost),
                      trainer={"schedule": {"every_s": 3600}, "check_interval_s": 0.2, "data_threshold": None,
                               "training": learning_data.params(models_dir=str(tmp_path / "models"))})
    d = Daemon(tmp_path, cfg)
    try:
        d.start()
        wait_for(lambda: any("missed while msd was down" in (r.get("message") or "") for r in d.log_records()),
                 10, what="the missed run requested")
        [(next_run,)] = rows(dsn, "SELECT next_run_at - now() FROM msd.schedule_state WHERE name = 'training'")
        assert timedelta(minutes=55) < next_run <= timedelta(hours=1)
        # Nothing to learn from: the run is not a failure, and the drought shows in status/metrics.
        wait_for(lambda: d.status()["trainer"]["recent"], 20, what="the run finished")
        assert d.status()["trainer"]["recent"][0]["outcome"] == "succeeded"
        assert d.stop() == 0
        triggers = lambda: len([r for r in d.log_records()  # noqa: E731
                                if (r.get("message") or "").startswith("training trigger schedule")])
        runs_before = triggers()
        d.start()
        time.sleep(1.5)
        runs_after = triggers()
        assert runs_after == runs_before == 1          # the persisted next run is an hour away
    finally:
        d.close()
        drop_database(dsn)
