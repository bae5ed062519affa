"""The main loop shared by the roles that publish signals (signaller, exits).

Each turn: prove liveness, apply a config the supervisor sent, let the role take its inputs
and decide (`step`, which hands its signals to the broker without waiting for their confirms),
apply the broker's verdicts that arrived meanwhile (confirmed ones marked sent, refused or lost
ones left pending for the next flush), retry the outbox backlog now and then, and report status
once a second. The broker connection (heartbeats, reconnects) is kept by the publisher's own
I/O thread (msd.bus.publisher), whatever the loop is doing.

A failure inside one turn that is not a lost dependency is contained here: the role logs it
(ERROR, at most a few lines per window), counts it in msd_message_failures_total and goes on
with the next turn, so no single input or decision can take exit protection down.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from msd import metrics
from msd.bus.publisher import ConfirmingPublisher
from msd.config import Config
from msd.errors import DatabaseUnavailable, Fenced
from msd.logs import LineBudget
from msd.roles.runtime.edges import open_database
from msd.roles.runtime.outbox import Outbox
from msd.roles.runtime.process import DependencyHealth, RoleContext
from msd.store.db import Database
from msd.supervisor.spawn import EXIT_OK

STATUS_EVERY_S = 1.0
BACKLOG_EVERY_S = 5.0
# A stopping role waits this long for the confirms in flight, so that a clean stop leaves none
# pending to be sent twice after the restart (those still outstanding are logged as unconfirmed).
SETTLE_AT_STOP_S = 2.0
# Confirmed signals are marked sent with the next outbox write (one commit for both) or, when no
# signal comes, by their own UPDATE at most this long after: one per turn doubled a turn's cost
# on a machine where every commit waits for the disk.
MARK_EVERY_S = 0.1
log = logging.getLogger("msd.publishing")


class PublishingRole(Protocol):
    outbox: Outbox

    def apply_config(self, config: Config) -> None: ...
    def step(self) -> None: ...
    def report(self) -> None: ...
    def may_flush(self) -> bool: ...
    def flush_interval_s(self) -> float: ...
    def at_stop(self) -> None: ...      # what a clean stop writes last (after the confirms settled)


class Contained:
    """Runs one stage of a turn; an unexpected exception is logged, counted and survived."""

    def __init__(self, role: str):
        self.role = role
        self.lines = LineBudget(per_window=3, window_s=30.0)

    def run(self, stage: str, action, *args) -> None:
        try:
            action(*args)
        except DatabaseUnavailable:
            pass        # reported by the Database (one line down, one back); retried next turn
        except Fenced:
            raise       # another instance leads now: the role stops (msd.roles.runtime.process)
        except Exception:
            metrics.MESSAGE_FAILURES.labels(self.role, stage).inc()
            if self.lines.allow(stage):
                log.exception("%s: %s failed; skipped, the role goes on", self.role, stage,
                              extra={"stage": stage})
        for stage_name, n in self.lines.summaries():
            log.error("%s: %d more %s failures in the last %gs", self.role, n, stage_name, self.lines.window_s,
                      extra={"stage": stage_name, "suppressed": n})


def serve_publishing_role(ctx: RoleContext,
                          make_role: Callable[[Database, ConfirmingPublisher, DependencyHealth], PublishingRole]) -> int:
    """A publishing role's process: its database and confirming publisher (their state is the
    role's `database` and `broker` dependencies), the role made from them, then the loop."""
    deps = DependencyHealth(ctx, logging.getLogger(f"msd.{ctx.name}"))
    db = open_database(ctx.config, f"msd-{ctx.name}", deps)
    publisher = ConfirmingPublisher(ctx.config.rabbitmq.url, connection_name=f"msd-{ctx.name}",
                                    on_state=deps.reporter("broker"))
    role = None
    try:
        role = make_role(db, publisher, deps)
        ctx.booted()
        run_publishing_role(ctx, role)
    finally:
        try:
            if role is not None:
                role.outbox.close()     # confirms still outstanding: recorded as unconfirmed (pending)
        finally:
            publisher.close()
            db.close()
    return EXIT_OK


def run_publishing_role(ctx: RoleContext, role: PublishingRole) -> None:
    contained = Contained(ctx.name)
    next_status = next_flush = next_backlog = next_mark = 0.0
    while not ctx.stopping.is_set():
        ctx.beat()
        new_config = ctx.poll_control()
        if new_config is not None:
            contained.run("apply_config", role.apply_config, new_config)
        contained.run("step", role.step)
        # The confirms that arrived meanwhile are applied; marked sent (MARK_EVERY_S); marks that
        # failed while the database was down are retried the same way (see Outbox).
        role.outbox.service_connection()
        now = time.monotonic()
        if now >= next_mark:
            role.outbox.commit_marks()
            next_mark = now + MARK_EVERY_S
        if now >= next_flush:
            if role.outbox.backlog and role.may_flush():
                contained.run("outbox_flush", role.outbox.flush)
            next_flush = now + role.flush_interval_s()
        if now >= next_backlog:
            role.outbox.observe_backlog(ctx.name)
            next_backlog = now + BACKLOG_EVERY_S
        if now >= next_status:
            contained.run("report", role.report)
            next_status = now + STATUS_EVERY_S
    contained.run("at_stop", role.at_stop)     # first: a step-down kills the role soon after its SIGTERM
    role.outbox.settle(SETTLE_AT_STOP_S)
