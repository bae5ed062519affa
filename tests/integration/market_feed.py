"""Publishes fresh ws-gateway market data (real envelope format) for daemon tests."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pika

PRICES = {"BTCUSDT": 95000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0, "XRPUSDT": 0.6, "ADAUSDT": 0.4}


def _naive_now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


def ticker_event(asset: str, price: float) -> bytes:
    spread = price * 0.0001
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "ticker", "topic": f"tickers.{asset}",
        "timestamp": _naive_now(), "received_at": _naive_now(),
        "payload": {"symbol": asset, "lastPrice": f"{price:.4f}", "bid1Price": f"{price - spread:.4f}",
                    "ask1Price": f"{price + spread:.4f}", "bid1Size": "1.5", "ask1Size": "1.2",
                    "volume24h": "1234.5", "topic": f"tickers.{asset}"},
        "trace_id": str(uuid.uuid4())}).encode()


def trade_event(asset: str, price: str) -> bytes:
    """One public trade print at `price` (a decimal string), stamped now."""
    now = datetime.now(timezone.utc)
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "trade", "topic": f"publicTrade.{asset}",
        "timestamp": _naive_now(), "received_at": _naive_now(), "trace_id": str(uuid.uuid4()),
        "payload": {"T": int(now.timestamp() * 1000), "s": asset, "S": "Buy", "v": "0.01", "p": price,
                    "L": "PlusTick", "i": str(uuid.uuid4()), "BT": False, "topic": f"publicTrade.{asset}"}}).encode()


class MarketFeed:
    """Keeps the given assets fresh by publishing a ticker for each every `interval` seconds."""

    def __init__(self, url: str, assets, interval: float = 0.2):
        self.url, self.assets, self.interval = url, set(assets), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MarketFeed":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        # Tests close connections from the server side; the feed reconnects like a real gateway.
        while not self._stop.is_set():
            try:
                self._publish_until_stopped()
            except (pika.exceptions.AMQPError, OSError):
                self._stop.wait(0.2)

    def _publish_until_stopped(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = conn.channel()
        try:
            while not self._stop.is_set():
                for asset in list(self.assets):
                    channel.basic_publish("", "ws-gateway.ticker", ticker_event(asset, PRICES[asset]),
                                          pika.BasicProperties(delivery_mode=2))
                conn.process_data_events(time_limit=self.interval)
        finally:
            if conn.is_open:
                conn.close()


class SignalTap:
    """Collects every message on the signals queue of a test vhost (the test is its only consumer)."""

    def __init__(self, url: str, queue: str = "model-service.trading_signals"):
        self.url, self.queue = url, queue
        self.messages: list[tuple[dict, dict]] = []    # (body, headers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> "SignalTap":
        self._thread.start()
        assert self._ready.wait(10), "signal tap did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = conn.channel()
        channel.queue_declare(self.queue, durable=True)

        def on_message(ch, method, props, body):
            self.messages.append((json.loads(body), dict(props.headers or {})))
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.queue, on_message)
        self._ready.set()
        while not self._stop.is_set():
            try:
                conn.process_data_events(time_limit=0.1)
            except pika.exceptions.AMQPError:
                if self._stop.is_set():
                    break
                raise
        if conn.is_open:
            conn.close()

    def bodies(self, strategy: str | None = None) -> list[dict]:
        return [b for b, _ in list(self.messages) if strategy is None or b["strategy_id"] == strategy]


def drain_queue(url: str, queue: str = "model-service.trading_signals") -> list[tuple[dict, dict]]:
    """Take every message currently on `queue` (body, headers)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    taken = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        taken.append((json.loads(body), dict(props.headers or {})))
    conn.close()
    return taken


def kline_event(asset: str, start: datetime, close: float, confirmed: bool = True) -> bytes:
    start_ms = int(start.timestamp() * 1000)
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "kline", "topic": f"kline.1.{asset}",
        "timestamp": _naive_now(), "received_at": _naive_now(), "trace_id": str(uuid.uuid4()),
        "payload": {"start": start_ms, "end": start_ms + 59_999, "interval": "1", "open": f"{close:.4f}",
                    "close": f"{close:.4f}", "high": f"{close * 1.0005:.4f}", "low": f"{close * 0.9995:.4f}",
                    "volume": "10", "turnover": f"{close * 10:.2f}", "confirm": confirmed,
                    "timestamp": start_ms + 59_000, "topic": f"kline.1.{asset}"}}).encode()


def publish_history(url: str, asset: str, minutes: int = 62) -> None:
    """The last `minutes` closed 1-minute bars of `asset` (a gentle wave around its price), so
    returns, volatility and the hourly average are known at once."""
    import math
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    for back in range(minutes, 0, -1):
        close = PRICES[asset] * (1 + 0.001 * math.sin(back / 3))
        channel.basic_publish("", "ws-gateway.kline", kline_event(asset, now - timedelta(minutes=back), close))
    conn.close()
