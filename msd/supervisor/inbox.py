"""The supervisor's single inbox.

Threads (control socket, config watcher) and signal handlers only `post` here; the arbiter loop
is the only reader. `SimpleQueue.put` is reentrant, so posting from a signal handler is safe,
and a byte on the wake-up pipe lets the loop's `wait()` return at once.
"""
from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str                                   # dispatched to Arbiter.handle_<kind>
    data: dict[str, Any] = field(default_factory=dict)
    reply: "queue.SimpleQueue | None" = None    # set for control requests awaiting an answer


class Inbox:
    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def wakeup_fd(self) -> int:
        return self._wake_r

    def post(self, event: Event) -> None:
        self._events.put(event)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is already due to wake up

    def drain(self) -> list[Event]:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
