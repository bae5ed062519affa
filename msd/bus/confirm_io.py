"""The I/O thread side of msd.bus.publisher: one SelectConnection, its confirm channel, verdicts.

Every method of `ConfirmLink` but __init__ runs on its own thread (pika objects are touched
nowhere else); the owner reads `state`/`reason` and takes `events` (Outcome | (ok, reason)).
The rules (what is refused, what is unconfirmed, when it reconnects) are in msd.bus.publisher.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from msd import metrics
from msd.bus.connection import describe, errors, parameters, reconnect_delay, where
from msd.bus.topology import QueueSpec, declare_arguments
from msd.errors import BrokerUnavailable

Status = Literal["confirmed", "refused", "unconfirmed"]
CLOSE_TIMEOUT_S = 5.0
# While the broker is down, something to send brings the next attempt forward to at most this
# long after the last one (instead of waiting out a backoff of up to 10 s).
ON_DEMAND_RETRY_S = 0.25

CONNECTING, READY, DOWN = "connecting", "ready", "down"
log = logging.getLogger("msd.publisher")


@dataclass(frozen=True)
class Outcome:
    """The broker's verdict on one sent message; `at` is time.monotonic() when it was known."""
    message_id: str
    status: Status
    reason: str | None
    at: float


@dataclass(frozen=True)
class Publish:
    """One message for the I/O thread to publish."""
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    message_id: str


