"""The supervisor loop (cf. gunicorn's Arbiter): one thread owns all state.

Each turn: wait for a child message, a child exit or an inbox event; dispatch every event to
`handle_<kind>`; then, in this fixed order, reap exited children, kill unresponsive ones,
start children whose backoff has elapsed, police the trainer, advance a stop in progress, and
report (READY/STATUS/WATCHDOG, health, gauges). Threads and signal handlers only post events.
"""
from __future__ import annotations

import logging
import signal
import time
from dataclasses import replace
from typing import Any, Callable

from msd import logs, metrics
from msd.config import ROLES, TRAINER, Config, ConfigError
from msd.supervisor import children as ch
from msd.supervisor import protocol
from msd.supervisor.host import repair_queue_lock
from msd.supervisor.inbox import Event, Inbox
from msd.supervisor.leadership import LEASE, CommandRefused, LeadershipDuties, LeaseSlot
from msd.supervisor.reload_check import ReloadPlan, check_reload
from msd.supervisor.status import describe_exit, health, process_memory, status_line, status_snapshot
from msd.supervisor.trainer_slot import TrainerSlot
from msd.supervisor.training import TRAINER_MODULE, TrainerDuties

log = logging.getLogger("msd.supervisor")

MODULES = {"consumer": "msd.roles.consumer.main", "signaller": "msd.roles.signaller.main",
           "exits": "msd.roles.exits.main", TRAINER: TRAINER_MODULE}
# Data-plane queues: name -> (writer role, reader role). One writer and one reader each.
QUEUES = {"market": ("consumer", "signaller"), "exit_prices": ("consumer", "exits"),
          "positions": ("consumer", "exits")}
STOP_ORDER = (TRAINER,) + tuple(reversed(ROLES))


