"""The lease child: competes for the leadership lease and tells the supervisor who leads.

A small child of the supervisor (which holds no database code itself). Every
`leadership.lease_renew_s` it renews the lease it holds or, as a standby, tries to take a free
or expired one (msd.roles.lease.decide decides, msd.store.leadership does the conditional
UPDATEs). A role change goes to the supervisor as a `lease` event at once; the lease as the
database shows it goes out with every heartbeat (`msd-ctl status`). On taking the lease it
applies the pending migrations before it reports leading: only the leader migrates. On a
graceful stop (the supervisor stops it after the roles) it releases the lease, so a standby
takes over at once; `step_down` from the supervisor releases it and holds off two renewal periods.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import time
from dataclasses import replace
from typing import Any

from msd.errors import MsdError
from msd.roles.lease.decide import (Action, Belief, Result, Role, Timing, Transition, after, expire,
                                    next_action, wait_before_next)
from msd.roles.runtime.edges import open_database
from msd.roles.runtime.process import DependencyHealth
from msd.store import leadership as store
from msd.store.migrate import apply_migrations, unapplied

log = logging.getLogger("msd.lease")


def timing_of(config: Any) -> Timing:
    lead = config.leadership
    return Timing(lead.lease_renew_s, lead.failover_s, lead.lost_after_s)


def config_hash(config: Any) -> str:
    """Of the config file's bytes: equal hashes = the instances run the same file."""
    try:
        return hashlib.sha256(config.source.read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"


class LeaseLoop:
    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.timing = timing_of(ctx.config)
        self.me = store.Claimant(ctx.args["holder"], socket.gethostname(), int(ctx.args["supervisor_pid"]),
                                 config_hash(ctx.config))
        deps = DependencyHealth(ctx, log)
        self.db = open_database(ctx.config, f"msd-lease [{self.me.holder}]", deps,
                                statement_timeout_ms=max(100, int(self.timing.renew_s * 1000)))
        self.belief = Belief()
        self.row: store.LeaseRow | None = None
        self.note: str | None = None
        self.listening_on: Any = None     # the connection LISTENing for releases

    def run(self) -> int:
        self.ctx.booted()
        # Standby until the lease is ours: the supervisor is READY without waiting for the database.
        self.tell(Transition(Role.STANDBY, None, "competing for the lease", None))
        self.publish()
        while not self.ctx.stopping.is_set():
            self.ctx.beat()
            self.take_notices()
            self.turn()
            self.publish()
            self.sleep(wait_before_next(self.belief, time.monotonic(), self.timing, self.expires_in()))
        self.leave()
        return 0

    def turn(self) -> None:
        self.listen()
        self.belief, lost = expire(self.belief, time.monotonic(), self.timing)
        self.tell(lost)
        action = next_action(self.belief, time.monotonic())
        result, sent_at = self.perform(action)
        epoch = self.row.epoch if self.row is not None else None
        self.belief, change = after(self.belief, action, result, epoch, sent_at, time.monotonic(), self.timing)
        self.tell(change)

    # ----- the database ---------------------------------------------------------------------
    def perform(self, action: Action) -> tuple[Result, float]:
        """The outcome and when the attempt was sent (what the lease's validity counts from)."""
        sent_at = time.monotonic()
        try:
            if action is Action.ACQUIRE:
                return self.acquire()
            if action is Action.RENEW:
                return self.renew(), sent_at
            if action is Action.RELEASE:
                with self.db.transaction() as conn:
                    store.release(conn, self.me, self.belief.epoch, "stepped_down", "msd-ctl step-down")
                    self.row = store.read_lease(conn)
                return Result.DONE, sent_at
            with self.db.transaction() as conn:     # WAIT: only look, for the status
                self.row = store.read_lease(conn)
            return Result.DONE, sent_at
        except MsdError as exc:
            # The database being down is logged once by the dependency report; a leader's
            # failed renewal matters each time.
            log.log(logging.WARNING if action is Action.RENEW else logging.DEBUG, "lease %s failed: %s",
                    action.value, exc)
            return Result.FAILED, sent_at

    def renew(self) -> Result:
        with self.db.transaction() as conn:
            renewed = store.renew(conn, self.me, self.belief.epoch, self.timing.failover_s)
            self.row = renewed or store.read_lease(conn)
        return Result.DONE if renewed else Result.REFUSED

    def acquire(self) -> tuple[Result, float]:
        with self.db.transaction() as conn:
            bootstrap = not store.table_exists(conn)
        if bootstrap:   # a database no msd with leadership has used: nobody can lead it yet
            log.info("no leadership table yet: applied migrations %s", apply_migrations(self.ctx.config.database.url))
        sent_at = time.monotonic()
        with self.db.transaction() as conn:
            acquired = store.try_acquire(conn, self.me, self.timing.failover_s)
            self.row = acquired or store.read_lease(conn)
            behind = [] if acquired else unapplied(conn)
        self.note_schema(behind)
        if acquired is None:
            return Result.REFUSED, sent_at
        try:
            applied = apply_migrations(self.ctx.config.database.url)   # only the leader migrates
        except MsdError as exc:
            self.give_up(acquired.epoch, f"migrations failed: {exc}")
            return Result.FAILED, sent_at
        if applied:
            log.info("leader applied migrations: %s", ", ".join(applied))
            # Migrating may have taken longer than the lease: renew before anything starts.
            self.belief = replace(self.belief, epoch=acquired.epoch)
            sent_at = time.monotonic()
            if self.renew() is not Result.DONE:
                return Result.FAILED, sent_at
            self.row = replace(self.row, epoch=acquired.epoch)
        self.note_schema([])
        return Result.DONE, sent_at

    def give_up(self, epoch: int, why: str) -> None:
        """Release a lease we cannot lead with, and stay out for one lease period, so an
        instance that can lead takes it."""
        log.error("not leading epoch %d: %s; releasing the lease", epoch, why)
        self.belief = replace(self.belief, hold_off_until=time.monotonic() + self.timing.failover_s)
        try:
            with self.db.transaction() as conn:
                store.release(conn, self.me, epoch, "released", why[:500])
        except MsdError as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)

    def note_schema(self, behind: list[str]) -> None:
        note = None
        if behind:
            note = (f"this instance's code is newer than the database schema ({', '.join(behind)} not applied): "
                    f"waiting for the leader to step down; it migrates when it takes over")
        if note and note != self.note:
            log.warning(note)
        self.note = note

    def leave(self) -> None:
        if self.belief.role is not Role.LEADER:
            return
        try:
            with self.db.transaction() as conn:
                store.release(conn, self.me, self.belief.epoch, "released", "graceful stop")
            log.info("released the lease of epoch %s", self.belief.epoch)
        except MsdError as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)

    def expires_in(self) -> float | None:
        """Seconds until the lease we last read expires (database clock), None if it is free."""
        row = self.row
        if row is None or not row.valid or row.expires_at is None:
            return None
        return (row.expires_at - row.db_now).total_seconds()

    # ----- the supervisor -------------------------------------------------------------------
    def take_notices(self) -> None:
        new = self.ctx.poll_control()
        if new is not None:
            self.timing = timing_of(new)
            self.me = replace(self.me, config_hash=config_hash(new))
        for kind, _data in self.ctx.take_notices():
            if kind == "step_down" and self.belief.role is Role.LEADER:
                self.belief = replace(self.belief, step_down=True)

    def tell(self, change: Transition | None) -> None:
        if change is None:
            return
        level = logging.WARNING if change.event == "lost" else logging.INFO
        log.log(level, "now %s: %s", change.to.value, change.reason,
                extra={"leadership": change.to.value, "epoch": change.epoch})
        if change.event == "lost":
            self.audit_lost(change)
        self.ctx.event("lease", role=change.to.value, epoch=change.epoch, reason=change.reason)

    def audit_lost(self, change: Transition) -> None:
        try:
            with self.db.transaction() as conn:
                store.record_event(conn, change.epoch, "lost", self.me, change.reason)
        except MsdError as exc:
            log.warning("could not audit the loss of the lease: %s", exc)

    def publish(self) -> None:
        self.ctx.set_status(role=self.belief.role.value, epoch=self.belief.epoch, holder=self.me.holder,
                            lease=self.row.view() if self.row is not None else None, note=self.note)

    def sleep(self, seconds: float) -> None:
        """Until the next attempt, waking early for a supervisor message, a stop or (as a
        standby not holding off) the holder's announced release."""
        deadline = time.monotonic() + seconds
        while not self.ctx.stopping.is_set() and time.monotonic() < deadline:
            if self.ctx.wait_for_message(min(0.1, max(0.0, deadline - time.monotonic()))):
                return
            if next_action(self.belief, time.monotonic()) is Action.ACQUIRE and self.heard_release():
                return

    def listen(self) -> None:
        try:
            with self.db.autocommit() as conn:
                if conn is not self.listening_on:
                    store.listen(conn)
                    self.listening_on = conn
        except MsdError:
            self.listening_on = None    # the turn that follows reports the database

    def heard_release(self) -> bool:
        if self.listening_on is None or self.listening_on.closed:
            return False        # never reconnect from here: the next turn does
        try:
            with self.db.autocommit() as conn:
                return conn is self.listening_on and store.released_since(conn)
        except MsdError:
            self.listening_on = None
            return False


def run(ctx: Any) -> int:
    return LeaseLoop(ctx).run()
