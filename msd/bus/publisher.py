"""Publishing with pipelined publisher confirms: `send` returns at once, verdicts come back later.

Used for trading signals (DESIGN.md §8). The owning loop (a role's, single-threaded) hands a
message to `send` and goes on with its next turn; the broker's verdict on it arrives as an
`Outcome` from `poll()`, which the loop calls on every turn. The outbox marks a signal sent only
on a `confirmed` outcome, so nothing is taken as published before the broker has it.

Why a thread: pika's BlockingChannel in confirm mode makes every basic_publish wait for its own
confirm (a round trip and the broker's fsync, ~3 ms each, one after another), and offers no
public way to publish without waiting. The connection is therefore a SelectConnection owned by
one I/O thread (`_Link`), with `confirm_delivery(ack_nack_callback)`: publishes are handed to that
thread through `IOLoop.add_callback_threadsafe` (so they go out in the order `send` was called),
and the thread hands every verdict and state change back through a thread-safe queue. Only the
I/O thread touches pika objects; only the owning loop reads the queue and calls `on_state`.

The I/O thread answers heartbeats whatever the loop does, reconnects at once after a loss (with
backoff after a failed attempt: `reconnect_delay`), and holds what is sent while it connects.

Verdicts per message (`Outcome.status`):
- confirmed:   the broker acked it and did not return it.
- refused:     it was not routed: nacked, returned as unroutable (mandatory flag), or never put
               on a connection (none open, or the attempt to open one failed). Sending it again
               cannot make a second copy.
- unconfirmed: the connection or channel closed while its confirm was outstanding. The broker
               routes a message before it confirms it, so it may be on the queue already. A
               channel closed by the broker with exactly one publish outstanding (and no declare
               in flight) was closed in reply to that publish (e.g. ACCESS_REFUSED): refused.
"""
from __future__ import annotations

import queue
import random
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal, Mapping

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from msd import metrics
from msd.bus.connection import STACK_TIMEOUT_S, describe, errors, parameters, reconnect_delay, where
from msd.bus.topology import QueueSpec, declare_arguments
from msd.errors import BrokerUnavailable

OnState = Callable[[bool, "str | None"], None]
Status = Literal["confirmed", "refused", "unconfirmed"]
# ensure_queue waits at most this long (a connection attempt in progress included).
DECLARE_TIMEOUT_S = STACK_TIMEOUT_S + 5.0
CLOSE_TIMEOUT_S = 5.0

CONNECTING, READY, DOWN = "connecting", "ready", "down"


@dataclass(frozen=True)
class Outcome:
    """The broker's verdict on one sent message; `at` is time.monotonic() when it was known."""
    message_id: str
    status: Status
    reason: str | None
    at: float


@dataclass(frozen=True)
class _Publish:
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    message_id: str


