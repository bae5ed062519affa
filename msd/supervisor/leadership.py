"""The arbiter's duties towards leadership (active/standby, `leadership.enabled`).

The supervisor holds no database code: a small child (msd.roles.lease.main, started here like
any child) competes for the lease and reports `lease` events: "leader" with the epoch, or
"standby" with the reason. Only a leader runs the roles and the trainer, each started with its
writer session (the epoch its writes are fenced by, msd.store.db.WriterSession). On becoming a
standby the roles get SIGTERM and, what has not stopped one renewal period later, SIGKILL: the
lease child reports the loss two renewals before the lease can expire, so nothing of ours runs
when another instance takes over (and fencing refuses whatever would still try to write).
With leadership disabled this instance simply leads.

`LeadershipDuties` is the part of msd.supervisor.arbiter.Arbiter that does it.
"""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from typing import Any

from msd import metrics
from msd.config import ROLES
from msd.supervisor import children as ch
from msd.supervisor.status import describe_exit

log = logging.getLogger("msd.supervisor")
LEASE = "lease"
LEASE_MODULE = "msd.roles.lease.main"
LEADER, STANDBY = "leader", "standby"


class CommandRefused(Exception):
    """A control command this instance does not carry out in its current role (the reply says why)."""


class LeaseSlot:
    def __init__(self) -> None:
        self.record = ch.ChildRecord(LEASE)
        self.handle: Any = None
        self.role: str | None = None          # None until the lease child has said
        self.epoch: int | None = None
        self.since_wall: float | None = None  # when this instance's role last changed
        self.reason: str | None = None        # why it changed
        self.transitions = 0
        self.kill_roles_at: float | None = None
        self.stepping_down = False            # roles stopping; the lease is released once they are gone
        self.release_asked = False


