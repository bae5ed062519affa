"""Bookkeeping for the one trainer process: the latest training request wins, and loses no scope.

A request while a run is in progress cancels the running one (SIGTERM, sent by the arbiter)
and waits; when that run has ended, the waiting request starts on the newest data. The waiting
request carries the union of its own scope, any request it replaced and the cancelled run's, so
a narrow request (one strategy's data threshold) never drops a broad one (the daily run of all
strategies). A repeated ask (a condition that still holds) is dropped when the running or
waiting request already covers it, so it never cancels a run that would serve it. The arbiter
does the signalling; this class only keeps the facts.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from msd.supervisor import children as ch
from msd.supervisor.spawn import EXIT_CANCELLED, EXIT_OK, EXIT_TIMED_OUT


@dataclass(frozen=True)
class TrainRequest:
    id: int
    reason: str
    strategies: tuple[str, ...] | None     # None = every trainable strategy
    source: str
    requested_at: float          # wall clock, seconds since the epoch

    @property
    def strategy(self) -> str | None:
        """The one strategy of a single-strategy request (the trainer job's older field)."""
        return self.strategies[0] if self.strategies and len(self.strategies) == 1 else None

    def covers(self, strategies: tuple[str, ...] | None) -> bool:
        if self.strategies is None:
            return True
        return strategies is not None and set(strategies) <= set(self.strategies)

    def merged(self, other: "TrainRequest") -> "TrainRequest":
        """This request with `other`'s scope added (and its reason noted)."""
        scope = (None if self.strategies is None or other.strategies is None
                 else tuple(sorted(set(self.strategies) | set(other.strategies))))
        if scope == self.strategies:
            return self
        return TrainRequest(self.id, f"{self.reason}; merged with request {other.id} ({other.reason})",
                            scope, self.source, self.requested_at)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategies"] = list(self.strategies) if self.strategies is not None else None
        data["strategy"] = self.strategy
        return data


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
        request = TrainRequest(self._next_id, reason, (strategy,) if strategy else None, source, now_wall)
        self._next_id += 1
        return request

    def covered_by(self, strategy: str | None) -> TrainRequest | None:
        """The running (not being cancelled) or waiting request that covers `strategy`."""
        scope = (strategy,) if strategy else None
        if self.current is not None and self.cancel_requested_at is None and self.current.covers(scope):
            return self.current
        if self.pending is not None and self.pending.covers(scope):
            return self.pending
        return None

    def started(self, request: TrainRequest, handle: Any, now: float) -> None:
        self.handle, self.current, self.started_at = handle, request, now
        self.cancel_requested_at, self.cancel_reason, self.killed, self.result = None, None, False, None
        self.record = ch.started(self.record, handle.pid, now)

    def queue_next(self, request: TrainRequest) -> TrainRequest | None:
        """Make `request` the next to run, with the scope of the waiting request it replaces
        (returned, if any) merged in."""
        superseded = self.pending
        self.pending = request if superseded is None else request.merged(superseded)
        if superseded is not None:
            self.history.appendleft({"request_id": superseded.id, "reason": superseded.reason,
                                     "outcome": "superseded", "exit": None, "duration_s": 0.0})
        return superseded

    def cancel(self, reason: str, now: float) -> None:
        """Cancel the running request; a superseded run's scope moves to the waiting one."""
        self.cancel_requested_at, self.cancel_reason = now, reason
        if reason == "superseded" and self.current is not None and self.pending is not None:
            self.pending = self.pending.merged(self.current)

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
