"""Consuming in batches with ack-after-effect (DESIGN.md §8).

Deliveries are handed to `on_batch` in groups; the batch is acked only after `on_batch`
returns, so a crash or a failed commit leaves the messages with the broker, which redelivers
them (with `redelivered=True`). Effects must therefore be idempotent.

Batching is group commit: a batch closes as soon as the socket has nothing more to give, so
an idle stream gets low latency, and under load batches grow while `on_batch` commits, up to
`max_batch` or until the oldest delivery is `max_wait_s` old.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import pika
from pika.adapters.blocking_connection import BlockingChannel

from msd import metrics
from msd.bus.connection import Link, connect, errors, reconnect_delay
from msd.bus.topology import QueueSpec, declare
from msd.errors import BrokerUnavailable, DatabaseUnavailable

log = logging.getLogger(__name__)

# Longest single blocking read while idle; bounds how late `stop` is noticed.
IDLE_POLL_S = 0.1


@dataclass(frozen=True)
class Delivery:
    """One message as received; `delivery_tag` is only meaningful on the channel it came from."""
    queue: str
    body: bytes
    headers: dict
    delivery_tag: int
    redelivered: bool
    received_monotonic: float


OnBatch = Callable[[list[Delivery]], None]
OnState = Callable[[bool, str | None], None]
OnTick = Callable[[], None]


class BatchConsumer(Link):
    """Consumes `queues` on one connection and channel; `run` blocks until `stop` is set.

    `on_state(up, reason)` is about the broker only: (False, reason) while it is unreachable, a
    queue is missing or mis-declared or the consumer was cancelled; (True, None) once consuming
    works again. A failing `on_batch` (say, the database is down) is the caller's to report: the
    batch is requeued and retried after a backoff, and the broker is not blamed for it.
    Identical consecutive states are reported once.
    `on_tick()` is called on every turn of the loop, including while waiting to reconnect, so
    the caller can prove liveness: at least every IDLE_POLL_S unless `on_batch` or a connect
    attempt (bounded by the socket timeouts) is running.
    Single-threaded: `run` owns the connection; only `stop` may be touched from other threads.
    """

    def __init__(self, url: str, queues: Sequence[QueueSpec], on_batch: OnBatch, *,
                 prefetch: int = 500, max_batch: int = 200, max_wait_s: float = 0.005,
                 connection_name: str = "msd-consumer", on_state: OnState | None = None,
                 on_tick: OnTick | None = None):
        if not queues:
            raise ValueError("BatchConsumer needs at least one queue")
        if max_batch < 1 or prefetch < max_batch:
            # With prefetch < max_batch a batch could never fill and would always wait out max_wait_s.
            raise ValueError(f"need 1 <= max_batch <= prefetch, got {max_batch=} {prefetch=}")
        self._url = url
        self._queues = tuple(queues)
        self._on_batch = on_batch
        self._prefetch = prefetch
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._connection_name = connection_name
        self._on_state = on_state
        self._on_tick = on_tick
        self._rng = random.Random()
        self._state: tuple[bool, str | None] | None = None
        self._failures = 0
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._queue_by_tag: dict[str, str] = {}
        self._cancelled: list[str] = []
        self._buffer: list[Delivery] = []
        self._drained = False

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff; never raises BrokerUnavailable."""
        try:
            while not stop.is_set():
                try:
                    self._open()
                    self._serve(stop)
                except BrokerUnavailable as exc:
                    self._report(False, str(exc))
                    self._forget_session()
                    self._wait(stop, self._next_delay(), connected=False)
        finally:
            self._forget_session()

    # -- session ----------------------------------------------------------------------------

    def _open(self) -> None:
        self._connection = connect(self._url, connection_name=self._connection_name)
        metrics.BROKER_CONNECTS.labels(self._connection_name).inc()
        with errors("open consumer channel"):
            channel = self._connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            channel.add_on_cancel_callback(self._on_cancelled)
        for spec in self._queues:
            declare(channel, spec)
        for spec in self._queues:
            with errors(f"consume from {spec.name!r}"):
                tag = channel.basic_consume(spec.name, self._on_message, auto_ack=False)
            self._queue_by_tag[tag] = spec.name
        self._channel = channel
        self._failures = 0
        self._report(True, None)

    def _forget_session(self) -> None:
        """Forget the session; unacked deliveries return to their queues when it closes."""
        self._drop()
        self._queue_by_tag.clear()
        self._cancelled.clear()
        self._buffer.clear()

    def _serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._tick()
            self._collect()
            if self._cancelled:
                queue = self._queue_by_tag.get(self._cancelled[0], self._cancelled[0])
                raise BrokerUnavailable(f"consumer on queue {queue!r} cancelled by the broker "
                                        "(queue deleted?)")
            if self._batch_due():
                self._flush(stop)

    # -- batching ---------------------------------------------------------------------------

    def _collect(self) -> None:
        """Read from the socket; block (briefly) only when there is nothing to hand over."""
        before = len(self._buffer)
        self._process(IDLE_POLL_S if before == 0 else 0)
        # An empty non-blocking read after some deliveries means the broker has sent all it has.
        self._drained = before > 0 and len(self._buffer) == before

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self._max_batch or self._drained:
            return True
        return time.monotonic() - self._buffer[0].received_monotonic >= self._max_wait_s

    def _flush(self, stop: threading.Event) -> None:
        batch = self._buffer[:self._max_batch]
        del self._buffer[:self._max_batch]
        try:
            self._on_batch(batch)
        except Exception as exc:  # whatever on_batch raised, its effect is not committed
            self._handle_failed_batch(batch, exc, stop)
            return
        # Tags on a channel grow monotonically and batches are taken in order, so `multiple`
        # acks exactly this batch (earlier tags were acked with earlier batches).
        with errors("ack batch"):
            self._channel.basic_ack(batch[-1].delivery_tag, multiple=True)
        self._failures = 0
        self._report(True, None)

    def _handle_failed_batch(self, batch: list[Delivery], exc: Exception,
                             stop: threading.Event) -> None:
        # Requeue the batch and everything buffered behind it, so that nothing is handled out
        # of the broker's order after the pause; they come back with redelivered=True.
        last = self._buffer[-1] if self._buffer else batch[-1]
        self._buffer.clear()
        with errors("nack failed batch"):
            self._channel.basic_nack(last.delivery_tag, multiple=True, requeue=True)
        # An unavailable database is reported by on_batch's owner (one line when it goes down);
        # anything else is a bug worth a traceback.
        if not isinstance(exc, DatabaseUnavailable):
            log.error("on_batch failed for %d deliveries; requeued: %s", len(batch), exc, exc_info=True)
        self._wait(stop, self._next_delay(), connected=True)

    def _wait(self, stop: threading.Event, seconds: float, *, connected: bool) -> None:
        """Wait, still ticking; while connected also answer heartbeats (and buffer redeliveries)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._tick()
            if connected:
                self._process(min(IDLE_POLL_S, remaining))
            else:
                stop.wait(min(IDLE_POLL_S, remaining))

    # -- pika callbacks and helpers ---------------------------------------------------------

    def _process(self, time_limit: float) -> None:
        with errors("receive"):
            self._connection.process_data_events(time_limit=time_limit)

    def _on_message(self, _channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                    properties: pika.spec.BasicProperties, body: bytes) -> None:
        self._buffer.append(Delivery(
            queue=self._queue_by_tag.get(method.consumer_tag, method.routing_key),
            body=body,
            headers=dict(properties.headers or {}),
            delivery_tag=method.delivery_tag,
            redelivered=bool(method.redelivered),
            received_monotonic=time.monotonic(),
        ))

    def _on_cancelled(self, method_frame: pika.frame.Method) -> None:
        # Raising inside a pika callback would leave the dispatch half done; _serve checks this.
        self._cancelled.append(method_frame.method.consumer_tag)

    def _tick(self) -> None:
        if self._on_tick is not None:
            self._on_tick()

    def _next_delay(self) -> float:
        delay = reconnect_delay(self._failures, rng=self._rng)
        self._failures += 1
        return delay

    def _report(self, up: bool, reason: str | None) -> None:
        if self._state == (up, reason):
            return
        first = self._state is None
        self._state = (up, reason)
        # Going down and coming back are said once by the on_state owner; here only the start.
        log.log(logging.INFO if up and first else logging.DEBUG, "consumer %s %s", self._connection_name,
                "consuming from " + ", ".join(spec.name for spec in self._queues) if up else f"not consuming: {reason}")
        if self._on_state is not None:
            self._on_state(up, reason)
