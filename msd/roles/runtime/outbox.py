"""Publishing signals with nothing lost: outbox row first, then a confirmed publish, then `sent`.

Used by the signaller and the exit role. While the broker is down, signals stay pending in
`msd.signals` and `flush()` sends them in order once it is back; a restart sends what a
previous run left pending. A signal is marked sent once its confirm was applied: with the next
outbox write (same commit) or by `commit_marks` (the loop's, within 0.1 s; a failed mark is
retried, always before pending rows are read again).

Publishes are pipelined (msd.bus.publisher): the loop does not wait for confirms; verdicts are
applied on its next turns (`service_connection`). Until then a signal is `in_flight`: pending in
the table, but not sent again, expired or voided by a flush. A refused one (nacked, returned as
unroutable, never put on a connection) stays pending as a failed attempt and the next flush
sends it again, oldest first; signals already in flight behind it are not recalled and may reach
the queue before its second attempt (an outage refuses or loses them all, resent in order).

Delivery is at least once; a signal reaches the queue twice in two cases only, both with the
same `signal_id`, which order-manager treats as a duplicate (the loss-free direction is the one
we keep): msd dies between a confirm and its mark (at most ~0.1 s; sent again after the
restart), or the broker connection is lost while confirms are outstanding (the broker routes a
message before it confirms it, so each of them may be on the queue already; they stay pending
and go out again, each logged with its id and counted in msd_signals_unconfirmed_total; they
never expire, since they may be out already).
A connection lost at any other moment sends nothing twice.

Decisions expire: a pending signal of an expiring mode (`Expiry.modes`) older than
`Expiry.max_age_s` by the role's clock (`attach`) is marked `expired`, not sent late, with an audit
line and `msd_signals_expired_total`; it is not a publish failure. `Expiry.on_expired(conn, expired)`
runs in the same transaction as the marking, for a role that must undo stored state that assumed
the signal would go out (the exit role's ladder step and in-flight exit): if it raises, nothing
expires. `Expiry.after_commit(expired)` runs once that transaction committed, for the role's
in-memory state (e.g. offering the position for a new decision at the current price).

A role may also screen its pending signals just before each flush sends them (`Screen`): an exit
whose position closed while it waited would open a position the other way. `Screen.check(batch)`
names the ones to void (signal_id -> (reason, text)), or answers None when it cannot tell now (a
failed read): then nothing is voided and nothing of those modes is sent until a later flush. The
voided are marked `voided` with `Screen.on_voided(conn, voided)` in the same transaction, then
`Screen.after_commit(voided)`; counted in `msd_signals_voided_total`, apart from expiries. The
signaller has no screen: its warm-up and model signals go out as before.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

from msd import metrics
from msd.bus.publisher import ConfirmingPublisher, Outcome
from msd.bus.signal_format import encode_signal, signal_to_wire
from msd.values.messages import TradingSignal
from msd.bus.topology import QueueSpec
from msd.errors import BrokerUnavailable, DatabaseUnavailable
from msd.roles.runtime.outbox_audit import said_expired, said_invalid, said_unconfirmed, said_voided
from msd.store.db import Database
from msd.store.outbox import (ExpiredSignal, PendingSignal, VoidedSignal, expire_stale, insert_signal_sql, mark_sent,
                              mark_sent_sql, pending_backlog, pending_signals, record_failed_attempt, void_pending)
from msd.values.clock import Clock, utc_now

log = logging.getLogger("msd.outbox")
FLUSH_BATCH = 500
# Signals in flight at most: a flush of a long backlog sends this many, the next flush the rest.
MAX_IN_FLIGHT = 1000

OnExpired = Callable[[object, list[ExpiredSignal]], None]
AfterExpiry = Callable[[list[ExpiredSignal]], None]
VoidCheck = Callable[[list[PendingSignal]], "Mapping[str, tuple[str, str]] | None"]
# (signal_id, when its confirm arrived (time.monotonic()) or None: refused or unconfirmed, pending again)
OnSettled = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class Submitted:
    recorded: bool          # written to the outbox (so it will be published, now or later)
    dispatched: bool        # handed to the broker (after any older pending ones); confirmed later
    error: str | None = None
    write_s: float = 0.0    # encoding and the committed outbox row
    written_at: float = 0.0  # time.monotonic() when the row was committed


@dataclass(frozen=True)
class Submission:
    """One signal for `Outbox.submit_all`; `also(cursor)` as in `Outbox.submit`."""
    signal: TradingSignal
    mode: str
    also: Callable[[Any], bytes | None] | None = None


@dataclass(frozen=True)
class Expiry:
    """Which pending signals may expire, after how long, and who hears of it (in the transaction)."""
    modes: tuple[str, ...] = ()
    max_age_s: float = 60.0
    on_expired: OnExpired | None = None        # in the expiring transaction
    after_commit: AfterExpiry | None = None    # after it committed


@dataclass(frozen=True)
class Screen:
    """Pending signals of `modes` checked just before a flush sends them (module doc)."""
    modes: tuple[str, ...]
    check: VoidCheck                            # signal_id -> (reason, text) to void; None: cannot tell now
    on_voided: OnExpired | None = None          # in the voiding transaction
    after_commit: AfterExpiry | None = None     # after it committed


class Outbox:
    def __init__(self, db: Database, publisher: ConfirmingPublisher, queue: str, modes: tuple[str, ...],
                 expiry: Expiry = Expiry(), clock: Clock = utc_now):
        """`modes`: the msd.signals modes this outbox writes and is the only one to republish."""
        if not set(expiry.modes) <= set(modes):
            raise ValueError(f"expiring modes {expiry.modes} are not among this outbox's {modes}")
        self.db, self.publisher, self.queue, self.modes = db, publisher, queue, modes
        self.expiry, self.clock = expiry, clock     # the role's clock once it is attached
        self.screen: Screen | None = None
        self.queue_declared = False
        self.backlog = True         # unknown until the first flush looked
        self.broker_error: str | None = None
        self.published = self.expired = self.voided = 0
        self.unconfirmed = 0        # publishes whose confirm was lost with the connection
        self.unmarked: list[str] = []       # confirmed by the broker, not yet marked sent
        self.in_flight: dict[str, PendingSignal] = {}     # sent, verdict not applied yet (oldest first)
        self.on_settled: OnSettled | None = None

    def retarget(self, queue: str) -> None:
        """Publish to another queue from now on (a live config change)."""
        if queue != self.queue:
            self.queue, self.queue_declared = queue, False

    def retune(self, expiry: Expiry) -> None:
        """A new age limit (a live config change)."""
        self.expiry = expiry

    def screen_with(self, screen: Screen) -> None:
        """Check pending signals of `screen.modes` before each flush sends them (module doc)."""
        if not set(screen.modes) <= set(self.modes):
            raise ValueError(f"screened modes {screen.modes} are not among this outbox's {self.modes}")
        self.screen = screen

    def attach(self, on_settled: OnSettled, clock: Clock) -> None:
        """The role's verdict hook (path timing) and clock (its signals' time: expiries, voids, ages)."""
        self.on_settled, self.clock = on_settled, clock

    def service_connection(self) -> None:
        """Apply the verdicts the broker sent since the last turn (marks, failures); call every turn."""
        self._apply(self.publisher.poll())

    def settle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the confirms in flight (a role stopping); True once none is left."""
        end = time.monotonic() + timeout_s
        self.service_connection()
        while self.in_flight and time.monotonic() < end:
            time.sleep(0.005)
            self.service_connection()
        self.commit_marks()
        return not self.in_flight

    def close(self) -> None:
        """Close the connection; confirms still outstanding are applied as unconfirmed (pending, logged)."""
        self._apply(self.publisher.close())
        self.commit_marks()

    def submit(self, signal: TradingSignal, mode: str, *,
               also: Callable[[Any], bytes | None] | None = None) -> Submitted:
        """Record `signal` durably and publish it (after any older pending ones).

        `also(cursor)` returns SQL text written in the same implicit transaction as the outbox row
        (one statement string): what the decision committed (an exit's ladder step, its exit in
        flight) is saved with the signal or not at all.
        """
        return self.submit_all([Submission(signal, mode, also)])[0]

    def submit_all(self, submissions: list["Submission"]) -> list[Submitted]:
        """Record the signals in one statement string (one commit for them all: all or none), then
        publish them in order; one Submitted each, in the same order.

        A signal that fails order-manager's rules is left out (a bug, never published); after a
        failed publish the rest wait in the outbox and go out, in order, with the next flush.
        """
        for item in submissions:
            if item.mode not in self.modes:
                raise ValueError(f"this outbox publishes modes {self.modes}, not {item.mode!r}")
        started = time.monotonic()
        results: list[Submitted | None] = [None] * len(submissions)
        valid = []
        for index, item in enumerate(submissions):
            try:
                body, headers = encode_signal(item.signal)
            except ValueError as exc:
                results[index] = self._invalid(item.signal, exc)
            else:
                valid.append((index, item, body, headers))
        if valid:
            self._record_and_publish(valid, results, started)
        return results

    def _record_and_publish(self, valid: list, results: list, started: float) -> None:
        try:
            marks = list(self.unmarked)
            with self.db.autocommit() as conn:      # one statement string: atomic without BEGIN/COMMIT
                with conn.cursor() as cur:          # marks ride along: no commit of their own while signals flow
                    parts = [mark_sent_sql(cur, marks)] if marks else []
                    for _, item, _, _ in valid:
                        before = item.also(cur) if item.also is not None else None
                        parts += [before] if before else []
                        parts.append(insert_signal_sql(cur, item.signal, signal_to_wire(item.signal), item.mode))
                    cur.execute(b";\n".join(parts))
            self.unmarked = self.unmarked[len(marks):]
        except DatabaseUnavailable as exc:
            for index, item, _, _ in valid:
                metrics.SIGNALS_LOST.labels(item.signal.strategy_id, "database").inc()
                log.error("signal %s not sent: the outbox cannot be written: %s", item.signal.signal_id, exc,
                          extra={"trace_id": item.signal.trace_id})
                results[index] = Submitted(False, False, str(exc))
            return
        written = time.monotonic()
        self.service_connection()       # a failure heard since the last turn makes a backlog
        if self.backlog:
            try:
                self.flush()        # the older pending ones first, then these
            except Exception:       # the signals are recorded all the same; the next flush retries
                log.exception("outbox flush after recording signals %s failed",
                              ", ".join(item.signal.signal_id for _, item, _, _ in valid))
        else:
            for _, item, body, headers in valid:
                signal = item.signal
                # After a failure (backlog set) the rest stay pending: the next flush keeps their order.
                if len(self.in_flight) >= MAX_IN_FLIGHT:
                    self.backlog = True
                if self.backlog or not self._dispatch(PendingSignal(
                        signal.signal_id, signal.strategy_id, body, headers["trace_id"], item.mode, signal.amount)):
                    break
                if not self.publisher.ready:        # as in flush: one waits for a connection, not all
                    self.backlog = True
        for index, item, _, _ in valid:
            dispatched = item.signal.signal_id in self.in_flight
            results[index] = Submitted(True, dispatched, write_s=written - started, written_at=written)

    def _invalid(self, signal: TradingSignal, exc: ValueError) -> Submitted:
        said_invalid(signal, exc)       # our own signal breaks order-manager's rules: a bug, never published
        return Submitted(False, False, f"invalid: {exc}")

    def commit_marks(self) -> bool:
        """Mark the signals confirmed since the last call as sent; False while that cannot be done."""
        if not self.unmarked:
            return True
        try:
            with self.db.autocommit() as conn:      # one UPDATE
                mark_sent(conn, self.unmarked)
        except DatabaseUnavailable as exc:
            log.debug("%d published signals not marked sent yet: %s", len(self.unmarked), exc)
            return False
        self.unmarked = []
        return True

    def flush(self) -> int:
        """Expire what is too old, void what the screen finds obsolete, send the rest oldest first
        (their confirms are applied on later turns); stops at the first refused send, after one
        sent with no connection open, when the screen cannot tell, or at MAX_IN_FLIGHT in flight.

        Returns how many were sent."""
        sent = 0
        self.service_connection()
        if not self.commit_marks():     # unmarked rows would read as pending and go out twice
            return sent
        try:
            while True:
                with self.db.transaction() as conn:
                    expired = self._expire(conn)
                    batch = pending_signals(conn, self.modes, FLUSH_BATCH, exclude=list(self.in_flight))
                self._expired(expired)
                going, held = self._screened(batch)
                for item in going:
                    if len(self.in_flight) >= MAX_IN_FLIGHT:
                        self.backlog = True     # the rest wait for the next flush
                        return sent
                    if not self._dispatch(item):
                        return sent
                    sent += 1
                    if not self.publisher.ready:    # it waits for a connection: the rest wait for it
                        self.backlog = True
                        return sent
                if held:                # the screen could not tell: those wait for a later flush
                    return sent
                if len(batch) < FLUSH_BATCH:
                    self.backlog = False
                    return sent
        except DatabaseUnavailable as exc:
            log.debug("outbox flush postponed: %s", exc)
            return sent

    def _expire(self, conn) -> list[ExpiredSignal]:
        expired = expire_stale(conn, self.expiry.modes, timedelta(seconds=self.expiry.max_age_s),
                               now=self.clock(), exclude=list(self.in_flight))
        if expired and self.expiry.on_expired is not None:
            self.expiry.on_expired(conn, expired)
        return expired

    def _expired(self, expired: list[ExpiredSignal]) -> None:
        """The audit trail of signals that expired, once their transaction committed."""
        if expired and self.expiry.after_commit is not None:
            self.expiry.after_commit(expired)
        self.expired += len(expired)
        said_expired(expired, self.expiry.max_age_s)

    def _screened(self, batch: list[PendingSignal]) -> tuple[list[PendingSignal], bool]:
        """`batch` without what the screen voids (marked in one transaction), and whether the
        screen could not tell: then all of its modes are held back (retried by the next flush)."""
        screen = self.screen
        due = [item for item in batch if screen is not None and item.mode in screen.modes]
        if not due:
            return batch, False
        verdicts = screen.check(due)
        if verdicts is None:
            self.backlog = True
            return [item for item in batch if item.mode not in screen.modes], True
        if verdicts:
            with self.db.transaction() as conn:
                voided = void_pending(conn, verdicts, now=self.clock())
                if voided and screen.on_voided is not None:
                    screen.on_voided(conn, voided)
            self._voided(voided)
        return [item for item in batch if item.signal_id not in verdicts], False

    def _voided(self, voided: list[VoidedSignal]) -> None:
        if voided and self.screen is not None and self.screen.after_commit is not None:
            self.screen.after_commit(voided)
        self.voided += len(voided)
        said_voided(voided)

    def _dispatch(self, item: PendingSignal) -> bool:
        """Hand `item` to the broker connection; False (recorded as a failed attempt) if refused now."""
        try:
            if not self.queue_declared:
                # order-manager declares it too (durable, no arguments); a mandatory publish to a
                # queue nobody declared yet would come back unroutable.
                self.publisher.ensure_queue(QueueSpec(self.queue, "durable"))
                self.queue_declared = True
            self.publisher.send(self.queue, item.body, headers={"trace_id": item.trace_id},
                                message_id=item.signal_id)
        except BrokerUnavailable as exc:
            self._failed([(item, str(exc), False)])
            return False
        self.in_flight[item.signal_id] = item
        return True

    def _apply(self, outcomes: list[Outcome]) -> None:
        """The broker's verdicts: confirmed ones marked sent (one UPDATE), failed ones recorded."""
        failed = []
        for outcome in outcomes:
            item = self.in_flight.pop(outcome.message_id, None)
            if item is None:
                continue        # not this outbox's (a publisher shared in a test) or settled already
            if outcome.status == "confirmed":
                self._confirmed(item)
            else:
                if outcome.status == "unconfirmed":
                    self.unconfirmed += 1
                    said_unconfirmed(item, outcome.reason or "connection lost")
                failed.append((item, outcome.reason or outcome.status, outcome.status == "unconfirmed"))
            if self.on_settled is not None:
                self.on_settled(item.signal_id, outcome.at if outcome.status == "confirmed" else None)
        if failed:
            self._failed(failed)            # marks: with the next outbox write, or commit_marks

    def _confirmed(self, item: PendingSignal) -> None:
        self.broker_error = None
        self.published += 1
        metrics.SIGNALS_PUBLISHED.labels(item.strategy_id, item.mode).inc()
        metrics.SIGNALS_NOTIONAL.labels(item.strategy_id, item.mode).inc(float(item.amount))
        # Marked on the turn its confirm is applied (the receiver already has it, so this costs
        # it nothing); a failed mark is retried before pending rows are read again.
        self.unmarked.append(item.signal_id)

    def _failed(self, failures: list[tuple[PendingSignal, str, bool]]) -> None:
        """Failed publishes (item, error, unconfirmed): pending, retried by the next flush."""
        # The broker's state is reported (once) by the publisher's on_state; this is per signal.
        self.broker_error, self.backlog, self.queue_declared = failures[-1][1], True, False
        try:
            with self.db.transaction() as conn:
                for item, error, unconfirmed in failures:
                    record_failed_attempt(conn, item.signal_id, error, unconfirmed=unconfirmed)
        except DatabaseUnavailable:
            pass

    def observe_backlog(self, role: str) -> None:
        """Set msd_outbox_pending / msd_outbox_oldest_pending_seconds for `role` (skipped while the DB is down)."""
        if not self.backlog:        # the last flush sent everything: nothing to look up
            metrics.OUTBOX_PENDING.labels(role).set(0)
            metrics.OUTBOX_OLDEST_AGE.labels(role).set(0.0)
            return
        try:
            with self.db.autocommit() as conn:
                count, oldest = pending_backlog(conn, self.modes, self.clock())
        except DatabaseUnavailable:
            return
        metrics.OUTBOX_PENDING.labels(role).set(count)
        metrics.OUTBOX_OLDEST_AGE.labels(role).set(oldest or 0.0)

