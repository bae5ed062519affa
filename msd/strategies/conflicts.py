"""Conflicting signals between strategies (spec edge case "conflicting signals for one asset").

When a strategy wants to buy an asset that another strategy sold within the window (or the
reverse), the policy decides: `suppress_later` (default) drops the later signal with reason
`conflict:<other strategy>`; `allow` treats strategies as independent. A strategy reversing
its own call is not a conflict. State is a value: `check` returns the new window.
"""
from __future__ import annotations

from dataclasses import InitVar, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Mapping

from msd.values.parsing import InvalidValue, check_keys, to_float


class ConflictPolicy(StrEnum):
    """What happens to the later of two opposing signals; the value is the config spelling."""
    SUPPRESS_LATER = "suppress_later"
    ALLOW = "allow"


@dataclass(frozen=True)
class ConflictRules:
    """Configured conflict handling: the policy and how far back a signal counts."""
    policy: ConflictPolicy = ConflictPolicy.SUPPRESS_LATER
    window_s: float = 60.0
    path: InitVar[str] = "conflicts"

    def __post_init__(self, path: str) -> None:
        if not isinstance(self.policy, ConflictPolicy):
            raise InvalidValue(f"{path}.policy", self.policy,
                          f"one of {', '.join(p.value for p in ConflictPolicy)}")
        window = to_float(f"{path}.window_s", self.window_s, allowed="a number >= 0 (seconds)")
        if window < 0:
            raise InvalidValue(f"{path}.window_s", self.window_s, "a number >= 0 (seconds)")

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_s)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "conflicts") -> "ConflictRules":
        """Build from `{policy, window_s}` (both optional)."""
        check_keys(data, path, required=(), optional=("policy", "window_s"))
        policy = data.get("policy", ConflictPolicy.SUPPRESS_LATER.value)
        try:
            policy = ConflictPolicy(policy)
        except ValueError:
            raise InvalidValue(f"{path}.policy", policy,
                          f"one of {', '.join(p.value for p in ConflictPolicy)}") from None
        return cls(policy=policy, window_s=data.get("window_s", 60.0), path=path)


@dataclass(frozen=True)
class RecentSignal:
    """A signal that was emitted and still counts for conflicts."""
    asset: str
    strategy_id: str
    side: str
    at: datetime


@dataclass(frozen=True)
class ConflictWindow:
    """Signals emitted within the window, oldest first."""
    recent: tuple[RecentSignal, ...] = ()


def _opposing_strategy(recent: tuple[RecentSignal, ...], asset: str, strategy_id: str,
                       side: str) -> str | None:
    for signal in reversed(recent):
        if signal.asset == asset and signal.side != side and signal.strategy_id != strategy_id:
            return signal.strategy_id
    return None


def check(state: ConflictWindow, asset: str, strategy_id: str, side: str, now: datetime,
          window: timedelta, policy: ConflictPolicy = ConflictPolicy.SUPPRESS_LATER,
          ) -> tuple[bool, str | None, ConflictWindow]:
    """`(allowed, reason, new_state)` for a signal about to be emitted at `now`.

    An allowed signal is recorded even under `allow`, so that switching the policy by a live
    reload takes effect on signals already in the window. A suppressed one is not recorded:
    it never reached the market, so it cannot conflict with anything.
    """
    kept = tuple(s for s in state.recent if now - s.at <= window)
    if policy is ConflictPolicy.SUPPRESS_LATER:
        other = _opposing_strategy(kept, asset, strategy_id, side)
        if other is not None:
            return False, f"conflict:{other}", ConflictWindow(kept)
    return True, None, ConflictWindow(kept + (RecentSignal(asset, strategy_id, side, now),))
