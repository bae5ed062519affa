"""A plain broker link, the way msd's neighbours use RabbitMQ: one connection, one channel.

Unlike msd's own consumer (batch ack after commit), order-manager settles each message on its
own: ack, or nack(requeue=False) which drops it (there are no dead-letter exchanges). So this
link hands over single deliveries and lets the caller settle each one. Publishing is plain (no
confirms), with exactly the properties given. Single-threaded, like pika's BlockingConnection.
The paper exchange (msd.sim) plays the neighbours with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pika
from pika.adapters.blocking_connection import BlockingChannel

from msd.bus.connection import Link, connect, errors
from msd.bus.topology import QueueSpec, declare


@dataclass(frozen=True)
class Inbound:
    body: bytes
    headers: Mapping[str, object]
    delivery_tag: int


class PlainLink(Link):
    """Declares the stand-ins' queues, consumes one of them, publishes to any of them.

    Every failure surfaces as BrokerUnavailable; after one, `close()` and `open()` again
    (unsettled deliveries return to their queue when the connection closes).
    """

    def __init__(self, url: str, *, connection_name: str = "msd-sim", prefetch: int = 50):
        self._url = url
        self._connection_name = connection_name
        self._prefetch = prefetch
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._received: list[Inbound] = []

    def open(self, queues: Sequence[QueueSpec], consume: str | None) -> None:
        """Connect, declare `queues` and start consuming `consume` (if given)."""
        self._connection = connect(self._url, connection_name=self._connection_name)
        with errors("open sim channel"):
            self._channel = self._connection.channel()
            self._channel.basic_qos(prefetch_count=self._prefetch)
        for spec in queues:
            declare(self._channel, spec)
        if consume is not None:
            with errors(f"consume from {consume!r}"):
                self._channel.basic_consume(consume, self._on_message, auto_ack=False)

    def close(self) -> None:
        self._drop()
        self._received.clear()

    def publish(self, queue: str, body: bytes, *, persistent: bool,
                headers: Mapping[str, str] | None = None, content_type: str | None = None,
                timestamp: int | None = None) -> None:
        """Publish to the default exchange; unset properties stay absent on the wire."""
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent if persistent else None,
            headers=dict(headers) if headers is not None else None,
            content_type=content_type, timestamp=timestamp)
        with errors(f"publish to {queue!r}"):
            self._channel.basic_publish("", queue, body, properties)

    def receive(self, time_limit: float) -> list[Inbound]:
        """Deliveries that arrived within `time_limit` seconds (0 = only what is already here)."""
        with errors("receive"):
            self._connection.process_data_events(time_limit=time_limit)
        received, self._received = self._received, []
        return received

    def ack(self, delivery_tag: int) -> None:
        with errors("ack"):
            self._channel.basic_ack(delivery_tag)

    def reject(self, delivery_tag: int, *, requeue: bool) -> None:
        """nack: dropped when not requeued, as the neighbours have no dead-letter exchange."""
        with errors("nack"):
            self._channel.basic_nack(delivery_tag, requeue=requeue)

    def _on_message(self, _channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                    properties: pika.spec.BasicProperties, body: bytes) -> None:
        self._received.append(Inbound(body, dict(properties.headers or {}), method.delivery_tag))
