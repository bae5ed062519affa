"""The arbiter's duties towards the one trainer process: start or queue a training request
(the newest wins, msd.supervisor.trainer_slot keeps the facts), reap a finished run and tell the
signaller, and police the run's deadline (`trainer.timeout_s`, read with the config's shape).

`TrainerDuties` is the part of msd.supervisor.arbiter.Arbiter that does it.
"""
from __future__ import annotations

import logging
import signal
from typing import Any

from msd import metrics
from msd.config import TRAINER
from msd.supervisor.status import describe_exit

log = logging.getLogger("msd.supervisor")
TRAINER_MODULE = "msd.roles.trainer.main"


class TrainerDuties:
    def request_training(self, reason: str, strategy: str | None, *, source: str,
                         repeat: bool = False) -> dict[str, Any]:
        """Start or queue a training run. A `repeat` ask (a condition that still holds) is
        dropped when the running or waiting request covers it: it never cancels a run that
        would serve it."""
        if self.stop_deadline is not None:
            raise RuntimeError("the daemon is stopping; training request refused")
        self.refuse_unless_leading()
        covering = self.trainer.covered_by(strategy) if repeat else None
        if covering is not None:
            log.info("training request (%s) already covered by request %d; not cancelling it",
                     reason, covering.id)
            return {"request_id": None, "covered_by": covering.id,
                    "running": self.trainer.current.id if self.trainer.current else None}
        request = self.trainer.new_request(reason, strategy, source, self.wall())
        log.info("training requested: %s (request %d, strategy %s, from %s)",
                 reason, request.id, strategy or "all", source)
        if self.trainer.handle is None:
            self._start_trainer(request)
        else:
            superseded = self.trainer.queue_next(request)
            if superseded is not None:
                log.info("training request %d superseded by %d before it started", superseded.id, request.id)
            if self.trainer.cancel_requested_at is None:
                log.info("cancelling training run %d: superseded by request %d",
                         self.trainer.current.id, request.id)
                self.trainer.cancel("superseded", self.clock())
                self.host.kill(self.trainer.handle, signal.SIGTERM)
        return {"request_id": request.id, "running": self.trainer.current.id if self.trainer.current else None}

    def _start_trainer(self, request: Any) -> None:
        handle = self.host.spawn(TRAINER, TRAINER_MODULE, self.config, {}, args={"request": request.as_dict(), **self.child_args()})
        self.trainer.started(request, handle, self.clock())

    def _reap_trainer(self, now: float) -> None:
        handle = self.trainer.handle
        if handle is None:
            return
        code = self.host.exit_code(handle)
        if code is None:
            return
        self.release(TRAINER, handle)
        outcome = self.trainer.finished(code, describe_exit(code), now)
        metrics.TRAINING_RUNS.labels(outcome["outcome"]).inc()
        level = logging.INFO if outcome["outcome"] in ("succeeded", "cancelled") else logging.ERROR
        log.log(level, "training request %d ended: %s (%s)", outcome["request_id"], outcome["outcome"],
                outcome["exit"], extra={"training": outcome})
        # Whatever the exit: a run cancelled after promoting one strategy has changed versions.
        self.notify_models_changed(None, f"training request {outcome['request_id']} {outcome['outcome']}")
        pending = self.trainer.take_pending()
        if pending is not None and self.stop_deadline is None and self.leading():
            self._start_trainer(pending)

    def police_trainer(self, now: float) -> None:
        if self.trainer.handle is None:
            return
        # The trainer enforces trainer.timeout_s itself; this is the backstop for one that cannot.
        hard_limit = self.config.trainer_timeout_s + self.config.supervisor.stop_deadline_s
        if self.trainer.cancel_requested_at is None and now - self.trainer.started_at > hard_limit:
            log.error("training request %d exceeded trainer.timeout_s=%gs; cancelling",
                      self.trainer.current.id, self.config.trainer_timeout_s)
            self.trainer.cancel("timed_out", now)
            self.host.kill(self.trainer.handle, signal.SIGTERM)
        elif self.trainer.cancel_requested_at is not None and not self.trainer.killed \
                and now - self.trainer.cancel_requested_at > self.config.supervisor.stop_deadline_s:
            log.error("trainer pid %s ignored SIGTERM for %gs; killing it",
                      self.trainer.handle.pid, self.config.supervisor.stop_deadline_s)
            self.trainer.killed = True
            self.host.kill(self.trainer.handle, signal.SIGKILL)
