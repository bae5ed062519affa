"""The one token bucket: signal rates per strategy and across strategies (FR-024), exit signals
per asset (DESIGN §7).

Pure: the bucket's parameters (`TokenBucket`) and its state (`BucketState`) are separate values,
`take` returns the new state instead of mutating, and the clock is passed in, so live runs,
replays and tests give the same answers. A refused take is dropped by the caller (counted,
never queued), so there is no waiting API here. Arithmetic is exact: Decimal tokens refilled per
whole microsecond, so a rate such as 0.5/s gives its token at exactly 2 s, never a hair later.
"""
from __future__ import annotations

from dataclasses import InitVar, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping

from msd.values.parsing import InvalidValue, check_aware, check_keys, finite_decimal

_MICROSECOND = timedelta(microseconds=1)
_PER_SECOND = Decimal(1_000_000)
# A rate given as a float such as 1/60 is a hair below its true value; without this slack 60 s
# at that rate would come out a hair below one whole token and refuse a take exactly on time.
_WHOLE_TOKEN_SLACK = Decimal("1e-9")


@dataclass(frozen=True)
class TokenBucket:
    """Rate limit parameters: `burst` takes at once, then `rate_per_s` on average."""
    rate_per_s: Decimal
    burst: int
    path: InitVar[str] = "rate"

    def __post_init__(self, path: str) -> None:
        rate = self.rate_per_s
        number = None if isinstance(rate, str) else finite_decimal(rate)
        if number is None or number <= 0:
            raise InvalidValue(f"{path}.rate_per_s", rate, "a finite number > 0 (tokens per second)")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise InvalidValue(f"{path}.burst", self.burst, "an integer >= 1")
        object.__setattr__(self, "rate_per_s", number)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "rate") -> "TokenBucket":
        """Build from a config mapping `{rate_per_s, burst}`; errors name `path`."""
        check_keys(data, path, required=("rate_per_s", "burst"), optional=())
        return cls(rate_per_s=data["rate_per_s"], burst=data["burst"], path=path)


@dataclass(frozen=True)
class BucketState:
    """Tokens left as of `updated_at`; `updated_at=None` means never used, i.e. full."""
    tokens: Decimal
    updated_at: datetime | None

    def __post_init__(self) -> None:
        tokens = finite_decimal(self.tokens)
        if tokens is None or tokens < 0:
            raise InvalidValue("tokens", self.tokens, "a finite number >= 0")
        object.__setattr__(self, "tokens", tokens)
        if self.updated_at is not None:
            check_aware("updated_at", self.updated_at)


def full_bucket(params: TokenBucket) -> BucketState:
    """A bucket that has not been used yet: the first `burst` takes succeed at once."""
    return BucketState(tokens=Decimal(params.burst), updated_at=None)


def available_tokens(params: TokenBucket, state: BucketState, now: datetime) -> Decimal:
    """Tokens the bucket holds at `now` after refilling (capped at `burst`)."""
    check_aware("now", now)
    if state.updated_at is None:
        return Decimal(params.burst)
    # A clock that steps backwards must not drain the bucket, so negative time refills nothing.
    elapsed = max(timedelta(0), now - state.updated_at) // _MICROSECOND
    return min(Decimal(params.burst), state.tokens + Decimal(elapsed) / _PER_SECOND * params.rate_per_s)


def would_allow(params: TokenBucket, state: BucketState, now: datetime) -> bool:
    """Whether `take` would allow one at `now`, without taking a token."""
    return available_tokens(params, state, now) + _WHOLE_TOKEN_SLACK >= 1


def take(params: TokenBucket, state: BucketState, now: datetime) -> tuple[bool, BucketState]:
    """Try to take one token at `now`: `(allowed, new_state)`.

    A refused take still advances `updated_at` (with the refilled amount), so refusals never
    delay the next allowed one; the reference time never moves backwards, or the step back
    would be refilled twice."""
    tokens = available_tokens(params, state, now)
    updated_at = now if state.updated_at is None else max(now, state.updated_at)
    if tokens + _WHOLE_TOKEN_SLACK >= 1:
        return True, BucketState(tokens=max(Decimal(0), tokens - 1), updated_at=updated_at)
    return False, BucketState(tokens=tokens, updated_at=updated_at)


def retune(params_new: TokenBucket, state: BucketState) -> BucketState:
    """State to keep across a live reload: tokens already earned stay, clipped to the new burst.

    The reload therefore neither hands out a fresh burst nor takes away what was earned.
    """
    if state.updated_at is None:
        return full_bucket(params_new)
    return BucketState(tokens=min(state.tokens, Decimal(params_new.burst)), updated_at=state.updated_at)
