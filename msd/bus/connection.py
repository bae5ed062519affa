"""Opening RabbitMQ connections and turning pika's failures into msd errors.

This is the one place that knows pika's exception hierarchy: every pika call in `msd.bus`
runs inside `errors(...)`, so callers only ever see `BrokerUnavailable`.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import pika
import pika.exceptions

from msd.errors import BrokerUnavailable

# Bounded so that a dead or black-holed broker turns into an error instead of a hang.
SOCKET_TIMEOUT_S = 10.0
STACK_TIMEOUT_S = 15.0


def connect(url: str, *, connection_name: str, heartbeat: int | None = None,
            blocked_timeout: float = 30) -> pika.BlockingConnection:
    """Open a blocking connection; raises BrokerUnavailable if the broker cannot be reached.

    The heartbeat is the URL's `?heartbeat=N` (msd's config puts rabbitmq.heartbeat_s there)
    unless `heartbeat` is given."""
    params = parameters(url, connection_name=connection_name, heartbeat=heartbeat, blocked_timeout=blocked_timeout)
    with errors(f"connect to {where(params)}"):
        return pika.BlockingConnection(params)


def parameters(url: str, *, connection_name: str, heartbeat: int | None = None,
               blocked_timeout: float = 30) -> pika.URLParameters:
    """The connection parameters every msd connection uses (bounded timeouts, no pika retries)."""
    params = pika.URLParameters(url)
    if heartbeat is not None:
        params.heartbeat = heartbeat
    # A broker under a resource alarm blocks publishers silently; time out instead of waiting forever.
    params.blocked_connection_timeout = blocked_timeout
    params.socket_timeout = SOCKET_TIMEOUT_S
    params.stack_timeout = STACK_TIMEOUT_S
    # Retrying is the caller's job (with backoff and a stop event); pika's own retry loop has neither.
    params.connection_attempts = 1
    params.client_properties = {"connection_name": connection_name}
    return params


def where(params: pika.ConnectionParameters) -> str:
    """host:port and the vhost unless it is '/', for error messages."""
    vhost = params.virtual_host
    return f"{params.host}:{params.port}" + ("" if vhost == "/" else f" vhost {vhost!r}")


def reconnect_delay(attempt: int, *, base: float = 0.2, cap: float = 10.0,
                    rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential, capped, jittered.

    "Equal jitter": half of the exponential step is fixed, half random. The fixed half stops a
    flapping broker from turning into a hot loop; the random half spreads the reconnects of
    several processes that lost the broker at the same moment.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # Clamp the exponent: the cap is reached long before 2**60, and floats overflow near 2**1024.
    step = min(cap, base * (2.0 ** min(attempt, 60)))
    return step / 2 + rng.uniform(0, step / 2)


def describe(exc: BaseException) -> str:
    """A short human reason for a pika/socket failure, keeping the broker's reply text."""
    if isinstance(exc, (pika.exceptions.ChannelClosed, pika.exceptions.ConnectionClosed)):
        return f"{exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.UnroutableError):
        return "message returned as unroutable (no queue bound to the routing key)"
    if isinstance(exc, pika.exceptions.NackError):
        return "message nacked by the broker"
    name, text = type(exc).__name__, str(exc) or repr(exc)
    # pika's connection errors already start with their class name.
    return text if text.startswith(name) else f"{name}: {text}"


@contextmanager
def errors(action: str) -> Iterator[None]:
    """Run a pika call, re-raising its failures as BrokerUnavailable("<action>: <reason>")."""
    try:
        yield
    except (pika.exceptions.AMQPError, OSError) as exc:
        # OSError: pika lets some socket errors (reset, refused during handshake) escape unwrapped.
        raise BrokerUnavailable(f"{action}: {describe(exc)}") from exc


class Link:
    """One connection and its channel, as every broker client in msd.bus holds them."""

    _connection: pika.BlockingConnection | None = None
    _channel: Any = None

    def _drop(self) -> None:
        """Forget the connection and channel, closing the connection quietly (it may be dead)."""
        close_quietly(self._connection)
        self._connection = None
        self._channel = None


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be dead; used when abandoning it for a new one."""
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except (pika.exceptions.AMQPError, OSError):
        # It is being abandoned because it failed; a second failure while closing says nothing new.
        pass
