"""Publishing signals with nothing lost: outbox row first, then a confirmed publish, then `sent`.

Used by the signaller and the exit role. While the broker is down, signals stay pending in
`msd.signals` and `flush()` sends them in order once it is back; a restart sends what a
previous run left pending. A signal is marked sent right after the broker confirmed it (a mark
that fails while the database is down is retried by `commit_marks`, always before pending rows
are read again). Only if msd dies between a confirm and that one UPDATE is the signal sent again
after the restart: order-manager treats a repeated `signal_id` as a duplicate, so the loss-free
direction is the one we keep.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from msd import metrics
from msd.bus.publisher import ConfirmingPublisher
from msd.bus.topology import QueueSpec
from msd.bus.signal_format import TradingSignal, encode_signal, signal_to_wire
from msd.errors import BrokerUnavailable, DatabaseUnavailable
from msd.store.db import Database
from msd.store.outbox import count_pending, insert_signal, mark_sent, pending_signals, record_failed_attempt

log = logging.getLogger("msd.outbox")


@dataclass(frozen=True)
class Submitted:
    recorded: bool          # written to the outbox (so it will be published, now or later)
    published: bool         # confirmed by the broker already
    error: str | None = None


class Outbox:
    def __init__(self, db: Database, publisher: ConfirmingPublisher, queue: str, modes: tuple[str, ...]):
        """`modes`: the msd.signals modes this outbox writes and is the only one to republish."""
        self.db, self.publisher, self.queue, self.modes = db, publisher, queue, modes
        self.queue_declared = False
        self.backlog = True         # unknown until the first flush looked
        self.broker_error: str | None = None
        self.published = 0
        self.unmarked: list[str] = []       # confirmed by the broker, not yet marked sent

    def retarget(self, queue: str) -> None:
        """Publish to another queue from now on (a live config change)."""
        if queue != self.queue:
            self.queue, self.queue_declared = queue, False

    def submit(self, signal: TradingSignal, mode: str, *,
               also: Callable[[Any], bytes | None] | None = None) -> Submitted:
        """Record `signal` durably and publish it (after any older pending ones).

        `also(cursor)` returns SQL text written in the same implicit transaction as the outbox row
        (one statement string): what the decision committed (an exit's ladder step, its exit in
        flight) is saved with the signal or not at all.
        """
        if mode not in self.modes:
            raise ValueError(f"this outbox publishes modes {self.modes}, not {mode!r}")
        try:
            body, headers = encode_signal(signal)
        except ValueError as exc:
            # Our own signal breaks order-manager's rules: a bug, never published.
            metrics.SIGNALS_INVALID.labels(signal.strategy_id).inc()
            log.error("signal failed validation and was not published: %s", exc,
                      extra={"trace_id": signal.trace_id, "signal": signal_to_wire_safe(signal)})
            return Submitted(False, False, f"invalid: {exc}")
        try:
            with self.db.autocommit() as conn:      # one statement string: atomic without BEGIN/COMMIT
                with conn.cursor() as cur:
                    before = also(cur) if also is not None else None
                insert_signal(conn, signal, signal_to_wire(signal), mode, before=before)
        except DatabaseUnavailable as exc:
            metrics.SIGNALS_LOST.labels(signal.strategy_id, "database").inc()
            log.error("signal %s not sent: the outbox cannot be written: %s", signal.signal_id, exc,
                      extra={"trace_id": signal.trace_id})
            return Submitted(False, False, str(exc))
        if self.backlog:
            self.flush()
            return Submitted(True, not self.backlog)
        return Submitted(True, self._publish(signal.signal_id, signal.strategy_id, body, headers["trace_id"]))

    def commit_marks(self) -> bool:
        """Mark the signals confirmed since the last call as sent; False while that cannot be done."""
        if not self.unmarked:
            return True
        try:
            with self.db.autocommit() as conn:      # one UPDATE
                mark_sent(conn, self.unmarked)
        except DatabaseUnavailable as exc:
            log.warning("%d published signals not marked sent yet: %s", len(self.unmarked), exc)
            return False
        self.unmarked = []
        return True

    def flush(self) -> int:
        """Publish pending signals oldest first; stops at the first failure. Returns how many went."""
        sent = 0
        if not self.commit_marks():     # unmarked rows would read as pending and go out twice
            return sent
        try:
            while True:
                with self.db.transaction() as conn:
                    batch = pending_signals(conn, self.modes)
                for item in batch:
                    if not self._publish(item.signal_id, item.strategy_id, item.body, item.trace_id):
                        return sent
                    sent += 1
                if not self.commit_marks():
                    return sent
                if len(batch) < 500:
                    self.backlog = False
                    return sent
        except DatabaseUnavailable as exc:
            log.warning("outbox flush postponed: %s", exc)
            return sent

    def _publish(self, signal_id: str, strategy_id: str, body: bytes, trace_id: str | None) -> bool:
        try:
            if not self.queue_declared:
                # order-manager declares it too (durable, no arguments); a mandatory publish to a
                # queue nobody declared yet would come back unroutable.
                self.publisher.ensure_queue(QueueSpec(self.queue, "durable"))
                self.queue_declared = True
            self.publisher.publish(self.queue, body, headers={"trace_id": trace_id}, message_id=signal_id)
        except BrokerUnavailable as exc:
            self._failed(signal_id, str(exc))
            return False
        self.broker_error = None
        self.published += 1
        metrics.SIGNALS_PUBLISHED.labels(strategy_id).inc()
        # Marked at once (the receiver already has it, so this costs it nothing), which keeps
        # the crash-between-confirm-and-mark window to one statement; a failed mark is retried.
        self.unmarked.append(signal_id)
        self.commit_marks()
        return True

    def _failed(self, signal_id: str, error: str) -> None:
        if self.broker_error is None:
            log.error("publishing signals failed; they wait in the outbox: %s", error)
        self.broker_error, self.backlog, self.queue_declared = error, True, False
        try:
            with self.db.transaction() as conn:
                record_failed_attempt(conn, signal_id, error)
        except DatabaseUnavailable:
            pass

    def pending_count(self) -> int | None:
        try:
            with self.db.transaction() as conn:
                return count_pending(conn)
        except DatabaseUnavailable:
            return None


def signal_to_wire_safe(signal: TradingSignal) -> str:
    """The signal for an error log line, even when it cannot be encoded as valid JSON."""
    try:
        return str(signal_to_wire(signal))
    except (ValueError, TypeError):
        return repr(signal)
