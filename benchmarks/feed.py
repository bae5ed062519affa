"""What the latency benchmarks share: ticker events as ws-gateway sends them, a paced publisher,
and a thread that reads msd's trading signals with the time each one arrived (one clock, this
process's `time.time()`, for publish and arrival).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterator

import pika

SIGNALS = "model-service.trading_signals"


def ticker(asset: str, price: float) -> bytes:
    """A ws-gateway `ticker` event with this last price (bid/ask 0.05 either side, equal sizes)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "ticker", "topic": f"tickers.{asset}", "timestamp": now,
        "received_at": now, "trace_id": str(uuid.uuid4()),
        "payload": {"symbol": asset, "lastPrice": f"{price:.2f}", "bid1Price": f"{price - 0.05:.2f}",
                    "ask1Price": f"{price + 0.05:.2f}", "bid1Size": "1", "ask1Size": "1", "volume24h": "1000",
                    "topic": f"tickers.{asset}"}}).encode()


def paced(rate: float, seconds: float) -> Iterator[int]:
    """0, 1, 2 ... int(rate * seconds) - 1, each yielded at its due time (start + i / rate)."""
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        while (lag := start + i / rate - time.perf_counter()) > 0:
            time.sleep(min(lag, 0.0005))
        yield i


def publish_ticks(url: str, rate: float, seconds: float, tick_of: Callable[[int], tuple[str, float]]) -> dict:
    """Publish `tick_of(i) = (asset, price)` tickers at `rate` per second; returns
    {(asset, price): publish time}. Prices must be unique per asset: they identify the tick."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    sent = {}
    for i in paced(rate, seconds):
        asset, price = tick_of(i)
        sent[(asset, price)] = time.time()
        channel.basic_publish("", "ws-gateway.ticker", ticker(asset, price))
    conn.close()
    return sent


class SignalReader(threading.Thread):
    """Consumes the signals queue; `take(signal, arrived_at)` for each (decoded JSON), then acks.

    `ready` is set once the consumer is registered; `stop` ends the thread; `last_at` is the
    arrival time of the newest signal (the start time until one arrives)."""

    def __init__(self, url: str, take: Callable[[dict, float], None], prefetch: int = 1000):
        super().__init__(daemon=True)
        self.url, self.take, self.prefetch = url, take, prefetch
        self.stop, self.ready = threading.Event(), threading.Event()
        self.last_at = time.time()

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = conn.channel()
        channel.queue_declare(SIGNALS, durable=True)
        channel.basic_qos(prefetch_count=self.prefetch)

        def on_message(ch, method, _props, body):
            self.last_at = time.time()
            self.take(json.loads(body), self.last_at)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(SIGNALS, on_message)
        self.ready.set()
        while not self.stop.is_set():
            conn.process_data_events(time_limit=0.05)
        conn.close()
