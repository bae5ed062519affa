"""Publishing with pipelined publisher confirms: `send` returns at once, verdicts come back later.

Used for trading signals (DESIGN.md §8). The owning loop (a role's, single-threaded) hands a
message to `send` and goes on with its next turn; the broker's verdict on it arrives as an
`Outcome` from `poll()`, which the loop calls on every turn. The outbox marks a signal sent only
on a `confirmed` outcome, so nothing is taken as published before the broker has it.

Why a thread: pika's BlockingChannel in confirm mode makes every basic_publish wait for its own
confirm (a round trip and the broker's fsync, ~3 ms each, one after another), and offers no
public way to publish without waiting. The connection is therefore a SelectConnection owned by
one I/O thread (msd.bus.confirm_io), with `confirm_delivery(ack_nack_callback)`: publishes are
handed to that thread through `IOLoop.add_callback_threadsafe` (so they go out in the order `send` was called),
and the thread hands every verdict and state change back through a thread-safe queue. Only the
I/O thread touches pika objects; only the owning loop reads the queue and calls `on_state`.

The I/O thread answers heartbeats whatever the loop does, reconnects at once after a loss (with
backoff after a failed attempt: `reconnect_delay`), and holds what is sent while no confirm
channel is open: it goes out once one is, or is refused when the attempt fails. While the broker
is down, something to send brings the next attempt forward (ON_DEMAND_RETRY_S), as a blocking
publish used to connect on demand; the outbox sends one signal at a time while `ready` is False.

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
from concurrent.futures import Future, TimeoutError as FutureTimeout
from functools import partial
from typing import Callable, Mapping

import pika

from msd.bus.confirm_io import CLOSE_TIMEOUT_S, READY, ConfirmLink, Outcome, Publish
from msd.bus.connection import STACK_TIMEOUT_S
from msd.bus.topology import QueueSpec
from msd.errors import BrokerUnavailable

__all__ = ["ConfirmingPublisher", "Outcome"]

OnState = Callable[[bool, "str | None"], None]
# ensure_queue waits at most this long (a connection attempt in progress included).
DECLARE_TIMEOUT_S = STACK_TIMEOUT_S + 5.0


class ConfirmingPublisher:
    """One connection and one confirm-mode channel, owned by an I/O thread; see the module doc.

    `on_state(ok, reason)` hears, in the owning loop (from `poll`), every change: (True, None)
    once a confirm channel is open, (False, reason) when the broker could not be used.
    """

    def __init__(self, url: str, *, connection_name: str = "msd-publisher", on_state: OnState | None = None):
        self._url = url
        self._connection_name = connection_name
        self._on_state = on_state
        self._link: ConfirmLink | None = None
        self._pending: list[Outcome] = []       # verdicts of a link whose thread died, not polled yet

    def send(self, routing_key: str, body: bytes, *, headers: Mapping[str, object],
             message_id: str, content_type: str = "application/json") -> None:
        """Publish persistently (mandatory) to the default exchange without waiting for the confirm.

        Never waits: with no confirm channel open the message waits in the I/O thread for the
        next connection attempt (brought forward while the broker is down) and is refused if that
        fails; the verdict comes from a later `poll()`.
        """
        link = self._started()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type=content_type,
            headers=dict(headers), message_id=message_id)
        link.ioloop.add_callback_threadsafe(partial(link.publish, Publish(routing_key, body, properties, message_id)))

    def ensure_queue(self, spec: QueueSpec) -> None:
        """Declare the queue messages will be routed to, and wait for the broker's answer.

        Raises BrokerUnavailable on failure (a failed declare closes the channel; the I/O thread
        opens a new one). With no channel open it waits for the next connection attempt, like a
        send. Publishes sent before it keep their place in the pipeline."""
        link = self._started()
        done: Future = Future()
        link.ioloop.add_callback_threadsafe(partial(link.declare, spec, done))
        try:
            done.result(timeout=DECLARE_TIMEOUT_S)
        except FutureTimeout:
            raise BrokerUnavailable(f"declare queue {spec.name!r}: no answer within {DECLARE_TIMEOUT_S:g}s") from None

    @property
    def ready(self) -> bool:
        """A confirm channel is open (as far as the owning loop can tell)."""
        return self._link is not None and self._link.state == READY

    def poll(self) -> list[Outcome]:
        """The verdicts known since the last call, in the order they were known; never raises.

        Also starts the connection (the first call) and reports state changes to `on_state`."""
        link = self._started()
        pending, self._pending = self._pending, []
        return pending + self._drain(link)

    def close(self) -> list[Outcome]:
        """Close the connection; returns the verdicts not polled yet, those of the messages whose
        confirm was still outstanding included (unconfirmed). A later call opens a new one."""
        link, self._link = self._link, None
        pending, self._pending = self._pending, []
        if link is None:
            return pending
        link.ioloop.add_callback_threadsafe(link.shutdown)
        link.thread.join(CLOSE_TIMEOUT_S)
        return pending + self._drain(link)

    def _started(self) -> "ConfirmLink":
        if self._link is not None and not self._link.thread.is_alive():
            dead, self._link = self._link, None
            self._pending += self._drain(dead)  # its last verdicts, handed out by the next poll
        if self._link is None:
            self._link = ConfirmLink(self._url, self._connection_name)
        return self._link

    def _drain(self, link: "ConfirmLink") -> list[Outcome]:
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

