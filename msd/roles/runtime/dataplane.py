"""Reading the bounded data-plane queues the supervisor wires between roles."""
from __future__ import annotations

import queue
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

# Beyond this many waiting items per queue the writer blocks (and stops acknowledging) instead of
# buffering more: the broker then holds the rest, still nothing is dropped.
BACKLOG_LIMIT = 100_000


@dataclass(frozen=True)
class Timed:
    """A data-plane item with when its delivery was received and when it was handed to the queue.

    Both are time.monotonic(), one clock for every process of the host, so the reader can tell
    the consumer's share and the queue's share of its latency (msd_signal_path_seconds).
    """
    item: Any
    received: float
    forwarded: float


def drain(source: Any, handle: Callable[[Any], None], *, timeout: float, max_items: int = 5000) -> int:
    """Wait up to `timeout` for one item, then take whatever else is ready (at most `max_items`)."""
    try:
        handle(source.get(timeout=timeout))
    except queue.Empty:
        return 0
    count = 1
    while count < max_items:
        try:
            handle(source.get_nowait())
        except queue.Empty:
            break
        count += 1
    return count


class Backlog:
    """Items a full data-plane queue cannot take yet but that must not be dropped, in order.

    Market ticks are superseded by the next one and may be dropped when the reader is behind;
    a position update (a close, a flip, a size change) or a closed 1-minute bar (the high and
    low a dropped tick would have given the trailing peak) must reach the exit role. `put` keeps
    such an item behind the ones already waiting; `flush` moves waiting items on as room appears.
    """

    def __init__(self, queues: Mapping[str, Any], limit: int = BACKLOG_LIMIT):
        self.queues, self.limit = queues, limit
        self.waiting: dict[str, deque] = {}

    def put(self, name: str, item: Any, *, stopping: Callable[[], bool] = lambda: False) -> None:
        waiting = self.waiting.setdefault(name, deque())
        waiting.append(item)
        self.flush(name)
        while len(waiting) > self.limit and not stopping():
            # Too much waiting: block for room rather than grow without bound.
            try:
                self.queues[name].put(waiting[0], timeout=0.5)
            except queue.Full:
                continue
            waiting.popleft()

    def flush(self, name: str | None = None) -> None:
        for key in ([name] if name is not None else list(self.waiting)):
            waiting = self.waiting.get(key)
            while waiting:
                try:
                    self.queues[key].put_nowait(waiting[0])
                except queue.Full:
                    break
                waiting.popleft()

    def sizes(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.waiting.items()}
