"""Signal latency: market tick published -> trading signal received, through the real daemon.

One strategy is evaluated on every market update of its asset (trigger: market) with limits
high enough never to throttle. Each tick carries a unique last price, and the signal's
market_data_snapshot.price tells which tick it was decided on. Ticks that were coalesced with a
newer one (drained in the same turn) produce no signal of their own and are reported as such.
Usage: python benchmarks/signal_latency.py [--rate 200] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
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

from msd.store.neighbours import create_neighbour_tables  # noqa: E402
from tests.fixtures.pg import create_database, drop_database  # noqa: E402
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost  # noqa: E402
from tests.integration.daemon import Daemon, base_config, wait_for  # noqa: E402

SIGNALS = "model-service.trading_signals"


def tick(price: float) -> bytes:
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "ticker", "topic": "tickers.BTCUSDT", "timestamp": now,
        "received_at": now, "trace_id": str(uuid.uuid4()),
        "payload": {"symbol": "BTCUSDT", "lastPrice": f"{price:.2f}", "bid1Price": f"{price - 0.05:.2f}",
                    "ask1Price": f"{price + 0.05:.2f}", "bid1Size": "1", "ask1Size": "1", "volume24h": "1000",
                    "topic": "tickers.BTCUSDT"}}).encode()


class Receiver(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.received, self.stop, self.ready = url, {}, threading.Event(), threading.Event()

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = conn.channel()
        channel.queue_declare(SIGNALS, durable=True)

        def on_message(ch, method, _props, body):
            price = round(json.loads(body)["market_data_snapshot"]["price"], 2)
            self.received.setdefault(price, time.time())
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(SIGNALS, on_message)
        self.ready.set()
        while not self.stop.is_set():
            conn.process_data_events(time_limit=0.05)
        conn.close()


def publish_ticks(url: str, rate: float, seconds: float) -> dict[float, float]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    sent, total, start = {}, int(rate * seconds), time.perf_counter()
    for i in range(total):
        while time.perf_counter() < start + i / rate:
            time.sleep(0.0005)
        price = round(95000 + i * 0.01, 2)
        sent[price] = time.time()
        channel.basic_publish("", "ws-gateway.ticker", tick(price))
    conn.close()
    return sent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    dsn, vhost = create_database("msd_bench"), create_vhost("msd_bench")
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    strategy = {"id": "every_tick", "assets": ["BTCUSDT"], "trigger": "market",
                "rate": {"rate_per_s": 100000, "burst": 100000},
                "warmup": {"frequency_s": 0.000001, "heuristic": "random", "min_amount_usdt": 10,
                           "max_amount_usdt": 20, "max_exposure_usdt": 10 ** 12}}
    with tempfile.TemporaryDirectory() as tmp:
        signaller = {"strategies": [strategy], "global_rate": {"rate_per_s": 100000, "burst": 100000}}
        daemon = Daemon(Path(tmp), base_config(Path(tmp), dsn, amqp_url(vhost), signaller=signaller,
                                               logging={"level": "WARNING"}))
        receiver = Receiver(amqp_url(vhost))
        try:
            daemon.start()
            daemon.wait_running("signaller")
            receiver.start()
            receiver.ready.wait(10)
            publish_ticks(amqp_url(vhost), 20, 1)            # warm-up
            time.sleep(1)
            receiver.received.clear()
            sent = publish_ticks(amqp_url(vhost), args.rate, args.seconds)
            wait_for(lambda: max(receiver.received, default=0) >= max(sent) - 0.001, 30, what="last signal")
            report(args, sent, dict(receiver.received))
        finally:
            receiver.stop.set()
            daemon.close()
            drop_database(dsn)
            delete_vhost(vhost)
    return 0


def report(args, sent: dict[float, float], received: dict[float, float]) -> None:
    latency = np.array([(received[p] - sent[p]) * 1000 for p in sent if p in received])
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    print(f"machine: {os.cpu_count()} cores; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"ticks: {len(sent)} at {args.rate:.0f}/s; signals: {len(latency)} "
          f"({len(sent) - len(latency)} ticks coalesced into a newer one)")
    print(f"tick published -> signal received: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
          f"max {latency.max():.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