class ConfirmLink:
    """The I/O thread's side: every method but __init__ runs on the I/O thread."""

    def __init__(self, url: str, connection_name: str):
        self.params = parameters(url, connection_name=connection_name)
        self.connection_name = connection_name
        self.events: queue.SimpleQueue = queue.SimpleQueue()      # Outcome | (ok, reason)
        self.state, self.reason = CONNECTING, "connecting"       # read by the owning loop
        self.ioloop = IOLoop()
        self.connection: pika.SelectConnection | None = None
        self.channel = None
        # sent while no confirm channel is open: (run, refuse), run once one is, in order
        self.held: list[tuple[Callable[[], None], Callable[[str], None]]] = []
        self.outstanding: dict[int, Publish] = {}  # delivery tag -> message, oldest first
        self.returned: set[str] = set()             # returned as unroutable; their ack follows
        self.declaring: list[tuple[QueueSpec, Future]] = []
        self.tag = 0
        self.failures = 0
        self.stopping = False
        self.rng = random.Random()
        self.timer, self.timer_at = None, 0.0       # the next connection attempt, while DOWN
        self.last_attempt = 0.0
        self.thread = threading.Thread(target=self.run, name=f"{connection_name}-io", daemon=True)
        self.thread.start()

    def run(self) -> None:
        self.ioloop.add_callback_threadsafe(self.connect)
        try:
            self.ioloop.start()
        except Exception as exc:    # a bug in a callback: say so; the owner starts a new link
            log.exception("publisher I/O thread %s failed", self.connection_name)
            self.reason, self.state = f"publisher I/O thread failed: {exc!r}", DOWN
            self.settle_outstanding(exc)
            self.events.put((False, self.reason))
        finally:
            self.ioloop.close()

    # --- the connection ---------------------------------------------------------------------
    def connect(self) -> None:
        self.timer = None
        if self.stopping:
            return
        self.last_attempt = time.monotonic()
        self.state, self.reason = CONNECTING, "connecting"
        self.connection = pika.SelectConnection(
            self.params, on_open_callback=self.opened, on_open_error_callback=self.open_failed,
            on_close_callback=self.closed, custom_ioloop=self.ioloop)

    def opened(self, connection) -> None:
        metrics.BROKER_CONNECTS.labels(self.connection_name).inc()
        self.open_channel()

    def open_channel(self) -> None:
        try:
            with errors("open confirm channel"):
                self.connection.channel(on_open_callback=self.channel_opened)
        except BrokerUnavailable as exc:
            self.abandon(str(exc))

    def channel_opened(self, channel) -> None:
        channel.add_on_close_callback(self.channel_closed)
        channel.add_on_return_callback(self.on_return)
        try:
            with errors("open confirm channel"):
                channel.confirm_delivery(ack_nack_callback=self.on_confirm,
                                         callback=partial(self.confirming, channel))
        except BrokerUnavailable as exc:
            self.abandon(str(exc))

    def confirming(self, channel, _frame) -> None:
        self.channel, self.tag, self.failures = channel, 0, 0
        self.state, self.reason = READY, None
        self.events.put((True, None))
        held, self.held = self.held, []
        for run, _ in held:
            run()

    def open_failed(self, _connection, error: BaseException) -> None:
        self.connection = None
        reason = f"connect to {where(self.params)}: {describe(error)}"
        if self.stopping:
            self.ioloop.stop()
            return
        self.down(reason)

    def closed(self, _connection, error: BaseException) -> None:
        self.connection, self.channel = None, None
        self.settle_outstanding(error)
        if self.stopping:
            self.ioloop.stop()
            return
        reason = f"connection lost: {describe(error)}"
        if self.failures:
            self.down(reason)       # it opened but gave no confirm channel (abandon): back off
            return
        self.events.put((False, reason))
        self.connect()              # at once: a loss is not a failed attempt (those back off)

    def abandon(self, reason: str) -> None:
        """A connection that opened but cannot give a confirm channel: closed, then `closed` reconnects."""
        self.events.put((False, reason))
        self.failures += 1
        if self.connection is not None and self.connection.is_open:
            self.connection.close()

    def down(self, reason: str) -> None:
        """A failed attempt: what waited for it is refused, the next attempt waits for its backoff."""
        self.reason, self.state = reason, DOWN
        self.events.put((False, reason))
        self.refuse_held(reason)
        self.schedule(reconnect_delay(self.failures, rng=self.rng))
        self.failures += 1

    def schedule(self, delay: float) -> None:
        """The next attempt in `delay` seconds, unless one is due sooner already."""
        at = time.monotonic() + delay
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.ioloop.remove_timeout(self.timer)
        self.timer, self.timer_at = self.ioloop.call_later(delay, self.connect), at

    def hold(self, run: Callable[[], None], refuse: Callable[[str], None]) -> None:
        """Something to send with no confirm channel open: it waits for the next attempt, which
        is brought forward while DOWN (at most one on-demand attempt per ON_DEMAND_RETRY_S), as a
        publish used to connect on demand; the attempt failing refuses it."""
        if self.stopping:
            refuse(self.reason)
            return
        self.held.append((run, refuse))
        if self.state == DOWN:
            self.schedule(max(0.0, self.last_attempt + ON_DEMAND_RETRY_S - time.monotonic()))

    def refuse_held(self, reason: str) -> None:
        held, self.held = self.held, []
        for _, refuse in held:
            refuse(reason)

    def channel_closed(self, channel, error: BaseException) -> None:
        if channel is not self.channel and self.channel is not None:
            return
        self.channel = None
        caused_by_publish = (isinstance(error, pika.exceptions.ChannelClosedByBroker)
                             and len(self.outstanding) == 1 and not self.declaring)
        self.settle_outstanding(error, refused=caused_by_publish)
        for spec, done in self.declaring:
            done.set_exception(BrokerUnavailable(f"declare queue {spec.name!r} ({spec.declare}): {describe(error)}"))
        self.declaring = []
        if self.connection is not None and self.connection.is_open and not self.stopping:
            # The broker closed the channel (a failed declare, a refused publish): a new one.
            self.state, self.reason = CONNECTING, f"channel closed: {describe(error)}"
            self.open_channel()

    def shutdown(self) -> None:
        self.stopping = True
        for spec, done in self.declaring:
            done.set_exception(BrokerUnavailable(f"declare queue {spec.name!r}: publisher closed"))
        self.declaring = []
        self.reason, self.state = "publisher closed", DOWN
        self.refuse_held(self.reason)
        if self.timer is not None:
            self.ioloop.remove_timeout(self.timer)
            self.timer = None
        self.ioloop.call_later(CLOSE_TIMEOUT_S, self.ioloop.stop)      # a close that never completes
        if self.connection is None:
            self.ioloop.stop()
            return
        try:
            self.connection.close()
        except pika.exceptions.ConnectionWrongStateError:
            self.ioloop.stop()      # closing already: nothing to wait for

    # --- messages ---------------------------------------------------------------------------
    def publish(self, message: Publish) -> None:
        if self.state != READY or self.channel is None:
            self.hold(partial(self.publish, message), lambda reason: self.verdict(
                message.message_id, "refused", f"publish to {message.routing_key!r}: {reason}"))
            return
        try:
            with errors(f"publish to {message.routing_key!r}"):
                self.channel.basic_publish("", message.routing_key, message.body, message.properties,
                                           mandatory=True)
        except BrokerUnavailable as exc:
            self.verdict(message.message_id, "refused", str(exc))
            return
        self.tag += 1
        self.outstanding[self.tag] = message

    def declare(self, spec: QueueSpec, done: Future) -> None:
        if self.state != READY or self.channel is None:
            self.hold(partial(self.declare, spec, done), lambda reason: done.set_exception(
                BrokerUnavailable(f"declare queue {spec.name!r}: {reason}")))
            return
        self.declaring.append((spec, done))
        try:
            with errors(f"declare queue {spec.name!r} ({spec.declare})"):
                self.channel.queue_declare(spec.name, callback=partial(self.declared, spec, done),
                                           **declare_arguments(spec))
        except BrokerUnavailable as exc:
            self.declaring.remove((spec, done))
            done.set_exception(exc)

    def declared(self, spec: QueueSpec, done: Future, _frame) -> None:
        if (spec, done) in self.declaring:
            self.declaring.remove((spec, done))
        done.set_result(None)

    def on_return(self, _channel, _method, properties, _body) -> None:
        # A mandatory message no queue took: the broker acks it right after returning it.
        self.returned.add(properties.message_id)

    def on_confirm(self, frame) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:     # every outstanding tag up to this one (tags are in order)
            tags = []
            for tag in self.outstanding:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self.outstanding else []
        for tag in tags:
            message = self.outstanding.pop(tag)
            where_to = f"publish to {message.routing_key!r}"
            if nacked:
                self.verdict(message.message_id, "refused", f"{where_to}: message nacked by the broker")
            elif message.message_id in self.returned:
                self.returned.discard(message.message_id)
                self.verdict(message.message_id, "refused",
                             f"{where_to}: message returned as unroutable (no queue bound to the routing key)")
            else:
                self.verdict(message.message_id, "confirmed", None)

    def settle_outstanding(self, error: BaseException, *, refused: bool = False) -> None:
        outstanding, self.outstanding = self.outstanding, {}
        self.returned.clear()
        for message in outstanding.values():
            where_to = f"publish to {message.routing_key!r}"
            if refused:
                self.verdict(message.message_id, "refused", f"{where_to}: {describe(error)}")
            else:
                self.verdict(message.message_id, "unconfirmed",
                             f"{where_to}: connection lost before the confirm: {describe(error)}")

    def verdict(self, message_id: str, status: Status, reason: str | None) -> None:
        self.events.put(Outcome(message_id, status, reason, time.monotonic()))
