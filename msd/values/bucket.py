"""Token buckets for signal rate limits (FR-024): one per strategy plus one global.

Pure: the bucket's parameters and its state are separate values, `take` returns the new state
instead of mutating, and the clock is passed in. A throttled signal is dropped by the caller
(counted, never queued), so there is no waiting API here.
"""
from __future__ import annotations

import math
from dataclasses import InitVar, dataclass
from datetime import datetime
from typing import Any, Mapping

from msd.strategies.validation import check_keys, invalid

# Refill arithmetic is float; without a little slack, 60 s at 1/60 tokens per second could end
# up a hair below one whole token and throttle a signal that is exactly on time.
_WHOLE_TOKEN_SLACK = 1e-9


@dataclass(frozen=True)
class TokenBucket:
    """Rate limit parameters: `burst` signals at once, then `rate_per_s` on average."""
    rate_per_s: float
    burst: int
    path: InitVar[str] = "rate"

    def __post_init__(self, path: str) -> None:
        rate = self.rate_per_s
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                or not math.isfinite(rate) or rate <= 0:
            raise invalid(f"{path}.rate_per_s", rate, "a finite number > 0 (tokens per second)")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise invalid(f"{path}.burst", self.burst, "an integer >= 1")
        object.__setattr__(self, "rate_per_s", float(rate))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "rate") -> "TokenBucket":
        """Build from a config mapping `{rate_per_s, burst}`; errors name `path`."""
        check_keys(data, path, required=("rate_per_s", "burst"), optional=())
        return cls(rate_per_s=data["rate_per_s"], burst=data["burst"], path=path)


@dataclass(frozen=True)
class BucketState:
    """Tokens left as of `updated_at`; `updated_at=None` means never used, i.e. full."""
    tokens: float
    updated_at: datetime | None


def full_bucket(params: TokenBucket) -> BucketState:
    """A bucket that has not been used yet: the first `burst` takes succeed at once."""
    return BucketState(tokens=float(params.burst), updated_at=None)


def available_tokens(params: TokenBucket, state: BucketState, now: datetime) -> float:
    """Tokens the bucket holds at `now` after refilling (capped at `burst`)."""
    if state.updated_at is None:
        return float(params.burst)
    # A clock that steps backwards must not drain the bucket, so negative time refills nothing.
    elapsed = max(0.0, (now - state.updated_at).total_seconds())
    return min(float(params.burst), state.tokens + elapsed * params.rate_per_s)


def take(params: TokenBucket, state: BucketState, now: datetime) -> tuple[bool, BucketState]:
    """Try to take one token at `now`: `(allowed, new_state)`.

    A refused take still advances `updated_at` (with the refilled amount), so refusals never
    delay the next allowed signal.
    """
    tokens = available_tokens(params, state, now)
    # Never move the reference time backwards, or the step back would be refilled twice.
    updated_at = now if state.updated_at is None else max(now, state.updated_at)
    if tokens + _WHOLE_TOKEN_SLACK >= 1.0:
        return True, BucketState(tokens=max(0.0, tokens - 1.0), updated_at=updated_at)
    return False, BucketState(tokens=tokens, updated_at=updated_at)


def retune(params_new: TokenBucket, state: BucketState) -> BucketState:
    """State to keep across a live reload: tokens already earned stay, clipped to the new burst.

    The reload therefore neither hands out a fresh burst nor takes away what was earned.
    """
    if state.updated_at is None:
        return full_bucket(params_new)
    return BucketState(tokens=min(state.tokens, float(params_new.burst)), updated_at=state.updated_at)
