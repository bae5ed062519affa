"""The main loop shared by the roles that publish signals (signaller, exits).

Each turn: prove liveness, apply a config the supervisor sent, let the role take its inputs
and decide (`step`), mark what the broker confirmed as sent, retry the outbox backlog now and
then, and report status once a second.
"""
from __future__ import annotations

import time
from typing import Protocol

from msd.config import Config
from msd.roles.outbox import Outbox
from msd.roles.runtime import RoleContext

STATUS_EVERY_S = 1.0


class PublishingRole(Protocol):
    outbox: Outbox

    def apply_config(self, config: Config) -> None: ...
    def step(self) -> None: ...
    def report(self) -> None: ...
    def may_flush(self) -> bool: ...
    def flush_interval_s(self) -> float: ...


def run_publishing_role(ctx: RoleContext, role: PublishingRole) -> None:
    next_status = next_flush = 0.0
    while not ctx.stopping.is_set():
        ctx.beat()
        new_config = ctx.poll_control()
        if new_config is not None:
            role.apply_config(new_config)
        role.step()
        # Marks that failed while the database was down are retried every turn (see Outbox).
        role.outbox.commit_marks()
        now = time.monotonic()
        if now >= next_flush:
            if role.outbox.backlog and role.may_flush():
                role.outbox.flush()
            next_flush = now + role.flush_interval_s()
        if now >= next_status:
            role.report()
            next_status = now + STATUS_EVERY_S
    role.outbox.commit_marks()
