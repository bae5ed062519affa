"""Publishing with publisher confirms: `publish` returns only once the broker has the message.

Used for trading signals (DESIGN.md §8): the outbox row is marked sent only after `publish`
returns, so every failure must surface as BrokerUnavailable and never be swallowed.
"""
from __future__ import annotations

from typing import Mapping

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from msd.bus.connection import close_quietly, connect, errors
from msd.bus.topology import QueueSpec, declare
from msd.errors import BrokerUnavailable

# Failures that concern one message; the channel and connection stay usable after them.
_MESSAGE_LEVEL = (pika.exceptions.UnroutableError, pika.exceptions.NackError)


class ConfirmingPublisher:
    """One connection and one confirm-mode channel, opened lazily and reopened after a loss.

    Not thread-safe: one publisher per thread (pika's BlockingConnection is single-threaded).
    """

    def __init__(self, url: str, *, connection_name: str = "msd-publisher"):
        self._url = url
        self._connection_name = connection_name
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def publish(self, routing_key: str, body: bytes, *, headers: Mapping[str, object],
                message_id: str, content_type: str = "application/json") -> None:
        """Publish persistently to the default exchange and wait for the broker's confirm.

        Raises BrokerUnavailable if the broker nacks, if no queue is bound to `routing_key`
        (mandatory flag), or if the connection is lost; the next call reconnects.
        """
        channel = self._ready_channel()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type=content_type,
            headers=dict(headers), message_id=message_id)
        try:
            with errors(f"publish to {routing_key!r}"):
                channel.basic_publish("", routing_key, body, properties, mandatory=True)
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, _MESSAGE_LEVEL):
                self._drop()
            raise

    def ensure_queue(self, spec: QueueSpec) -> None:
        """Declare the queue messages will be routed to; raises BrokerUnavailable on failure."""
        channel = self._ready_channel()
        # A failed declare closes the channel; _ready_channel reopens it on the next call.
        declare(channel, spec)

    def close(self) -> None:
        """Close the connection; a later publish would open a new one."""
        self._drop()

    def _ready_channel(self) -> BlockingChannel:
        self._drop_if_dead()
        if self._connection is None:
            self._connection = connect(self._url, connection_name=self._connection_name)
        if self._channel is None or not self._channel.is_open:
            try:
                with errors("open confirm channel"):
                    channel = self._connection.channel()
                    channel.confirm_delivery()
            except BrokerUnavailable:
                self._drop()
                raise
            self._channel = channel
        return self._channel

    def _drop_if_dead(self) -> None:
        """Notice a connection that died while idle before a message is put on it.

        A BlockingConnection only reads the socket when called, so a server-side close or a
        missed heartbeat since the last publish is discovered here. Nothing has been sent yet,
        so reconnecting silently is safe; a loss during the publish itself is reported.
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

    def _drop(self) -> None:
        close_quietly(self._connection)
        self._connection = None
        self._channel = None
