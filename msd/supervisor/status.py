"""What `msd-ctl status`, systemd's STATUS line and the exit log lines say about the daemon."""
from __future__ import annotations

import os
import signal
from typing import Any

from msd.supervisor import children as ch
from msd.supervisor.memory import memory_view


def health(arbiter: Any) -> tuple[bool, list[str]]:
    """/healthz and the STATUS line: healthy only when every role runs (a standby runs none: it
    is healthy while its lease child runs) and nothing is degraded."""
    reasons = [f"{n} is {r.state.value}" for n, r in arbiter.records.items()
               if r.state is not ch.State.RUNNING and arbiter.leading()]
    if arbiter.leadership_enabled:
        lease = arbiter.lease.record
        if lease.state is not ch.State.RUNNING:
            reasons.append(f"lease is {lease.state.value}")
        elif arbiter.lease.role is None:
            reasons.append("leadership not known yet")
        for dependency, state in sorted((lease.status.get("dependencies") or {}).items()):
            if state.get("up") is False:
                reasons.append(f"lease: {dependency} down: {state.get('reason')}")
    if arbiter.config_error:
        reasons.append("config reload failed: " + arbiter.config_error["message"])
    for name, rec in arbiter.records.items():
        for dependency, state in sorted((rec.status.get("dependencies") or {}).items()):
            if state.get("up") is False:
                reasons.append(f"{name}: {dependency} down: {state.get('reason')}")
        for component, why in (rec.status.get("degraded") or {}).items():
            reasons.append(f"{name}: {component} degraded: {why}")
    return (not reasons, reasons)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def status_line(arbiter: Any) -> str:
    if arbiter.stop_deadline is not None:
        return "stopping"
    roles = ", ".join(f"{name} {rec.state.value}" for name, rec in arbiter.records.items())
    trainer = "training" if arbiter.trainer.handle is not None else "idle"
    line = f"{roles}; trainer {trainer}"
    if arbiter.leadership_enabled:
        line = f"{arbiter.lease.role or 'leadership unknown'} ({arbiter.leader_text()}); {line}"
    if arbiter.config_error:
        line += f"; config reload failed: {arbiter.config_error['message']}"
    degraded = [reason for reason in arbiter.health[1] if "degraded" in reason or " down: " in reason]
    if degraded:
        line += "; " + "; ".join(degraded)
    return line


def _role_view(rec: ch.ChildRecord, now: float) -> dict[str, Any]:
    return {
        "state": rec.state.value,
        "pid": rec.pid,
        "uptime_s": round(now - rec.started_at, 3) if rec.pid and rec.started_at is not None else None,
        "restarts": rec.restarts,
        "heartbeat_age_s": round(now - rec.last_heartbeat, 3) if rec.pid and rec.last_heartbeat else None,
        "last_exit": rec.last_exit,
        "status": rec.status,
    }


def status_snapshot(arbiter: Any) -> dict[str, Any]:
    now = arbiter.clock()
    healthy, reasons = arbiter.health
    return {
        "daemon": {
            "pid": os.getpid(),
            "uptime_s": round(arbiter.wall() - arbiter.started_wall, 3),
            "state": "stopping" if arbiter.stop_deadline is not None else ("ready" if arbiter.ready_sent else "starting"),
            "config_file": str(arbiter.config.source),
            "config_loaded_at": arbiter.config_loaded_wall,
            "config_error": arbiter.config_error,
            "healthy": healthy,
            "problems": reasons,
        },
        "roles": {name: _role_view(rec, now) for name, rec in arbiter.records.items()},
        "trainer": arbiter.trainer.summary(now),
        "memory_rss_bytes": process_memory(arbiter),
        "leadership": arbiter.lease_view(),
    }


def process_memory(arbiter: Any) -> dict[str, int | None]:
    """RSS of the supervisor, each role and (apart) the trainer: `msd-ctl status`, msd_process_rss_bytes."""
    pids = {"supervisor": os.getpid()}
    pids.update({name: rec.pid for name, rec in arbiter.records.items()})
    trainer = arbiter.trainer.handle
    return memory_view(pids, trainer.pid if trainer is not None else None)
