"""Bookkeeping for the one trainer process: the latest training request always wins.

A request while a run is in progress replaces any request still waiting and cancels the
running one (SIGTERM, sent by the arbiter); when that run has ended, the waiting request
starts on the newest data. The arbiter does the signalling; this class only keeps the facts.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from msd.roles.runtime import EXIT_CANCELLED, EXIT_OK, EXIT_TIMED_OUT
from msd.supervisor import children as ch


@dataclass(frozen=True)
class TrainRequest:
    id: int
    reason: str
    strategy: str | None
    source: str
    requested_at: float          # wall clock, seconds since the epoch

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainerSlot:
    def __init__(self, history: int = 20) -> None:
        self.record = ch.ChildRecord("trainer")
        self.handle: Any = None
        self.current: TrainRequest | None = None
        self.pending: TrainRequest | None = None
        self.started_at = 0.0
        self.cancel_requested_at: float | None = None
        self.cancel_reason: str | None = None
        self.killed = False
        self.result: dict[str, Any] | None = None    # the trainer's own report, if it sent one
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._next_id = 1

    def new_request(self, reason: str, strategy: str | None, source: str, now_wall: float) -> TrainRequest:
        request = TrainRequest(self._next_id, reason, strategy, source, now_wall)
        self._next_id += 1
        return request

    def started(self, request: TrainRequest, handle: Any, now: float) -> None:
        self.handle, self.current, self.started_at = handle, request, now
        self.cancel_requested_at, self.cancel_reason, self.killed, self.result = None, None, False, None
        self.record = ch.started(self.record, handle.pid, now)

    def queue_next(self, request: TrainRequest) -> TrainRequest | None:
        """Make `request` the next to run; returns the waiting request it replaced, if any."""
        superseded, self.pending = self.pending, request
        if superseded is not None:
            self.history.appendleft({"request_id": superseded.id, "reason": superseded.reason,
                                     "outcome": "superseded", "exit": None, "duration_s": 0.0})
        return superseded

    def cancel(self, reason: str, now: float) -> None:
        self.cancel_requested_at, self.cancel_reason = now, reason

    def finished(self, code: int, exit_desc: str, now: float) -> dict[str, Any]:
        outcome = {"request_id": self.current.id, "reason": self.current.reason,
                   "outcome": self._outcome(code), "exit": exit_desc,
                   "duration_s": round(now - self.started_at, 3), "result": self.result}
        self.history.appendleft(outcome)
        self.record = ch.exited(ch.stopping(self.record), exit_desc, now,
                                ch.RestartPolicy(0, 0, 0, 1_000_000, 0, 0))
        self.handle, self.current = None, None
        return outcome

    def _outcome(self, code: int) -> str:
        if self.cancel_reason == "timed_out" or code == EXIT_TIMED_OUT:
            return "timed_out"
        if code == EXIT_OK:
            return "succeeded"
        if self.cancel_requested_at is not None or code == EXIT_CANCELLED:
            return "cancelled"
        return "failed"

    def take_pending(self) -> TrainRequest | None:
        request, self.pending = self.pending, None
        return request

    def drop_pending(self) -> None:
        self.pending = None

    def summary(self, now: float) -> dict[str, Any]:
        running = None
        if self.current is not None:
            running = {**self.current.as_dict(), "pid": self.handle.pid,
                       "running_s": round(now - self.started_at, 3), "cancelling": self.cancel_reason}
        return {"running": running, "pending": self.pending.as_dict() if self.pending else None,
                "recent": list(self.history)}
