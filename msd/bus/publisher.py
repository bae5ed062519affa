"""Publishing with publisher confirms: `publish` returns only once the broker has the message.

Used for trading signals (DESIGN.md §8): the outbox row is marked sent only after `publish`
returns, so every failure must surface as BrokerUnavailable and never be swallowed.

The connection is long-lived and kept alive between publishes: the owning loop calls
`service()` on every turn, which answers AMQP heartbeats while no signal is sent (a blocking
connection only reads its socket when called, so an idle one was dropped by the broker after
two missed heartbeats), notices a broker-side close at once, and reconnects with backoff before
the next signal needs the connection. A publish therefore finds an open, confirmed channel.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Mapping

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from msd import metrics
from msd.bus.connection import Link, connect, errors, reconnect_delay
from msd.bus.topology import QueueSpec, declare
from msd.errors import BrokerUnavailable, PublishUnconfirmed

# Failures that concern one message; the channel and connection stay usable after them.
_MESSAGE_LEVEL = (pika.exceptions.UnroutableError, pika.exceptions.NackError)
# Failures that prove the broker did not route the message: pika refused to send it (the channel
# or connection was closed already), or the broker closed the channel in reply to the publish
# (the only method in flight on it) before routing it. Any other loss of the connection while a
# publish waits for its confirm leaves the message's fate unknown: PublishUnconfirmed.
_NOT_SENT = (pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError,
             pika.exceptions.ChannelClosedByBroker)
# How often `service()` reads the socket while idle: far below any heartbeat interval.
SERVICE_EVERY_S = 0.1

OnState = Callable[[bool, "str | None"], None]


class ConfirmingPublisher(Link):
    """One connection and one confirm-mode channel, kept open and reopened after a loss.

    `on_state(ok, reason)` hears every outcome: (True, None) once a connection and confirm
    channel are open or a publish was confirmed, (False, reason) when the broker could not be
    used. Not thread-safe: one publisher per thread (pika's BlockingConnection is single-threaded).
    """

    def __init__(self, url: str, *, connection_name: str = "msd-publisher", on_state: OnState | None = None):
        self._url = url
        self._connection_name = connection_name
        self._on_state = on_state
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._rng = random.Random()
        self._failures = 0
        self._retry_at = 0.0
        self._next_service = 0.0

    def publish(self, routing_key: str, body: bytes, *, headers: Mapping[str, object],
                message_id: str, content_type: str = "application/json") -> None:
        """Publish persistently to the default exchange and wait for the broker's confirm.

        Raises BrokerUnavailable if the broker nacks, if no queue is bound to `routing_key`
        (mandatory flag), or if the connection is lost; the next call reconnects. A connection
        lost while the confirm was awaited raises PublishUnconfirmed: the broker routes a message
        before it confirms it (a consumer can have it first), so it may be on the queue already.
        """
        channel = self._ready_channel()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type=content_type,
            headers=dict(headers), message_id=message_id)
        try:
            with errors(f"publish to {routing_key!r}"):
                channel.basic_publish("", routing_key, body, properties, mandatory=True)
        except BrokerUnavailable as exc:
            if isinstance(exc.__cause__, _MESSAGE_LEVEL):
                raise
            self._lost(str(exc))
            if isinstance(exc.__cause__, _NOT_SENT):
                raise
            raise PublishUnconfirmed(str(exc)) from exc.__cause__
        self._tell(True, None)

    def ensure_queue(self, spec: QueueSpec) -> None:
        """Declare the queue messages will be routed to; raises BrokerUnavailable on failure."""
        channel = self._ready_channel()
        # A failed declare closes the channel; _ready_channel reopens it on the next call.
        declare(channel, spec)

    def service(self) -> None:
        """Keep the connection alive while idle; call on every turn of the owning loop. Never raises.

        Reads the socket (which sends and checks heartbeats and takes a broker-side close), and
        opens a new connection when there is none and its backoff has passed.
        """
        now = time.monotonic()
        if now < self._next_service:
            return
        self._next_service = now + SERVICE_EVERY_S
        if self._connection is None:
            if now >= self._retry_at:
                try:
                    self._ready_channel()
                except BrokerUnavailable:
                    pass        # reported by _ready_channel; retried after the backoff
            return
        try:
            with errors("heartbeat"):
                self._connection.process_data_events(time_limit=0)
        except BrokerUnavailable as exc:
            self._lost(str(exc))
            return
        if not self._connection.is_open or self._channel is None or not self._channel.is_open:
            self._lost("connection closed")

    def close(self) -> None:
        """Close the connection; a later publish would open a new one."""
        self._drop()

    def _ready_channel(self) -> BlockingChannel:
        self._drop_if_dead()
        try:
            if self._connection is None:
                self._connection = connect(self._url, connection_name=self._connection_name)
                metrics.BROKER_CONNECTS.labels(self._connection_name).inc()
            if self._channel is None or not self._channel.is_open:
                with errors("open confirm channel"):
                    channel = self._connection.channel()
                    channel.confirm_delivery()
                self._channel = channel
        except BrokerUnavailable as exc:
            self._lost(str(exc))
            raise
        self._failures = 0
        self._tell(True, None)
        return self._channel

    def _drop_if_dead(self) -> None:
        """Notice a connection that died since the last `service()` before a message is put on it.

        Nothing has been sent yet, so reconnecting silently is safe; a loss during the publish
        itself is reported.
        """
        if self._connection is None:
            return
        try:
            with errors("check connection"):
                self._connection.process_data_events(time_limit=0)
        except BrokerUnavailable:
            self._drop()
            return
        if not self._connection.is_open:
            self._drop()

    def _lost(self, reason: str) -> None:
        self._drop()
        self._retry_at = time.monotonic() + reconnect_delay(self._failures, rng=self._rng)
        self._failures += 1
        self._tell(False, reason)

    def _tell(self, ok: bool, reason: str | None) -> None:
        if self._on_state is not None:
            self._on_state(ok, reason)

