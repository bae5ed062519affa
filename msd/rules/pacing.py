"""Pacing of position updates: debounce per position (the exit signals' token bucket per asset is
msd.values.bucket, the one token bucket).

No clock is read here: every method takes `now`, so the same input gives the same output in live
runs, replays and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Hashable, TypeVar

from msd.rules.types import check_aware

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    first_at: datetime
    last_at: datetime
    item: T


class Debouncer(Generic[K, T]):
    """Coalesce a burst of updates per key into its latest one.

    A key's latest item is released once the key has been quiet for `window`, or once `max_delay`
    has passed since the burst's first item, so a position updating non-stop is still evaluated.
    An offered item replaces the key's pending one: the newest is never dropped, only older ones
    in the same burst are. Items are released in the order their bursts started.
    """

    def __init__(self, window: timedelta, max_delay: timedelta):
        if not isinstance(window, timedelta) or window < timedelta(0):
            raise ValueError(f"window: {window!r} is invalid; expected a duration >= 0")
        if not isinstance(max_delay, timedelta) or max_delay < window:
            raise ValueError(f"max_delay: {max_delay!r} is invalid; expected a duration >= window ({window})")
        self.window, self.max_delay = window, max_delay
        self._pending: dict[K, _Pending[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, key: K, item: T, now: datetime) -> None:
        """Make `item` the pending item for `key`; a burst's start time is kept for `max_delay`."""
        check_aware("now", now)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Pending(now, now, item)
        else:
            pending.last_at, pending.item = now, item

    def _release_at(self, pending: _Pending[T]) -> datetime:
        return min(pending.last_at + self.window, pending.first_at + self.max_delay)

    def due(self, now: datetime) -> list[T]:
        """Remove and return the latest item of every key whose quiet window or max delay is over."""
        check_aware("now", now)
        ready = [(p.first_at, k) for k, p in self._pending.items() if self._release_at(p) <= now]
        ready.sort(key=lambda pair: pair[0])  # stable: equal start times keep arrival order
        return [self._pending.pop(k).item for _, k in ready]

    def next_due_at(self) -> datetime | None:
        """When the next item becomes due (to size the caller's wait), or None if nothing is pending."""
        return min((self._release_at(p) for p in self._pending.values()), default=None)

    def flush(self) -> list[T]:
        """Remove and return every pending item now, e.g. at shutdown, so none is lost."""
        items = [p.item for p in sorted(self._pending.values(), key=lambda p: p.first_at)]
        self._pending.clear()
        return items
