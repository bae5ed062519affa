"""Exit latency and peak-tracking benchmark, through the real broker and the daemon
(consumer -> exits role -> PostgreSQL -> outbox -> broker).

Latency: starts the real daemon (own database and vhost) with `positions` rows for `--positions`
background positions, whose updates never fire a rule, and one fresh position per exit, whose
first update fires a stop loss. Updates are published at `--rate` per second for `--seconds`;
every `--exit-every`-th one is an exit. Prints the latency percentiles of the exits (publish ->
signal delivered to this process, one clock) and the sustained rate at which the exits role
took updates (from `msd_exit_position_updates_total`, polled every 20 ms).

Peak tracking: then `--peak-positions` open positions each get `--tick-rate` ws-gateway trade
prints per second (a random walk) for `--peak-seconds`, with the default debounce; the peak
the exits role stored for each is compared with the true highest price published for it.
Prints the largest and the mean relative error (SC-016 asks for the peak within 0.1 %).
Usage: python benchmarks/exit_latency.py [--rate 1000] [--seconds 10] [--exit-every 20] [--debounce-s 0]
                                         [--peak-positions 5] [--tick-rate 100] [--peak-seconds 10]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pika
import psycopg2
from psycopg2.extras import execute_values

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import feed  # noqa: E402
from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, wait_for  # noqa: E402
from tests.integration.exit_helpers import POSITIONS_QUEUE, position_update  # noqa: E402
from tests.integration.market_feed import trade_event  # noqa: E402

UPDATES_TAKEN = re.compile(r"^msd_exit_position_updates_total ([0-9.e+]+)$", re.M)


def insert_positions(dsn: str, prefix: str, count: int, current: str) -> list[tuple[str, str]]:
    """`count` open longs entered at 100 and marked at `current`; returns (position id, asset)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [(str(uuid.uuid4()), f"{prefix}{i:06d}USDT", "1.00000000", "100", current, now, now) for i in range(count)]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        execute_values(cur, "INSERT INTO positions (id, asset, size, average_entry_price, current_price,"
                            " last_updated, created_at) VALUES %s", rows)
    return [(pid, asset) for pid, asset, *_ in rows]


def signal_times(url: str) -> tuple[feed.SignalReader, dict[str, float]]:
    """A signal reader and what it fills: position id -> when its exit signal reached this process."""
    times: dict[str, float] = {}
    return feed.SignalReader(url, lambda signal, at: times.setdefault(signal["metadata"]["position_id"], at)), times


