"""Supervisor reaction times through the real daemon: a SIGKILLed role running again, and a
config edit applied (the 2 s goals of issue #2; tests assert behaviour, this prints the times).

Usage: python benchmarks/supervisor.py [--rounds 5]
Prints, per role, the time from SIGKILL to the new process reporting RUNNING, and the time from
saving a changed config file to the reload being applied, as median and max over the rounds.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, wait_for  # noqa: E402

ROLES = ("consumer", "signaller", "exits")


def respawn_seconds(daemon: Daemon, role: str) -> float:
    before = daemon.status()["roles"][role]["pid"]
    os.kill(before, signal.SIGKILL)
    killed = time.monotonic()
    daemon.wait_running(role, timeout=60, other_than_pid=before)
    return time.monotonic() - killed


def reload_seconds(daemon: Daemon, batch_max: int) -> float:
    loaded = daemon.status()["daemon"]["config_loaded_at"]
    config = yaml.safe_load(daemon.config_path.read_text())
    config.setdefault("consumer", {})["batch_max"] = batch_max
    daemon.config_path.write_text(yaml.safe_dump(config))
    edited = time.monotonic()
    wait_for(lambda: daemon.status()["daemon"]["config_loaded_at"] > loaded, 60, what="reload")
    return time.monotonic() - edited


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dsn, vhost = create_database("msd_bench"), create_vhost("msd_bench")
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    times: dict[str, list[float]] = {role: [] for role in (*ROLES, "reload")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            daemon = Daemon(Path(tmp), base_config(Path(tmp), dsn, amqp_url(vhost), logging={"level": "WARNING"}))
            try:
                daemon.start()
                for role in ROLES:
                    daemon.wait_running(role, timeout=60)
                for i in range(args.rounds):
                    for role in ROLES:
                        times[role].append(respawn_seconds(daemon, role))
                        time.sleep(1.5)     # past the fast-failure window, so no backoff grows
                    times["reload"].append(reload_seconds(daemon, 100 + i))
                    daemon.wait_running("consumer", timeout=60)
            finally:
                daemon.close()
    finally:
        drop_database(dsn)
        delete_vhost(vhost)
    load = os.getloadavg()[0]
    for name, values in times.items():
        what = "config edit -> applied" if name == "reload" else f"SIGKILL {name} -> RUNNING"
        print(f"{what}: median {statistics.median(values):.2f} s, max {max(values):.2f} s "
              f"over {len(values)} rounds (load average {load:.1f}; goal 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
