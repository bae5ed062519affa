"""Child process states and their transitions, as pure functions over a `ChildRecord`.

STARTING -> RUNNING (child reported booted) -> exits -> BACKOFF (growing delay) -> STARTING ...
Too many consecutive fast failures -> FATAL (no hot respawn loop). STOPPING -> STOPPED on
purpose. Times are the supervisor's monotonic clock, passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class State(str, Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    FATAL = "FATAL"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial_s: float
    backoff_max_s: float
    stable_after_s: float
    fatal_after_failures: int
    heartbeat_timeout_s: float
    boot_timeout_s: float

    @classmethod
    def of(cls, s: Any) -> "RestartPolicy":
        """From the config's `supervisor` section (msd.config.SupervisorConfig)."""
        return cls(backoff_initial_s=s.backoff_initial_s, backoff_max_s=s.backoff_max_s,
                   stable_after_s=s.stable_after_s, fatal_after_failures=s.fatal_after_failures,
                   heartbeat_timeout_s=s.heartbeat_timeout_s, boot_timeout_s=s.boot_timeout_s)


@dataclass(frozen=True)
class ChildRecord:
    name: str
    state: State = State.STOPPED
    pid: int | None = None
    started_at: float | None = None
    booted_at: float | None = None
    last_heartbeat: float | None = None
    restarts: int = 0
    failures: int = 0                       # consecutive fast failures
    backoff_until: float | None = None
    last_exit: str | None = None            # human description of the last exit
    restart_requested: bool = False         # stopped on purpose to start again (reload)
    status: dict[str, Any] = field(default_factory=dict)   # the child's own report


def started(rec: ChildRecord, pid: int, now: float) -> ChildRecord:
    return replace(rec, state=State.STARTING, pid=pid, started_at=now, booted_at=None,
                   last_heartbeat=now, backoff_until=None, restart_requested=False, status={})


def booted(rec: ChildRecord, now: float) -> ChildRecord:
    if rec.state is not State.STARTING:
        return rec
    return replace(rec, state=State.RUNNING, booted_at=now, last_heartbeat=now)


def heartbeat(rec: ChildRecord, now: float, status: dict[str, Any]) -> ChildRecord:
    return replace(rec, last_heartbeat=now, status=status)


def stopping(rec: ChildRecord, *, restart: bool = False) -> ChildRecord:
    return replace(rec, state=State.STOPPING, restart_requested=restart)


def backoff_delay(failures: int, policy: RestartPolicy) -> float:
    """Delay before the next start after `failures` consecutive fast failures (>= 1)."""
    return min(policy.backoff_max_s, policy.backoff_initial_s * (2 ** max(0, failures - 1)))


def exited(rec: ChildRecord, exit_desc: str, now: float, policy: RestartPolicy) -> ChildRecord:
    """Account for a child that exited; decides STOPPED, BACKOFF or FATAL."""
    base = replace(rec, pid=None, last_exit=exit_desc)
    if rec.state is State.STOPPING and rec.restart_requested:
        return replace(base, state=State.BACKOFF, backoff_until=now, failures=0)
    if rec.state in (State.STOPPING, State.STOPPED):
        return replace(base, state=State.STOPPED)
    ran_for = now - (rec.started_at if rec.started_at is not None else now)
    failures = 1 if ran_for >= policy.stable_after_s else rec.failures + 1
    if failures >= policy.fatal_after_failures:
        return replace(base, state=State.FATAL, failures=failures, backoff_until=None)
    return replace(base, state=State.BACKOFF, failures=failures,
                   backoff_until=now + backoff_delay(failures, policy))


def due_to_start(rec: ChildRecord, now: float) -> bool:
    return rec.state is State.BACKOFF and rec.backoff_until is not None and now >= rec.backoff_until


def after_start(rec: ChildRecord) -> ChildRecord:
    """Count a respawn (a start that follows an earlier run of this child)."""
    return replace(rec, restarts=rec.restarts + 1) if rec.last_exit is not None else rec


def unresponsive_reason(rec: ChildRecord, now: float, policy: RestartPolicy) -> str | None:
    """Why a live child should be killed as hung, or None when it is healthy."""
    if rec.state is State.STARTING and rec.started_at is not None \
            and now - rec.started_at > policy.boot_timeout_s:
        return f"did not report booted within {policy.boot_timeout_s:g}s"
    if rec.state is State.RUNNING and rec.last_heartbeat is not None \
            and now - rec.last_heartbeat > policy.heartbeat_timeout_s:
        return f"no heartbeat for {now - rec.last_heartbeat:.1f}s (limit {policy.heartbeat_timeout_s:g}s)"
    return None
