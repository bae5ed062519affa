"""Pacing of position updates and exit signals: debounce per position, token bucket per asset.

No clock is read here: every method takes `now`, so the same input gives the same output in live
runs, replays and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Generic, Hashable, TypeVar

from msd.rules.types import InvalidPositionData, check_aware, to_decimal

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_MICROSECOND = timedelta(microseconds=1)


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


@dataclass(frozen=True)
class AssetRateLimit:
    """Token bucket for one asset: up to `burst` signals at once, refilled at `rate_per_second`.

    Keep one per asset, e.g. `allowed, limits[asset] = take(limits.get(asset, template), now)`.
    `tokens=None` means a full bucket (nothing taken yet).
    """

    rate_per_second: Decimal
    burst: int
    tokens: Decimal | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        try:
            rate = to_decimal("rate_per_second", self.rate_per_second, positive=True)
        except InvalidPositionData as exc:
            raise ValueError(str(exc)) from None
        object.__setattr__(self, "rate_per_second", rate)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst: {self.burst!r} is invalid; expected an integer >= 1")
        if self.updated_at is not None:
            check_aware("updated_at", self.updated_at)


def _refilled(state: AssetRateLimit, now: datetime) -> tuple[Decimal, AssetRateLimit]:
    """Tokens available at `now` and the bucket state carrying them."""
    check_aware("now", now)
    if state.tokens is None or state.updated_at is None:
        tokens = Decimal(state.burst)
        return tokens, replace(state, tokens=tokens, updated_at=now)
    # A clock stepping backwards adds nothing; whole microseconds keep the refill exact in Decimal.
    elapsed = max(timedelta(0), now - state.updated_at) // _MICROSECOND
    refill = Decimal(elapsed) / Decimal(1_000_000) * state.rate_per_second
    tokens = min(Decimal(state.burst), state.tokens + refill)
    return tokens, replace(state, tokens=tokens, updated_at=max(now, state.updated_at))


def would_allow(state: AssetRateLimit, now: datetime) -> bool:
    """Whether `take` would allow a signal at `now`, without taking a token."""
    return _refilled(state, now)[0] >= 1


def take(state: AssetRateLimit, now: datetime) -> tuple[bool, AssetRateLimit]:
    """Try to take one token at `now`; return whether it was allowed and the new bucket state."""
    tokens, refilled = _refilled(state, now)
    if tokens < 1:
        return False, refilled
    return True, replace(refilled, tokens=tokens - 1)