class LeadershipDuties:
    @property
    def leadership_enabled(self) -> bool:
        return self.config.leadership.enabled

    def leading(self) -> bool:
        return not self.leadership_enabled or (self.lease.role == LEADER and not self.lease.stepping_down)

    def holder_name(self) -> str:
        return f"{self.config.leadership.instance}/{os.getpid()}"

    def child_args(self) -> dict[str, Any]:
        """What a role or the trainer is started with: its writer session when leases are on."""
        if not self.leadership_enabled:
            return {}
        return {"writer": {"epoch": self.lease.epoch, "instance": self.config.leadership.instance,
                           "idle_in_transaction_ms": int(self.config.leadership.failover_s * 1000)}}

    def start_lease(self) -> None:
        rec = self.lease.record
        if rec.last_exit is not None:
            metrics.CHILD_RESTARTS.labels(LEASE).inc()
        handle = self.host.spawn(LEASE, LEASE_MODULE, self.config, {},
                                 args={"holder": self.holder, "supervisor_pid": os.getpid()})
        self.lease.handle = handle
        self.lease.record = ch.after_start(ch.started(rec, handle.pid, self.clock()))

    # ----- transitions --------------------------------------------------------------------
    def lease_changed(self, payload: dict[str, Any]) -> None:
        if payload.get("role") == LEADER:
            self.became_leader(int(payload["epoch"]), payload.get("reason") or "acquired")
        else:
            self.became_standby(payload.get("reason") or "not leading")

    def became_leader(self, epoch: int, reason: str) -> None:
        self._transition(LEADER, epoch, reason)
        log.info("leading (epoch %d): %s; starting the roles", epoch, reason,
                 extra={"leadership": LEADER, "epoch": epoch})
        now = self.clock()
        for name in ROLES:
            rec = self.records[name]
            if name in self.handles:    # still stopping from an earlier term: start it again when it exits
                self.records[name] = replace(rec, restart_requested=True)
            else:
                self.records[name] = replace(rec, state=ch.State.BACKOFF, backoff_until=now, failures=0)

    def became_standby(self, reason: str) -> None:
        was_leader = self.lease.role == LEADER
        epoch = self.lease.epoch
        self.lease.stepping_down = self.lease.release_asked = False
        self._transition(STANDBY, None, reason)
        if not was_leader:
            log.info("standby: %s", reason, extra={"leadership": STANDBY})
            return
        log.warning("no longer leading (epoch %s): %s; stopping the roles", epoch, reason,
                    extra={"leadership": STANDBY, "epoch": epoch})
        self.stop_roles_for_standby()

    def _transition(self, role: str, epoch: int | None, reason: str) -> None:
        if self.lease.role != role:
            self.lease.since_wall = self.wall()
            self.lease.transitions += 1
            metrics.LEADERSHIP_TRANSITIONS.labels(role).inc()
        self.lease.role, self.lease.epoch, self.lease.reason = role, epoch, reason
        metrics.LEADER.set(1 if role == LEADER else 0)

    def stop_roles_for_standby(self, kill_after_s: float | None = None) -> None:
        """SIGTERM to the roles and the trainer; SIGKILL to what is left after `kill_after_s`
        (default one renewal period: the lease may be about to expire)."""
        now = self.clock()
        for name, rec in self.records.items():
            if name in self.handles:
                self.records[name] = ch.stopping(rec)
                self.terminate(name)
            else:
                self.records[name] = replace(rec, state=ch.State.STOPPED, backoff_until=None)
        self.trainer.drop_pending()
        if self.trainer.handle is not None and self.trainer.cancel_requested_at is None:
            self.trainer.cancel("no longer leading", now)
            self.host.kill(self.trainer.handle, signal.SIGTERM)
        self.lease.kill_roles_at = now + (kill_after_s if kill_after_s is not None
                                          else self.config.leadership.lease_renew_s)

    # ----- the loop's part ------------------------------------------------------------------
    def police_lease(self, now: float) -> None:
        if not self.leadership_enabled:
            return
        self._reap_lease(now)
        if self.lease.kill_roles_at is not None and now >= self.lease.kill_roles_at:
            self.lease.kill_roles_at = None
            late = list(self.handles) + (["trainer"] if self.trainer.handle is not None else [])
            if late and not self.leading():
                log.error("%s did not stop in time after leadership was lost; killing", ", ".join(late))
                for name in late:
                    handle = self.trainer.handle if name == "trainer" else self.handles[name]
                    self.host.kill(handle, signal.SIGKILL)
        # A new lease child competes afresh (it may take our own lease back at once, as a new
        # epoch): only once nothing of the previous term runs.
        if self.lease.handle is None and self.stop_deadline is None and ch.due_to_start(self.lease.record, now) \
                and not self.handles and self.trainer.handle is None:
            self.start_lease()
        if self.lease.stepping_down and not self.lease.release_asked and not self.handles \
                and self.trainer.handle is None and self.lease.handle is not None:
            # Nothing of ours runs any more: now the lease may go, and a standby take over at once.
            self.host.send(self.lease.handle, ("step_down", {}))
            self.lease.release_asked = True

    def _reap_lease(self, now: float) -> None:
        handle = self.lease.handle
        if handle is None:
            return
        code = self.host.exit_code(handle)
        if code is None:
            reason = ch.unresponsive_reason(self.lease.record, now, ch.RestartPolicy.of(self.config.supervisor))
            silent = now - (self.lease.record.last_heartbeat or now)
            if self.lease.role == LEADER and silent > self.config.leadership.lost_after_s:
                # Nobody may be renewing our lease: stop the roles before it can expire.
                reason = f"sent no heartbeat for {silent:.1f}s while leading"
                self.became_standby(f"the lease child {reason}")
            if reason and self.stop_deadline is None:
                log.error("the lease child %s; killing it", reason)
                self.host.kill(handle, signal.SIGKILL)
            return
        self.lease.handle = None
        self.release(LEASE, handle)
        self.lease.record = ch.exited(self.lease.record, describe_exit(code), now,
                                      ch.RestartPolicy.of(self.config.supervisor))
        if self.stop_deadline is None:
            log.error("the lease child %s", self.lease.record.last_exit)
            if self.lease.role == LEADER:   # nobody renews our lease any more
                self.became_standby(f"the lease child {self.lease.record.last_exit}")

    def keep_leadership_identity(self, new: Any) -> Any:
        """A reload applies the lease timings live (the lease child is sent the new config);
        whether leases are on and this instance's name take effect at the next start."""
        running, wanted = self.config.leadership, new.leadership
        if (wanted.enabled, wanted.instance) == (running.enabled, running.instance):
            return new
        log.warning("leadership.enabled/instance changed; it takes effect when msd is restarted")
        return replace(new, leadership=replace(wanted, enabled=running.enabled, instance=running.instance))

    def command_step_down(self) -> dict[str, Any]:
        if not self.leadership_enabled:
            raise CommandRefused("leadership is not enabled (leadership.enabled: false): this instance leads alone")
        if self.lease.role != LEADER or self.lease.handle is None:
            raise CommandRefused(f"standby: this instance does not lead ({self.leader_text()})")
        log.info("stepping down on request (epoch %s): stopping the roles, then releasing the lease",
                 self.lease.epoch)
        self.lease.stepping_down = True
        self.stop_roles_for_standby(self.config.supervisor.stop_deadline_s)
        return {"stepping_down": True, "epoch": self.lease.epoch}

    def refuse_unless_leading(self) -> None:
        if not self.leading():
            raise CommandRefused(f"standby: this instance does not lead ({self.leader_text()})")

    def lease_view(self) -> dict[str, Any]:
        """The lease as the lease child last saw it (from its heartbeat), plus our own role."""
        status = self.lease.record.status
        return {"enabled": self.leadership_enabled, "role": self.lease.role if self.leadership_enabled else LEADER,
                "epoch": self.lease.epoch, "since": self.lease.since_wall, "reason": self.lease.reason,
                "transitions": self.lease.transitions, "holder_name": self.holder,
                "lease": status.get("lease"), "note": status.get("note"),
                "lease_child": self.lease.record.state.value, "lease_child_pid": self.lease.record.pid}

    def leader_text(self) -> str:
        lease = self.lease.record.status.get("lease") or {}
        return f"leader: {lease['holder']} since {lease['since']}" if lease.get("holder") else "no leader"
