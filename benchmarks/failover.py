"""Failover through real processes: two daemons (one database, one vhost) trading warm-up
signals against msd-sim; the leader's whole process tree is SIGKILLed `--kills` times.

Usage: python benchmarks/failover.py [--kills 10] [--step-downs 5] [--failover-s 10] [--renew-s 2]
Prints, as p50 and max over the kills: the time from the SIGKILL to the standby leading (its
lease child took the expired lease and the supervisor started the roles) and to the first
signal the new leader sent (marked sent after the broker confirmed it); the same from
`msd-ctl step-down` over the step-downs (the planned handover: no lease to wait out). Then, over the whole
run: signals decided, signals lost (recorded in the outbox but never an order at msd-sim's
order-manager; signals that expired unsent by design are counted apart), orders duplicated (a signal_id with more than one order
row), and broker duplicates (a signal delivered again, which order-manager ignored).
A kill lands anywhere in a renewal period, so the time to a new leader lies between
failover_s - lease_renew_s and failover_s plus the take-over itself.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.sim.exchange import SimControls  # noqa: E402
from msd.sim.market import MarketParams  # noqa: E402
from msd.sim.runner import SimConfig, run  # noqa: E402
from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, kill_tree, wait_for  # noqa: E402
from tests.integration.test_daemon_failover_sim import ASSETS, SIGNALLER, Duplicates  # noqa: E402


def query(dsn: str, sql: str, *args):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def leader(daemons: list[Daemon]) -> Daemon | None:
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            try:
                status = d.status()
            except Exception:
                continue
            if status["leadership"]["role"] == "leader" and {r["state"] for r in status["roles"].values()} == {"RUNNING"}:
                return d
    return None


def one_handover(dsn: str, daemons: list[Daemon], kill: bool) -> tuple[float, float]:
    """Kill the leader's tree (or have it step down); (seconds to a new leader, seconds to its
    first sent signal)."""
    old = wait_for(lambda: leader(daemons), 120, interval=0.1, what="a leader")
    epoch = query(dsn, "SELECT epoch FROM msd.leadership")[0][0]
    wait_for(lambda: query(dsn, "SELECT count(*) FROM msd.signals WHERE sent_epoch = %s", epoch)[0][0] > 0,
             120, interval=0.2, what="the leader trading")
    killed_wall, killed = time.time(), time.monotonic()
    if not kill:
        assert old.ctl("step-down")[0] == 0
    else:
        kill_tree(old)
    others = [d for d in daemons if d is not old]
    wait_for(lambda: leader(others), 180, interval=0.05, what="the standby leading")
    to_leader = time.monotonic() - killed
    first = wait_for(lambda: query(dsn, """SELECT extract(epoch FROM min(written_at)) FROM msd.signals
                                           WHERE sent_epoch > %s""", epoch)[0][0], 120, interval=0.1,
                     what="the new leader's first signal")
    if kill:
        old.notify.messages.clear()
        old.start()                 # back, as the standby
    return to_leader, float(first) - killed_wall


def totals(dsn: str) -> dict[str, int]:
    (decided, expired, pending, unanswered), = query(dsn, """
        SELECT count(*), count(*) FILTER (WHERE outbox_state = 'expired'),
               count(*) FILTER (WHERE outbox_state = 'pending'),
               count(*) FILTER (WHERE outbox_state = 'sent'
                                  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.signal_id = s.signal_id))
          FROM msd.signals s""")
    duplicated = query(dsn, """SELECT count(*) FROM (SELECT signal_id FROM orders WHERE signal_id IN
                                   (SELECT signal_id FROM msd.signals) GROUP BY signal_id HAVING count(*) > 1) d""")[0][0]
    return {"decided": decided, "expired": expired, "lost": pending + unanswered, "pending": pending,
            "duplicated": duplicated}


def start_sim(dsn: str, vhost: str, stop: threading.Event) -> tuple[threading.Thread, Duplicates]:
    duplicates = Duplicates()
    logging.getLogger("msd.sim").addHandler(duplicates)
    config = SimConfig(amqp_url=amqp_url(vhost), dsn=dsn, assets=ASSETS, seed=5, tick_rate=5.0,
                       position_update_s=1.0, start=datetime.now(timezone.utc), market=MarketParams(regime="noise"))
    thread = threading.Thread(target=run, args=(config, stop, SimControls()), name="msd-sim", daemon=True)
    thread.start()
    return thread, duplicates


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--step-downs", type=int, default=5)
    parser.add_argument("--failover-s", type=float, default=10.0)
    parser.add_argument("--renew-s", type=float, default=2.0)
    args = parser.parse_args()
    dsn, vhost = create_database("msd_bench"), create_vhost("msd_bench")
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    stop = threading.Event()
    sim, duplicates = start_sim(dsn, vhost, stop)
    lease = {"enabled": True, "lease_renew_s": args.renew_s, "failover_s": args.failover_s}
    to_leader, to_signal, stepped, daemons = [], [], [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("bench-a", "bench-b"):
                where = Path(tmp) / name
                where.mkdir()
                daemons.append(Daemon(where, base_config(where, dsn, amqp_url(vhost), logging={"level": "WARNING"},
                                                         leadership={**lease, "instance": name}, signaller=SIGNALLER,
                                                         consumer={"ws_gateway_declare": "passive"})))
            try:
                for d in daemons:
                    d.start()
                for i in range(args.kills):
                    leading, signalling = one_handover(dsn, daemons, kill=True)
                    to_leader.append(leading)
                    to_signal.append(signalling)
                    print(f"kill {i + 1}: new leader after {leading:.2f} s, first signal after {signalling:.2f} s",
                          flush=True)
                for i in range(args.step_downs):
                    stepped.append(one_handover(dsn, daemons, kill=False))
                    print(f"step-down {i + 1}: new leader after {stepped[-1][0]:.2f} s, first signal after "
                          f"{stepped[-1][1]:.2f} s", flush=True)
            finally:
                for d in daemons:
                    d.close()
            # Every daemon stopped gracefully: the last leader sent what waited. Let msd-sim take it all.
            time.sleep(5)
        figures = totals(dsn)
    finally:
        stop.set()
        sim.join(30)
        drop_database(dsn)
        delete_vhost(vhost)
    load = os.getloadavg()[0]
    print(f"SIGKILL of the leader's tree -> standby leading: p50 {statistics.median(to_leader):.2f} s, "
          f"max {max(to_leader):.2f} s over {len(to_leader)} kills (failover_s {args.failover_s:g}, "
          f"lease_renew_s {args.renew_s:g}, load average {load:.1f})")
    print(f"SIGKILL -> first signal sent by the new leader: p50 {statistics.median(to_signal):.2f} s, "
          f"max {max(to_signal):.2f} s")
    if stepped:
        print(f"msd-ctl step-down -> other instance leading: p50 {statistics.median(s[0] for s in stepped):.2f} s, "
              f"max {max(s[0] for s in stepped):.2f} s; -> its first signal: p50 "
              f"{statistics.median(s[1] for s in stepped):.2f} s, max {max(s[1] for s in stepped):.2f} s "
              f"over {len(stepped)} step-downs")
    print(f"signals decided {figures['decided']}; lost {figures['lost']} (sent without an order at order-manager, "
          f"or never sent: {figures['pending']} still pending); expired unsent by design {figures['expired']}; "
          f"orders duplicated {figures['duplicated']}; broker duplicates (deduplicated by order-manager) "
          f"{duplicates.count}")
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