class Arbiter(TrainerDuties, LeadershipDuties):
    def __init__(self, config: Config, host: Any, notifier: Any, *, inbox: Inbox | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 check: Callable[[Config], tuple[Config, ReloadPlan]] = check_reload):
        self.config = config
        self.check = check              # validates a reload in a child (msd.supervisor.reload_check)
        self.host, self.notifier = host, notifier
        self.inbox = inbox or Inbox()
        self.clock, self.wall = clock, wall
        self.records = {name: ch.ChildRecord(name) for name in ROLES}
        self.handles: dict[str, Any] = {}
        self.term_sent_at: dict[str, float] = {}
        self.queues = {name: host.make_queue(config.supervisor.queue_maxsize) for name in QUEUES}
        self.trainer = TrainerSlot()
        self.lease = LeaseSlot()
        self.holder = self.holder_name()
        self.started_wall = wall()
        self.config_loaded_wall = wall()
        self.config_error: dict[str, Any] | None = None
        self.stop_deadline: float | None = None
        self.stop_reason: str | None = None
        self.killed_on_stop = False
        self.exit_code: int | None = None
        self.ready_sent = False
        self.last_status_line = ""
        self.health: tuple[bool, list[str]] = (False, ["starting"])

    # ----- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        if self.leadership_enabled:
            self.start_lease()      # the roles start when it reports that we lead
        else:
            metrics.LEADER.set(1)
            for name in ROLES:
                self.start_child(name)
        while self.exit_code is None:
            self.turn(0.2)
        return self.exit_code

    def turn(self, timeout: float) -> None:
        extra = {TRAINER: self.trainer.handle, LEASE: self.lease.handle}
        live = list(self.handles.values()) + [h for h in extra.values() if h is not None]
        self.host.wait(live, [self.inbox.wakeup_fd], timeout)
        for name, handle in list(self.handles.items()) + [(n, h) for n, h in extra.items() if h is not None]:
            self.pump(name, handle)
        for event in self.inbox.drain():
            self.dispatch(event)
        now = self.clock()
        self.reap(now)
        self.police_lease(now)
        self.kill_unresponsive(now)
        self.start_due(now)
        self.police_trainer(now)
        self.advance_stop(now)
        self.report()

    def pump(self, name: str, handle: Any) -> None:
        for kind, data in self.host.receive(handle):
            self.dispatch(Event(kind, {"child": name, "payload": data}))

    def release(self, name: str, handle: Any) -> None:
        """A child has exited: read what it sent last (often why it died), then let go of it."""
        self.pump(name, handle)
        self.host.release(handle)
        metrics.mark_process_dead(handle.pid)

    def dispatch(self, event: Event) -> None:
        handler = getattr(self, f"handle_{event.kind}", None)
        try:
            if handler is None:
                raise ValueError(f"no handler for event kind {event.kind!r}")
            handler(event)
        except Exception as exc:
            log.exception("event %s failed", event.kind)
            if event.reply is not None:
                event.reply.put(protocol.error(f"{type(exc).__name__}: {exc}"))

    # ----- events from children ---------------------------------------------------------
    def handle_log(self, event: Event) -> None:
        logs.emit_child_record(event.data["payload"], role=event.data["child"])

    def handle_stray_output(self, event: Event) -> None:
        """Text a process wrote to stdout/stderr outside logging (see msd.logs.StrayOutput)."""
        logging.getLogger("msd.stray").warning(event.data["text"], extra={"role": "unknown", "stray_output": True})

    def handle_booted(self, event: Event) -> None:
        name = event.data["child"]
        if name == TRAINER:
            self.trainer.record = ch.booted(self.trainer.record, self.clock())
            return
        if name == LEASE:
            self.lease.record = ch.booted(self.lease.record, self.clock())
            return
        self.records[name] = ch.booted(self.records[name], self.clock())
        log.info("role %s is running (pid %s)", name, self.records[name].pid)

    def handle_heartbeat(self, event: Event) -> None:
        name, payload = event.data["child"], event.data["payload"]
        # A heartbeat thread can outlive a stuck main loop; only recent progress counts as alive.
        if payload.get("progress_age_s", 0.0) > self.config.supervisor.heartbeat_timeout_s:
            return
        if name == TRAINER:
            self.trainer.record = ch.heartbeat(self.trainer.record, self.clock(), payload.get("status", {}))
        elif name == LEASE:
            self.lease.record = ch.heartbeat(self.lease.record, self.clock(), payload.get("status", {}))
        else:
            self.records[name] = ch.heartbeat(self.records[name], self.clock(), payload.get("status", {}))

    def handle_event(self, event: Event) -> None:
        payload = dict(event.data["payload"])
        kind = payload.pop("kind", None)
        if kind == "train_request":
            self.request_training(payload.get("reason", "requested by " + event.data["child"]),
                                  payload.get("strategy"), source=event.data["child"],
                                  repeat=bool(payload.get("repeat")))
        elif kind == "train_result" and event.data["child"] == TRAINER:
            self.trainer.result = payload
        elif kind == "lease" and event.data["child"] == LEASE:
            self.lease_changed(payload)
        else:
            log.warning("ignoring unknown event %r from %s", kind, event.data["child"])

    # ----- events from threads and signals ----------------------------------------------
    def handle_stop(self, event: Event) -> None:
        self.begin_stop(event.data.get("reason", "stop requested"))

    def handle_reload(self, event: Event) -> None:
        self.reload(event.data.get("source", "unknown"))

    def handle_control(self, event: Event) -> None:
        request = event.data["request"]
        command = getattr(self, "command_" + str(request.get("cmd")).replace("-", "_"), None)
        if command is None:
            event.reply.put(protocol.error(f"unknown command {request.get('cmd')!r}"))
            return
        try:
            event.reply.put(protocol.ok(command(**request.get("args", {}))))
        except CommandRefused as exc:
            event.reply.put(protocol.error(str(exc)))

    # ----- control commands -------------------------------------------------------------
    def command_status(self) -> dict[str, Any]:
        return status_snapshot(self)

    def command_reload(self) -> dict[str, Any]:
        return self.reload("msd-ctl")

    def command_retrain(self, strategy: str | None = None, reason: str | None = None) -> dict[str, Any]:
        self.refuse_unless_leading()
        return self.request_training(reason or "manual (msd-ctl retrain)", strategy, source="msd-ctl")

    def command_models_changed(self, strategy: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Someone changed the active model versions (e.g. `msd-ctl rollback`): switch the signaller now."""
        return {"notified": self.notify_models_changed(strategy, reason or "msd-ctl")}

    def notify_models_changed(self, strategy: str | None, reason: str) -> bool:
        handle = self.handles.get("signaller")
        if handle is None or self.records["signaller"].state is not ch.State.RUNNING:
            return False   # a signaller that starts later reads the active versions anyway
        self.host.send(handle, ("models_changed", {"strategy": strategy, "reason": reason}))
        return True

    def command_stop(self) -> dict[str, Any]:
        self.begin_stop("msd-ctl stop")
        return {"stopping": True, "deadline_s": self.config.supervisor.stop_deadline_s}

    # ----- children ---------------------------------------------------------------------
    def start_child(self, name: str) -> None:
        rec = self.records[name]
        if rec.last_exit is not None:
            for queue_name, (writer, reader) in QUEUES.items():
                if name in (writer, reader):
                    repair_queue_lock(self.queues[queue_name], "writer" if name == writer else "reader")
            metrics.CHILD_RESTARTS.labels(name).inc()
        queues = {q: self.queues[q] for q, sides in QUEUES.items() if name in sides}
        handle = self.host.spawn(name, MODULES[name], self.config, queues, args=self.child_args())
        self.handles[name] = handle
        self.term_sent_at.pop(name, None)
        self.records[name] = ch.after_start(ch.started(rec, handle.pid, self.clock()))

    def terminate(self, name: str, sig: int = signal.SIGTERM) -> None:
        handle = self.handles.get(name) if name != TRAINER else self.trainer.handle
        if handle is not None:
            self.host.kill(handle, sig)
            self.term_sent_at.setdefault(name, self.clock())

    def reap(self, now: float) -> None:
        policy = ch.RestartPolicy.of(self.config.supervisor)
        for name, handle in list(self.handles.items()):
            code = self.host.exit_code(handle)
            if code is None:
                continue
            del self.handles[name]
            self.term_sent_at.pop(name, None)
            self.release(name, handle)
            rec = ch.exited(self.records[name], describe_exit(code), now, policy)
            self.records[name] = rec
            self._log_exit(rec)
        self._reap_trainer(now)

    def _log_exit(self, rec: ch.ChildRecord) -> None:
        if rec.state is ch.State.FATAL:
            log.critical("role %s %s; %d fast failures in a row, giving up (FATAL)",
                         rec.name, rec.last_exit, rec.failures)
        elif rec.state is ch.State.BACKOFF and self.stop_deadline is None:
            delay = max(0.0, (rec.backoff_until or 0) - self.clock())
            level = logging.INFO if rec.failures == 0 else logging.WARNING
            log.log(level, "role %s %s; starting again in %.2fs", rec.name, rec.last_exit, delay)
        else:
            log.info("role %s %s", rec.name, rec.last_exit)

    def kill_unresponsive(self, now: float) -> None:
        policy = ch.RestartPolicy.of(self.config.supervisor)
        for name, rec in self.records.items():
            reason = ch.unresponsive_reason(rec, now, policy)
            sent = self.term_sent_at.get(name)
            if rec.state is ch.State.STOPPING and sent is not None \
                    and now - sent > self.config.supervisor.stop_deadline_s:
                reason = f"did not stop within {self.config.supervisor.stop_deadline_s:g}s"
            if reason and name in self.handles:
                log.error("role %s %s; killing it", name, reason)
                self.host.kill(self.handles[name], signal.SIGKILL)

    def start_due(self, now: float) -> None:
        if self.stop_deadline is not None or not self.leading():
            return
        for name in ROLES:
            if ch.due_to_start(self.records[name], now):
                self.start_child(name)

    # ----- reload -----------------------------------------------------------------------
    def reload(self, source: str) -> dict[str, Any]:
        if self.stop_deadline is not None:
            log.warning("config reload from %s ignored: msd is stopping", source)
            return {"applied": False, "error": "msd is stopping"}
        self.notifier.reloading()
        try:
            new, plan = self.check(self.config)
            new = self.keep_leadership_identity(new)
        except ConfigError as exc:
            self.config_error = {"message": str(exc), "source": source, "at": self.wall()}
            metrics.CONFIG_RELOADS.labels("invalid").inc()
            log.error("config reload from %s failed, keeping the running config: %s", source, exc)
            self._reloaded()
            return {"applied": False, "error": str(exc)}
        sections = plan.changed_sections
        affected = [r for r in ROLES if r in plan.affected]
        live = [r for r in affected if r in plan.live and self.records[r].state is ch.State.RUNNING]
        restart = [r for r in affected if r not in live]
        self.config, self.config_error, self.config_loaded_wall = new, None, self.wall()
        logging.getLogger().setLevel(new.logging.level)
        for name in live:
            self.host.send(self.handles[name], ("config", {"config": new}))
        if self.lease.handle is not None:
            self.host.send(self.lease.handle, ("config", {"config": new}))
        for name in restart:
            self._restart_for_reload(name)
        for section in {"control", "metrics"} & set(sections):
            log.warning("config section %s changed; it takes effect when msd is restarted", section)
        metrics.CONFIG_RELOADS.labels("applied").inc()
        log.info("config reloaded from %s: changed sections %s, applied live in %s, restarting %s", source,
                 sections or "none", live or "nothing", restart or "nothing")
        self._reloaded()
        return {"applied": True, "changed_sections": sections, "applied_live": live, "restarted": restart}

    def _reloaded(self) -> None:
        # READY=1 ends RELOADING=1; before the first READY it would claim a start-up not yet done.
        if self.ready_sent:
            self.notifier.ready(status_line(self))
        else:
            self.notifier.status(status_line(self))

    def _restart_for_reload(self, name: str) -> None:
        rec = self.records[name]
        if name in self.handles:
            self.records[name] = ch.stopping(rec, restart=True)
            self.terminate(name)
        elif self.leading():   # BACKOFF or FATAL: the new config deserves a fresh try now
            self.records[name] = replace(rec, state=ch.State.BACKOFF, backoff_until=self.clock(), failures=0)

    # ----- stop -------------------------------------------------------------------------
    def begin_stop(self, reason: str) -> None:
        if self.stop_deadline is not None:
            log.warning("second stop request (%s): killing all children now", reason)
            self.stop_deadline = self.clock()
            return
        self.stop_reason = reason
        self.stop_deadline = self.clock() + self.config.supervisor.stop_deadline_s
        log.info("stopping (%s); deadline %gs", reason, self.config.supervisor.stop_deadline_s)
        self.notifier.stopping()
        self.trainer.drop_pending()
        for name, rec in self.records.items():
            if name not in self.handles:
                self.records[name] = replace(rec, state=ch.State.STOPPED)

    def advance_stop(self, now: float) -> None:
        if self.stop_deadline is None:
            return
        alive = [n for n in STOP_ORDER if (n == TRAINER and self.trainer.handle) or n in self.handles]
        if self.lease.handle is not None:
            alive.append(LEASE)     # last: it releases the lease once nothing of ours runs
        if not alive:
            self.exit_code = 1 if self.killed_on_stop else 0
            return
        if now >= self.stop_deadline:
            for name in alive:
                handle = {TRAINER: self.trainer.handle, LEASE: self.lease.handle}.get(name) or self.handles[name]
                self.host.kill(handle, signal.SIGKILL)
            if not self.killed_on_stop:
                log.error("stop deadline passed; killed %s", ", ".join(alive))
            self.killed_on_stop = True
            return
        first = alive[0]   # one at a time, in reverse start order
        if first == LEASE:
            if self.lease.record.state is not ch.State.STOPPING:
                self.lease.record = ch.stopping(self.lease.record)
                self.host.kill(self.lease.handle, signal.SIGTERM)
        elif first == TRAINER:
            if self.trainer.cancel_requested_at is None:
                self.trainer.cancel("daemon stopping", now)
                self.host.kill(self.trainer.handle, signal.SIGTERM)
        elif self.records[first].state is not ch.State.STOPPING:
            self.records[first] = ch.stopping(self.records[first])
            self.terminate(first)

    # ----- reporting --------------------------------------------------------------------
    def report(self) -> None:
        line = status_line(self)
        fatal = [n for n, r in list(self.records.items()) + [(LEASE, self.lease.record)] if r.state is ch.State.FATAL]
        if not self.ready_sent and self.serving():
            self.ready_sent = True
            self.notifier.ready(line)
            log.info("all roles running; ready" if self.leading() else "standby; ready")
        elif line != self.last_status_line:
            self.notifier.status(line)
        self.last_status_line = line
        if not fatal and self.stop_deadline is None:
            self.notifier.watchdog()   # withheld while a role is FATAL, so systemd restarts us
        for name, rec in self.records.items():
            metrics.CHILD_UP.labels(name).set(1 if rec.state is ch.State.RUNNING else 0)
        for name, rss in process_memory(self).items():
            if name != "total_without_trainer":
                metrics.PROCESS_RSS.labels(name).set(rss or 0)
        self.health = health(self)

    def serving(self) -> bool:
        """Up as it should be: every role running when leading, the lease child when standby."""
        if self.leading():
            return all(r.state is ch.State.RUNNING for r in self.records.values())
        return self.lease.role is not None and self.lease.record.state is ch.State.RUNNING