class ConfirmingPublisher:
    """One connection and one confirm-mode channel, owned by an I/O thread; see the module doc.

    `on_state(ok, reason)` hears, in the owning loop (from `poll`), every change: (True, None)
    once a confirm channel is open, (False, reason) when the broker could not be used.
    """

    def __init__(self, url: str, *, connection_name: str = "msd-publisher", on_state: OnState | None = None):
        self._url = url
        self._connection_name = connection_name
        self._on_state = on_state
        self._link: _Link | None = None

    def send(self, routing_key: str, body: bytes, *, headers: Mapping[str, object],
             message_id: str, content_type: str = "application/json") -> None:
        """Publish persistently (mandatory) to the default exchange without waiting for the confirm.

        Raises BrokerUnavailable at once, nothing sent, while the broker is known to be down (a
        reconnect waits for its backoff); otherwise the verdict comes from a later `poll()`.
        """
        link = self._started()
        if link.state == DOWN:
            raise BrokerUnavailable(f"publish to {routing_key!r}: {link.reason}")
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type=content_type,
            headers=dict(headers), message_id=message_id)
        link.ioloop.add_callback_threadsafe(partial(link.publish, _Publish(routing_key, body, properties, message_id)))

    def ensure_queue(self, spec: QueueSpec) -> None:
        """Declare the queue messages will be routed to, and wait for the broker's answer.

        Raises BrokerUnavailable on failure (a failed declare closes the channel; the I/O thread
        opens a new one). Publishes sent before it keep their place in the pipeline."""
        link = self._started()
        if link.state == DOWN:
            raise BrokerUnavailable(f"declare queue {spec.name!r}: {link.reason}")
        done: Future = Future()
        link.ioloop.add_callback_threadsafe(partial(link.declare, spec, done))
        try:
            done.result(timeout=DECLARE_TIMEOUT_S)
        except FutureTimeout:
            raise BrokerUnavailable(f"declare queue {spec.name!r}: no answer within {DECLARE_TIMEOUT_S:g}s") from None

    def poll(self) -> list[Outcome]:
        """The verdicts known since the last call, in the order they were known; never raises.

        Also starts the connection (the first call) and reports state changes to `on_state`."""
        return self._drain(self._started())

    def close(self) -> list[Outcome]:
        """Close the connection; returns the verdicts not polled yet, those of the messages whose
        confirm was still outstanding included (unconfirmed). A later call opens a new one."""
        link, self._link = self._link, None
        if link is None:
            return []
        link.ioloop.add_callback_threadsafe(link.shutdown)
        link.thread.join(CLOSE_TIMEOUT_S)
        return self._drain(link)

    def _started(self) -> "_Link":
        if self._link is None:
            self._link = _Link(self._url, self._connection_name)
        return self._link

    def _drain(self, link: "_Link") -> list[Outcome]:
        outcomes = []
        while True:
            try:
                event = link.events.get_nowait()
            except queue.Empty:
                return outcomes
            if isinstance(event, Outcome):
                outcomes.append(event)
            elif self._on_state is not None:
                self._on_state(*event)


class _Link:
    """The I/O thread's side: every method but __init__ runs on the I/O thread."""

    def __init__(self, url: str, connection_name: str):
        self.params = parameters(url, connection_name=connection_name)
        self.connection_name = connection_name
        self.events: queue.SimpleQueue = queue.SimpleQueue()      # Outcome | (ok, reason)
        self.state, self.reason = CONNECTING, "connecting"       # read by the owning loop
        self.ioloop = IOLoop()
        self.connection: pika.SelectConnection | None = None
        self.channel = None
        self.held: list[Callable[[], None]] = []    # sent while connecting: run once ready, in order
        self.outstanding: dict[int, _Publish] = {}  # delivery tag -> message, oldest first
        self.returned: set[str] = set()             # returned as unroutable; their ack follows
        self.declaring: list[tuple[QueueSpec, Future]] = []
        self.tag = 0
        self.failures = 0
        self.stopping = False
        self.rng = random.Random()
        self.thread = threading.Thread(target=self.run, name=f"{connection_name}-io", daemon=True)
        self.thread.start()

    def run(self) -> None:
        self.ioloop.add_callback_threadsafe(self.connect)
        self.ioloop.start()
        self.ioloop.close()

    # --- the connection ---------------------------------------------------------------------
    def connect(self) -> None:
        if self.stopping:
            return
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
        for action in held:
            action()

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
        self.state, self.reason = DOWN, reason
        self.events.put((False, reason))
        held, self.held = self.held, []
        for action in held:
            action()                # with state DOWN, each one refuses itself
        self.ioloop.call_later(reconnect_delay(self.failures, rng=self.rng), self.connect)
        self.failures += 1

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
        self.state, self.reason = DOWN, "publisher closed"
        held, self.held = self.held, []
        for action in held:
            action()
        self.ioloop.call_later(CLOSE_TIMEOUT_S, self.ioloop.stop)      # a close that never completes
        if self.connection is None:
            self.ioloop.stop()
            return
        try:
            self.connection.close()
        except pika.exceptions.ConnectionWrongStateError:
            self.ioloop.stop()      # closing already: nothing to wait for

    # --- messages ---------------------------------------------------------------------------
    def publish(self, message: _Publish) -> None:
        if self.state == CONNECTING:
            self.held.append(partial(self.publish, message))
            return
        if self.state != READY or self.channel is None:
            self.verdict(message.message_id, "refused", f"publish to {message.routing_key!r}: {self.reason}")
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
        if self.state == CONNECTING:
            self.held.append(partial(self.declare, spec, done))
            return
        if self.state != READY or self.channel is None:
            done.set_exception(BrokerUnavailable(f"declare queue {spec.name!r}: {self.reason}"))
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
