"""Failover under traffic: two real daemons (one database, one vhost) trading warm-up signals
against msd-sim, whose order-manager dedupes by signal_id (CONTRACTS §1.3). Over step-down,
a SIGKILL of the leader's whole tree and the leader's database connections cut server-side,
every signal msd decided leads to exactly one order, broker duplicates are counted, and no
effect is written by an old epoch after the next epoch took the lease (from the audit rows).
"""
import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone

import psycopg2
import pytest

from msd.sim.exchange import SimControls
from msd.sim.market import MarketParams
from msd.sim.runner import SimConfig, run
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, kill_tree, wait_for

pytestmark = pytest.mark.integration
ASSETS = ("BTCUSDT", "ETHUSDT")
LEASE = {"enabled": True, "lease_renew_s": 0.5, "failover_s": 3}
STRATEGY = {"id": "fo", "assets": list(ASSETS), "trigger": "schedule", "seed": 3,
            "rate": {"rate_per_s": 100, "burst": 100},
            "warmup": {"frequency_s": 0.25, "heuristic": "random", "randomness": 0.0,
                       "min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": 1_000_000}}
SIGNALLER = {"strategies": [STRATEGY], "global_rate": {"rate_per_s": 1000, "burst": 1000},
             "max_data_age_s": 5, "conflicts": {"policy": "allow"}, "max_signal_age_s": 600}


