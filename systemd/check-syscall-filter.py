"""Exercise the unit's system-call filter against the real daemon, on a machine without systemd as PID 1.

The unit allows `SystemCallFilter=@system-service` minus `~@privileged @resources`, and a call
outside that fails with EPERM (`SystemCallErrorNumber=EPERM`). Without systemd the filter itself
cannot be installed here, so this does the next best thing in two runs of the real daemon under
strace (every process: supervisor, roles, trainer, multiprocessing's helpers), each through
start-up, ingestion of the CONTRACTS examples, warm-up signals, a training run, a reload, a
SIGKILLed role's respawn and a graceful stop:
1. `strace -f -c` records the system calls made; they are compared with the allowed set as
   `systemd-analyze syscall-filter` expands it;
2. the run is repeated with strace injecting EPERM into every call found outside the set
   (`-e inject=...:error=EPERM`), i.e. what the filter would do, and must still end well: ready,
   signals confirmed, the training run succeeded, exit code 0.
Exits 1 if the second run fails. Needs strace, systemd-analyze and the local PostgreSQL and
RabbitMQ. Usage: .venv/bin/python systemd/check-syscall-filter.py
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import psycopg2  # noqa: E402

from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests import examples  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import base_config, wait_for  # noqa: E402
from tests.integration.market_feed import MarketFeed  # noqa: E402

ALLOWED = ("@system-service",)
DENIED = ("@privileged", "@resources")
STRATEGY = {"id": "probe", "assets": ["BTCUSDT"], "trigger": "schedule", "seed": 1,
            "rate": {"rate_per_s": 5, "burst": 5},
            "warmup": {"frequency_s": 0.2, "heuristic": "random", "min_amount_usdt": 10, "max_amount_usdt": 20,
                       "max_exposure_usdt": 1_000_000}}


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall group, nested groups included."""
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True)
    calls = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= expand(item, seen) if item.startswith("@") else {item}
    return calls


def traced_calls(summary: str) -> set[str]:
    """System call names from `strace -c` output."""
    calls = set()
    for line in summary.splitlines():
        match = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+(?:\d+\s+)?([a-z0-9_]+)\s*$", line)
        if match and match.group(1) != "total":
            calls.add(match.group(1))
    return calls


def ctl(socket_path: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "msd.ctl", "-s", str(socket_path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60).stdout


def exercise(tmp: Path, dsn: str, vhost: str, trace: Path, refuse: list[str]) -> dict:
    import yaml
    config = base_config(tmp, dsn, amqp_url(vhost), signaller={"strategies": [STRATEGY], "max_data_age_s": 2})
    (tmp / "msd.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MSD_TEST_AMQP_PASSWORD": "guest"}
    log = open(tmp / "daemon.log", "wb")
    inject = ["-e", f"inject={','.join(refuse)}:error=EPERM"] if refuse else []
    daemon = subprocess.Popen(["strace", "-f", "-qq", "-c", "-o", str(trace), *inject, sys.executable, "-m",
                               "msd.cli", "run", "-c", str(tmp / "msd.yaml")], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    sock = tmp / "msd.sock"
    try:
        wait_for(lambda: sock.exists() and '"ready"' in ctl(sock, "--json", "status"), 120, what="ready")
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
        channel = conn.channel()
        for body in examples.ORDER_EVENTS:
            channel.basic_publish("", "order-manager.order_events", body)
        for body in examples.POSITION_UPDATES:
            channel.basic_publish("", "position-manager.position_updated", body)
        for kind, body in examples.MARKET_EVENTS.items():
            channel.basic_publish("", f"ws-gateway.{kind}", body)
        conn.close()
        with MarketFeed(amqp_url(vhost), ["BTCUSDT"]):
            time.sleep(5)
        ctl(sock, "retrain")
        wait_for(lambda: '"outcome"' in ctl(sock, "--json", "status"), 120, interval=1, what="training ended")
        ctl(sock, "reload")
        status = json.loads(ctl(sock, "--json", "status"))["result"]
        os.kill(status["roles"]["exits"]["pid"], signal.SIGKILL)
        wait_for(lambda: json.loads(ctl(sock, "--json", "status"))["result"]["roles"]["exits"]["state"] == "RUNNING",
                 60, interval=0.5, what="exits respawned")
        ctl(sock, "stop")
        code = daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
    published = status["roles"]["signaller"]["status"].get("published", 0)
    outcomes = [run["outcome"] for run in status["trainer"]["recent"]]
    return {"exit_code": code, "signals_published": published, "training": outcomes}


def main() -> int:
    allowed = set().union(*(expand(g) for g in ALLOWED)) - set().union(*(expand(g) for g in DENIED))
    dsn, vhost = create_database("msd_seccomp"), create_vhost("msd_seccomp")
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "strace.txt"
            first = exercise(Path(tmp), dsn, vhost, trace, [])
            used = traced_calls(trace.read_text())
            outside = sorted(used - allowed)
            print(f"run 1: {first}; system calls made (all processes): {len(used)}; allowed by the unit's "
                  f"filter: {len(allowed)}; outside it: {', '.join(outside) or 'none'}")
            second = exercise(Path(tmp), dsn, vhost, trace, outside)
            print(f"run 2, EPERM injected into {', '.join(outside) or 'nothing'}: {second}")
    finally:
        drop_database(dsn)
        delete_vhost(vhost)
    ok = all(run["exit_code"] == 0 and run["signals_published"] > 0 and "succeeded" in run["training"]
             for run in (first, second))
    print("the daemon works under the filter" if ok else "FAILED: the daemon does not work under the filter")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
