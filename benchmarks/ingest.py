"""Ingest benchmark: execution events published to the real broker -> committed in PostgreSQL.

Starts the real daemon (own database and vhost), publishes order-manager `filled` events at a
fixed rate, and reads back when each execution row was written (`msd.executions.created_at`,
the inserting transaction's time, so commit latency is understated by the commit itself,
well under a millisecond here). Prints sustained events/s and publish->committed latency
percentiles. Usage: python benchmarks/ingest.py [--rate 2000] [--seconds 10] [--junk-rate 1000]

With --junk-rate N, a second publisher sends N malformed messages per second to the same queue
for the same time (the hostile families of issue #10: bad JSON, UTF-16, lone surrogates, absurd
numbers, oversized bodies, ...), and the figures are those of the valid events among them.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pika
import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import examples  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, wait_for  # noqa: E402

QUEUE = "order-manager.order_events"


def event(order_id: str) -> bytes:
    body = json.loads(examples.FILLED_EVENT)
    body["order"].update(order_id=order_id, signal_id=str(uuid.uuid4()))
    return json.dumps(body).encode()


def junk_bodies() -> list[bytes]:
    """One of each hostile family, cycled by the junk publisher."""
    filled = examples.FILLED_EVENT
    return [
        b"{not json", b"[1, 2, 3]", b"", b"\xff\xfe\x00garbage", b"junk " * 20,
        filled.decode().encode("utf-16"),                                                    # UTF-16 body
        filled.replace(b'"order_id": "1c9a', b'"order_id": "\\ud800', 1),                  # lone surrogate
        filled.replace(b'"quantity": "0.00100000"', b'"quantity": "1e400"', 1),              # "1e400"
        filled.replace(b'"fees": "0.05225677"', b'"fees": ' + b"9" * 400, 1),                # 400 digits
        filled.replace(b'"0.00100000"', b'"NaN"', 1),
        filled.replace(b'"is_dry_run": false', b'"is_dry_run": "maybe"', 1),
        filled.replace(b'"2025-11-20T10:15:31.422890"', b'"2099-01-01T00:00:00"', 1),       # far future
    ]


def junk_stream() -> "itertools.cycle":
    """The families in turn; one body in 1,000 is over consumer.max_body_bytes (1 MiB + 1 byte)."""
    small = junk_bodies()
    cycle = [small[i % len(small)] for i in range(999)] + [b"{" + b" " * (1 << 20) + b"}"]
    return itertools.cycle(cycle)


def publish_paced(url: str, rate: float, seconds: float, prefix: str,
                  bodies: "itertools.cycle | None" = None) -> dict[str, float]:
    """Publish rate*seconds messages evenly spaced: valid events named `prefix`-i, or the next of
    `bodies` when given. Returns order_id -> publish wall time (valid events only)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while (lag := due - time.perf_counter()) > 0:
            time.sleep(min(lag, 0.001))
        if bodies is not None:
            channel.basic_publish("", QUEUE, next(bodies), pika.BasicProperties(content_type="application/json"))
            continue
        order_id = f"{prefix}-{i}"
        body = event(order_id)
        sent[order_id] = time.time()
        channel.basic_publish("", QUEUE, body, pika.BasicProperties(content_type="application/json"))
    conn.close()
    return sent


def committed_times(dsn: str, prefix: str) -> dict[str, float]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT order_id, created_at FROM msd.executions WHERE order_id LIKE %s", (prefix + "-%",))
        return {order_id: created.timestamp() for order_id, created in cur.fetchall()}


def count(dsn: str, prefix: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM msd.executions WHERE order_id LIKE %s", (prefix + "-%",))
        return cur.fetchone()[0]


def dead_letters(dsn: str) -> str:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT reason, count(*) FROM msd.dead_letters GROUP BY reason ORDER BY 2 DESC")
        stored = cur.fetchall()
        cur.execute("SELECT coalesce(sum(count), 0) FROM msd.dead_letter_overflow")
        overflow = cur.fetchone()[0]
    return ", ".join(f"{reason} {n}" for reason, n in stored) + f"; counted, not stored: {overflow}"


def report(label: str, sent: dict[str, float], done: dict[str, float]) -> None:
    latency_ms = np.array([(done[k] - sent[k]) * 1000 for k in sent if k in done])
    span = max(done.values()) - min(sent.values())
    p50, p95, p99 = np.percentile(latency_ms, [50, 95, 99])
    print(f"{label}: {len(done)}/{len(sent)} committed, sustained {len(done) / span:,.0f} events/s; "
          f"publish->committed latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {latency_ms.max():.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second to publish")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--junk-rate", type=float, default=0.0, help="malformed messages per second alongside")
    args = parser.parse_args()
    dsn, vhost = create_database("msd_bench"), create_vhost("msd_bench")
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp), base_config(Path(tmp), dsn, amqp_url(vhost), logging={"level": "WARNING"}))
        try:
            daemon.start()
            daemon.wait_running("consumer")
            publish_paced(amqp_url(vhost), 200, 1, "warmup")
            wait_for(lambda: count(dsn, "warmup") == 200, 30, what="warm-up events")
            print(f"machine: {len(__import__('os').sched_getaffinity(0))} cores; "
                  f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; rate {args.rate:.0f}/s for {args.seconds:.0f}s"
                  + (f"; junk {args.junk_rate:.0f}/s alongside" if args.junk_rate else ""))
            junk = None
            if args.junk_rate:
                junk = threading.Thread(target=publish_paced, args=(amqp_url(vhost), args.junk_rate, args.seconds,
                                                                    "junk", junk_stream()))
                junk.start()
            sent = publish_paced(amqp_url(vhost), args.rate, args.seconds, "paced")
            if junk is not None:
                junk.join()
            wait_for(lambda: count(dsn, "paced") == len(sent), 300, what="all events committed")
            report("paced" + (" (valid among junk)" if junk else ""), sent, committed_times(dsn, "paced"))
            if junk is not None:
                print(f"dead letters: {dead_letters(dsn)}")
        finally:
            daemon.close()
            drop_database(dsn)
            delete_vhost(vhost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