class Duplicates(logging.Handler):
    """Counts the signals msd-sim's order-manager saw twice (a broker duplicate, deduped)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "is a duplicate" in record.getMessage():
            self.count += 1


@pytest.fixture(scope="module")
def sim(resources):
    dsn, vhost = resources
    duplicates = Duplicates()
    logging.getLogger("msd.sim").addHandler(duplicates)
    stop, failure = threading.Event(), []
    config = SimConfig(amqp_url=amqp_url(vhost), dsn=dsn, assets=ASSETS, seed=5, speed=1.0, tick_rate=5.0,
                       position_update_s=1.0, start=datetime.now(timezone.utc), market=MarketParams(regime="noise"))

    def target():
        try:
            run(config, stop, SimControls())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="msd-sim")
    thread.start()
    try:
        yield duplicates
    finally:
        stop.set()
        thread.join(30)
        logging.getLogger("msd.sim").removeHandler(duplicates)
    assert not thread.is_alive() and not failure, failure


@pytest.fixture(scope="module")
def pair(resources, sim, tmp_path_factory):
    dsn, vhost = resources
    daemons = {}
    for name in ("sim-a", "sim-b"):
        tmp = tmp_path_factory.mktemp(name)
        daemons[name] = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), leadership={**LEASE, "instance": name},
                                                signaller=SIGNALLER, consumer={"ws_gateway_declare": "passive"}))
    for d in daemons.values():
        d.start(wait_ready=False)
    for d in daemons.values():
        wait_for(lambda: "READY=1" in d.notify.lines() or d.proc.poll() is not None, 90, what="READY=1")
        assert d.proc.poll() is None, d.tail()
    yield daemons
    for d in daemons.values():
        d.close()


def query(dsn, sql, *args):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def leader_of(pair, other_than=None, timeout=60.0):
    def one():
        for d in pair.values():
            if d is not other_than and d.proc.poll() is None:
                view = d.status()["leadership"]
                roles = {r["state"] for r in d.status()["roles"].values()}
                if view["role"] == "leader" and roles == {"RUNNING"}:
                    return d
        return None
    return wait_for(one, timeout, interval=0.1, what="a leader running every role")


def current_epoch(dsn):
    return query(dsn, "SELECT epoch FROM msd.leadership")[0][0]


def sent_by(dsn, epoch):
    return query(dsn, "SELECT count(*) FROM msd.signals WHERE sent_epoch = %s", epoch)[0][0]


def trading(dsn, epoch, at_least=3, timeout=60.0):
    """The leader of `epoch` decides and sends signals (its roles write as that epoch)."""
    wait_for(lambda: sent_by(dsn, epoch) >= at_least, timeout, interval=0.2, what=f"signals sent by epoch {epoch}")


def cut_database(dsn, instance, seconds):
    """Terminate every connection of `instance` server-side, again and again, for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        query(dsn, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                       WHERE datname = current_database() AND application_name LIKE %s""", f"%[{instance}%")
        time.sleep(0.05)


def test_every_decided_signal_leads_to_exactly_one_order_across_failovers(pair, sim, resources):
    dsn = resources[0]
    first = leader_of(pair)
    assert sum(d.status()["leadership"]["role"] == "leader" for d in pair.values()) == 1
    trading(dsn, current_epoch(dsn))

    # step-down under load
    assert first.ctl("step-down")[0] == 0
    second = leader_of(pair, other_than=first)
    trading(dsn, current_epoch(dsn))

    # the leader's whole process tree SIGKILLed: the standby takes over once the lease expires
    kill_tree(second)
    third = leader_of(pair, other_than=second)
    assert third is first
    trading(dsn, current_epoch(dsn))
    second.notify.messages.clear()
    second.start()                          # back, as the standby

    # the leader's database connections cut server-side: it reconnects and keeps leading
    epoch = current_epoch(dsn)
    cut_database(dsn, third.config["leadership"]["instance"], 1.0)
    trading(dsn, epoch, at_least=sent_by(dsn, epoch) + 3)
    assert current_epoch(dsn) == epoch

    # ... and cut while the leader's supervisor and lease child are frozen (a paused VM): its
    # roles run on, reconnect as the old epoch and are fenced once the standby took over
    frozen = [third.proc.pid, third.status()["leadership"]["lease_child_pid"]]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        cut_database(dsn, third.config["leadership"]["instance"], 0.5)
        wait_for(lambda: current_epoch(dsn) > epoch, 60, interval=0.1, what="the standby takes the lease")
        trading(dsn, current_epoch(dsn))
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    fourth = leader_of(pair, other_than=third)
    assert fourth is second
    wait_for(lambda: third.status()["leadership"]["role"] == "standby", 30, what="the old leader stands by")
    assert_fencing_held(dsn, epoch)
    fenced = [r for r in third.log_records() if "fenced: epoch" in r.get("message", "")]
    assert fenced, "the old epoch's roles never tried to write: the fence was not exercised"
    fenced_before = len([r for r in second.log_records() if "fenced: epoch" in r.get("message", "")])

    # only the leader's lease child frozen (it renews nothing): its supervisor stops the roles
    # before the lease can expire (and replaces the silent child, which competes afresh), so
    # the next epoch, whichever instance holds it, finds nothing of the old one writing
    epoch = current_epoch(dsn)
    trading(dsn, epoch, at_least=sent_by(dsn, epoch) + 1)
    os.kill(fourth.status()["leadership"]["lease_child_pid"], signal.SIGSTOP)
    wait_for(lambda: current_epoch(dsn) > epoch, 60, interval=0.1, what="a new epoch")
    leader_of(pair)
    trading(dsn, current_epoch(dsn))
    assert_fencing_held(dsn, epoch)
    assert len([r for r in fourth.log_records() if "fenced: epoch" in r.get("message", "")]) == fenced_before

    # drain: stop deciding, let the leader send what waits, let msd-sim take it all
    for d in pair.values():
        d.stop()
    leader_of_last = current_epoch(dsn)
    assert query(dsn, "SELECT count(*) FROM msd.signals WHERE outbox_state = 'pending'")[0][0] == 0, \
        f"pending signals left after the last leader (epoch {leader_of_last}) stopped"
    assert_one_order_per_signal(dsn)
    print(f"broker duplicates deduplicated by order-manager: {sim.count}")


def assert_fencing_held(dsn, old_epoch):
    """No signal written or marked sent by `old_epoch` after the next epoch took the lease."""
    took_over = query(dsn, "SELECT min(at) FROM msd.leadership_events WHERE event = 'acquired' AND epoch > %s",
                      old_epoch)[0][0]
    late = query(dsn, """SELECT signal_id, epoch, sent_epoch, written_at FROM msd.signals
                          WHERE coalesce(sent_epoch, epoch) = %s AND written_at >= %s""", old_epoch, took_over)
    assert late == []
    first_new = query(dsn, "SELECT min(written_at) FROM msd.signals WHERE coalesce(sent_epoch, epoch) > %s",
                      old_epoch)[0][0]
    assert first_new is not None and first_new > took_over


def assert_one_order_per_signal(dsn):
    def settled():
        rows = query(dsn, """SELECT s.signal_id, count(o.id) FROM msd.signals s
                               LEFT JOIN orders o ON o.signal_id = s.signal_id
                              WHERE s.outbox_state = 'sent' GROUP BY s.signal_id""")
        return rows if rows and all(n >= 1 for _, n in rows) else None
    rows = wait_for(settled, 60, interval=0.5, what="an order for every sent signal")
    assert {n for _, n in rows} == {1}, [r for r in rows if r[1] != 1]
    assert query(dsn, "SELECT count(*) FROM msd.signals WHERE outbox_state NOT IN ('sent', 'expired')")[0][0] == 0