def updates_taken(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = UPDATES_TAKEN.search(body)
    return float(match.group(1)) if match else 0.0


def publish_paced(url: str, dsn: str, rate: float, seconds: float, background, exits,
                  exit_every: int) -> dict[str, float]:
    """Publish evenly spaced updates; returns position id -> publish time of each exit's update.

    An exit is what position-manager does when a mark crosses the stop: write the row (97, version
    bumped), then publish the event. Every open row is watched from the start, so a row at 97
    before its event would fire on its own.
    """
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    table = psycopg2.connect(dsn)
    table.autocommit = True
    cursor = table.cursor()
    sent: dict[str, float] = {}
    exits = iter(exits)
    for i in feed.paced(rate, seconds):
        pid, asset = next(exits) if i % exit_every == 0 else background[i % len(background)]
        body = position_update(pid, asset, "1.00000000")
        if i % exit_every == 0:
            sent[pid] = time.time()
            cursor.execute("UPDATE positions SET current_price = 97, version = version + 1,"
                           " last_updated = now() AT TIME ZONE 'utc' WHERE id = %s", (pid,))
        channel.basic_publish("", POSITIONS_QUEUE, body, pika.BasicProperties(delivery_mode=2))
    conn.close()
    table.close()
    return sent


def settled_at(port: int, target: float, timeout: float) -> float:
    """Wall time at which the exits role had taken `target` updates in total (a burst for one
    position is evaluated once, on its newest update, so evaluations can be fewer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if updates_taken(port) >= target:
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"exits role took {updates_taken(port):.0f} of {target:.0f} updates within {timeout}s")


def publish_ticks(url: str, positions, rate: float, seconds: float, seed: int = 7) -> dict[str, float]:
    """`rate` trade prints per second for each position's asset (a random walk around 100, one
    print in 200 a short spike); returns the highest price published per asset."""
    import random
    rng = random.Random(seed)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    price = {asset: 100.0 for _, asset in positions}
    highest = dict(price)
    for _ in feed.paced(rate, seconds):
        for _, asset in positions:
            price[asset] *= 1 + rng.gauss(0, 0.0004)
            shown = price[asset] * (1.004 if rng.random() < 0.005 else 1.0)
            text = f"{shown:.4f}"
            highest[asset] = max(highest[asset], float(text))
            channel.basic_publish("", "ws-gateway.trade", trade_event(asset, text), pika.BasicProperties(delivery_mode=2))
    conn.close()
    return highest


def stored_peaks(dsn: str, positions) -> dict[str, float]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT asset, state->>'extreme_price' FROM msd.position_exit_state WHERE position_key = ANY(%s)",
                    ([pid for pid, _ in positions],))
        return {asset: float(peak) for asset, peak in cur.fetchall() if peak is not None}


def peak_tracking(args, dsn: str, vhost: str, daemon: Daemon) -> None:
    """Every tick folded into the peak: the stored peak against the true highest price."""
    positions = insert_positions(dsn, "P", args.peak_positions, "100")
    cfg = dict(daemon.config)
    cfg["exits"] = {**cfg["exits"], "debounce_s": 0.05, "debounce_max_delay_s": 0.25,
                    "rules": {"stop_loss_pct": 50, "cooldown_seconds": 60}}
    daemon.write_config(cfg)
    assert daemon.ctl("reload")[0] == 0
    wait_for(lambda: len(stored_peaks(dsn, positions)) == len(positions), 30, what="peak positions watched")
    started = time.perf_counter()
    highest = publish_ticks(amqp_url(vhost), positions, args.tick_rate, args.peak_seconds)
    elapsed = time.perf_counter() - started
    time.sleep(2.0)                       # the last ticks consumed and their peaks saved
    peaks = stored_peaks(dsn, positions)
    errors = [(highest[a] - peaks[a]) / highest[a] * 100 for _, a in positions]
    print(f"peak tracking: {len(positions)} positions x {args.tick_rate:.0f} ticks/s for {elapsed:.1f}s "
          f"({len(positions) * args.tick_rate:.0f} prints/s), debounce_s 0.05: stored peak below the true highest "
          f"price by max {max(errors):.5f} %, mean {sum(errors) / len(errors):.5f} % (negative = above)")


def run(args, dsn: str, vhost: str, tmp: Path) -> None:
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    total = int(args.rate * args.seconds)
    background = insert_positions(dsn, "B", args.positions, "100")
    exits = insert_positions(dsn, "X", total // args.exit_every + 2, "100")
    exits_cfg = {"debounce_s": args.debounce_s, "debounce_max_delay_s": max(args.debounce_s, 0.25),
                 "fallback_after_s": 3600, "asset_rate": {"rate_per_s": 10, "burst": 10},
                 "rules": {"stop_loss_pct": 2, "cooldown_seconds": 60}}
    daemon = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost), logging={"level": "WARNING"}, exits=exits_cfg))
    try:
        daemon.start()
        daemon.wait_running("exits")
        port = daemon.config["metrics"]["port"]
        receiver, times = signal_times(amqp_url(vhost))
        receiver.start()
        warm = publish_paced(amqp_url(vhost), dsn, 200, 1, background, exits[-2:], 100)
        wait_for(lambda: all(pid in times for pid in warm), 30, what="warm-up exits")
        before = updates_taken(port)
        print(f"machine: {len(os.sched_getaffinity(0))} cores; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
              f"{args.rate:.0f} updates/s for {args.seconds:.0f}s, 1 in {args.exit_every} fires an exit; "
              f"debounce_s {args.debounce_s}")
        started = time.time()
        sent = publish_paced(amqp_url(vhost), dsn, args.rate, args.seconds, background, exits[:-2], args.exit_every)
        published = time.time()
        done = settled_at(port, before + total, 120)
        wait_for(lambda: all(pid in times for pid in sent), 60, what="all exit signals")
        receiver.stop.set()
        latency = np.array([(times[p] - sent[p]) * 1000 for p in sent])
        p50, p95, p99 = np.percentile(latency, [50, 95, 99])
        print(f"published {total} updates in {published - started:.2f}s; the exits role had taken all "
              f"{done - started:.2f}s after the first: sustained {total / (done - started):,.0f} updates/s")
        print(f"{len(latency)} exits: update published -> exit signal received p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
              f"p99 {p99:.1f} ms, max {latency.max():.1f} ms")
        if args.peak_positions:
            peak_tracking(args, dsn, vhost, daemon)
    finally:
        daemon.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000.0, help="position updates per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--exit-every", type=int, default=20, help="every n-th update fires an exit")
    parser.add_argument("--positions", type=int, default=200, help="background positions (never exit)")
    parser.add_argument("--debounce-s", type=float, default=0.0)
    parser.add_argument("--peak-positions", type=int, default=5, help="positions in the peak-tracking run (0: skip)")
    parser.add_argument("--tick-rate", type=float, default=100.0, help="trade prints per second per position")
    parser.add_argument("--peak-seconds", type=float, default=10.0)
    args = parser.parse_args()
    dsn, vhost = create_database("msd_bench"), create_vhost("msd_bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(args, dsn, vhost, Path(tmp))
    finally:
        drop_database(dsn)
        delete_vhost(vhost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
