"""One warm-up evaluation of one strategy on one asset, with rate limits and conflicts (SC-010).

Everything a strategy owns (its token bucket, when it last signalled each asset, when its
warm-up started) lives in its own `StrategyRuntime`; what all strategies share (the global
bucket and the conflict window) lives in `SharedState`. `evaluate` is pure: it returns the
outcome and the new states, and a state is only advanced when the signal is really emitted,
so a signal dropped by one check never uses up another check's allowance.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable, Mapping

from msd.market.state import MarketSnapshot, Unavailable
from msd.strategies import conflicts
from msd.strategies.conflicts import ConflictRules, ConflictWindow
from msd.strategies.params import StrategyParams
from msd.values.bucket import BucketState, TokenBucket, full_bucket, retune, take
from msd.strategies.warmup import ExposureUnknown, Planned, Skip, frequency_allows, plan_signal

THROTTLED_STRATEGY = "throttled_strategy"
THROTTLED_GLOBAL = "throttled_global"


@dataclass(frozen=True)
class StrategyRuntime:
    """State owned by one strategy; `last_signal_at` is per asset."""
    bucket: BucketState
    started_at: datetime
    last_signal_at: Mapping[str, datetime] = field(default_factory=dict)


def start_runtime(params: StrategyParams, now: datetime) -> StrategyRuntime:
    """A fresh strategy: full bucket, warm-up starting `now`, no signal yet."""
    return StrategyRuntime(bucket=full_bucket(params.rate), started_at=now)


def retune_runtime(params_new: StrategyParams, runtime: StrategyRuntime) -> StrategyRuntime:
    """Keep a strategy's state across a live reload (bucket clipped to the new burst)."""
    return replace(runtime, bucket=retune(params_new.rate, runtime.bucket))


@dataclass(frozen=True)
class SharedLimits:
    """Limits that apply across all strategies."""
    global_rate: TokenBucket
    conflicts: ConflictRules = field(default_factory=ConflictRules)


@dataclass(frozen=True)
class SharedState:
    """State shared by all strategies: the global bucket and recent emitted signals."""
    global_bucket: BucketState
    conflict_window: ConflictWindow = field(default_factory=ConflictWindow)


def start_shared(limits: SharedLimits) -> SharedState:
    return SharedState(global_bucket=full_bucket(limits.global_rate))


def retune_shared(limits_new: SharedLimits, shared: SharedState) -> SharedState:
    """Keep the shared state across a live reload (global bucket clipped to the new burst)."""
    return replace(shared, global_bucket=retune(limits_new.global_rate,
                                                          shared.global_bucket))


@dataclass(frozen=True)
class Emit:
    """Publish this signal; `snapshot.to_wire()` is its market_data_snapshot."""
    strategy_id: str
    asset: str
    planned: Planned
    snapshot: MarketSnapshot


@dataclass(frozen=True)
class Drop:
    """No signal; `reason` is the metric label (market, warm-up, throttle or conflict reason)."""
    strategy_id: str
    asset: str
    reason: str


@dataclass(frozen=True)
class Evaluation:
    outcome: Emit | Drop
    runtime: StrategyRuntime
    shared: SharedState


def is_due(params: StrategyParams, runtime: StrategyRuntime, asset: str, now: datetime) -> bool:
    """Cheap pre-check before reading exposure from the database: could the asset signal now?"""
    return frequency_allows(params.warmup, runtime.last_signal_at.get(asset), now)


Planner = Callable[[MarketSnapshot, "Decimal | ExposureUnknown", "datetime | None"], "Planned | Skip"]


def evaluate(params: StrategyParams, runtime: StrategyRuntime, limits: SharedLimits,
             shared: SharedState, market: MarketSnapshot | Unavailable,
             exposure_usdt: Decimal | ExposureUnknown, rng: random.Random,
             now: datetime, planner: Planner | None = None) -> Evaluation:
    """Plan, then conflict check, then strategy bucket, then global bucket; emit if all pass.

    `planner(snapshot, exposure, last_signal_at)` replaces the warm-up plan (model mode), so
    both modes share the conflict and rate-limit checks.
    """
    if isinstance(market, Unavailable):
        return Evaluation(Drop(params.id, market.asset, market.reason), runtime, shared)
    asset = market.asset
    last = runtime.last_signal_at.get(asset)
    plan = (planner(market, exposure_usdt, last) if planner is not None else
            plan_signal(params.warmup, market, exposure_usdt, rng, now, last))
    if isinstance(plan, Skip):
        return Evaluation(Drop(params.id, asset, plan.reason), runtime, shared)
    rules = limits.conflicts
    allowed, reason, window = conflicts.check(shared.conflict_window, asset, params.id,
                                              plan.side, now, rules.window, rules.policy)
    if not allowed:
        return Evaluation(Drop(params.id, asset, reason), runtime, shared)
    allowed, bucket = take(params.rate, runtime.bucket, now)
    if not allowed:
        return Evaluation(Drop(params.id, asset, THROTTLED_STRATEGY), runtime, shared)
    allowed, global_bucket = take(limits.global_rate, shared.global_bucket, now)
    if not allowed:
        return Evaluation(Drop(params.id, asset, THROTTLED_GLOBAL), runtime, shared)
    new_runtime = replace(runtime, bucket=bucket,
                          last_signal_at={**runtime.last_signal_at, asset: now})
    new_shared = SharedState(global_bucket=global_bucket, conflict_window=window)
    return Evaluation(Emit(params.id, asset, plan, market), new_runtime, new_shared)
