"""The signaller's turn as one step, shared by the daemon's signaller role and the backtest.

`step(state, event, now, inputs) -> Turned(state, effects)`: the strategies' `TurnState` (their
runtimes, the shared limits' state, each schedule-triggered (strategy, asset)'s last attempt)
goes in with one `Turn` (the assets whose market changed since the last turn) and `now`, the
caller's clock (the loop's time in the daemon, the candle's close in a backtest); the new state
comes out with one effect per evaluation: `NotDue`, `Dropped`, `Emitted` or `Failed`.

What the turn decides: which strategies are evaluated on which assets (not paused; a
market-triggered one on the assets that changed, a schedule-triggered one at most every
min(frequency, 1 s) per asset), then per evaluation the due check (msd.strategies.step), the
attempt stamp, the warm-up plan or the model plan (msd.strategies.engine.evaluate: exposure
cap, conflicts, rate limits) and the signal (msd.strategies.emit). A signal's amount counts
toward its asset's exposure for the strategies evaluated after it in the same turn: the
caller's exposure is read once per turn and sees none of the turn's own signals.

What the caller supplies (`TurnInputs`) and keeps: the market snapshots, the exposure (asked
only for a (strategy, asset) actually evaluated on an available snapshot: the daemon reads it
from PostgreSQL, the backtest from its account), each strategy's random generator (None while
its stream is not restored: not evaluated), the model planner of a strategy in model mode, and
what the effects say to do (send the signals, count the drops, save the streams that drew).
Nothing here reads a clock or a database. An evaluation that raises is reported as `Failed`
and the turn goes on with the next one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable, Collection, Mapping, Sequence, Union

from msd.market.state import MarketSnapshot, Unavailable
from msd.ml.features import FEATURE_VERSION
from msd.strategies.in_flight import InFlightSignal
from msd.strategies import engine, step as decision
from msd.strategies.emit import model_signal, warmup_signal
from msd.strategies.params import StrategyParams
from msd.strategies.warmup import ExposureUnknown
from msd.values.messages import TradingSignal

SCHEDULE_ATTEMPT_EVERY_S = 1.0   # a schedule-triggered strategy is tried at most this often per asset


# ----- state and event -------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnState:
    runtimes: Mapping[str, engine.StrategyRuntime]
    shared: engine.SharedState
    last_attempt: Mapping[tuple[str, str], datetime] = field(default_factory=dict)   # (strategy, asset)


@dataclass(frozen=True)
class Turn:
    """A turn at `now`: `dirty` changed since the last one (market triggers fire on them).
    `tradable` (None: every asset) restricts the turn to those assets: the backtest's candles
    that traded; a gap or a zero-volume candle is a no-trade period."""
    dirty: Collection[str]
    tradable: Collection[str] | None = None


Exposure = Union[Decimal, ExposureUnknown]


@dataclass(frozen=True)
class TurnInputs:
    strategies: Sequence[StrategyParams]                           # in the config's order
    limits: engine.SharedLimits
    paused: Collection[str]                                        # no new entries for these
    snapshot: Callable[[str], "MarketSnapshot | Unavailable"]      # asset -> its snapshot at `now`
    exposure: Callable[[str, str, Decimal], Exposure]              # (strategy, asset, price) -> signed USDT
    rng: Callable[[str], "random.Random | None"]                   # strategy -> its stream (None: not ready)
    planner: Callable[[StrategyParams], "engine.Planner | None"]   # the model plan (None: warm-up)


# ----- effects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NotDue:
    """Evaluated, not due by its frequency on this asset: nothing read, nothing stamped."""
    params: StrategyParams
    asset: str


@dataclass(frozen=True)
class Dropped:
    params: StrategyParams
    asset: str
    reason: str               # engine.Drop's: the metric label
    drew: bool                # its random stream drew (to be saved)


@dataclass(frozen=True)
class Emitted:
    params: StrategyParams
    signal: TradingSignal
    mode: str                 # "warmup" or "model"
    drew: bool


@dataclass(frozen=True)
class Failed:
    params: StrategyParams
    asset: str
    error: Exception


Effect = Union[NotDue, Dropped, Emitted, Failed]


@dataclass(frozen=True)
class Turned:
    state: TurnState
    effects: tuple[Effect, ...]


# ----- configuration ---------------------------------------------------------------------------
def start(strategies: Sequence[StrategyParams], limits: engine.SharedLimits, now: datetime) -> TurnState:
    """Fresh strategies (warm-up starting `now`) and shared limits."""
    return TurnState({p.id: engine.start_runtime(p, now) for p in strategies}, engine.start_shared(limits))


def configure(state: TurnState, strategies: Sequence[StrategyParams], limits: engine.SharedLimits,
              now: datetime) -> TurnState:
    """A live reload: removed strategies go, kept ones keep their state (buckets clipped to the
    new bursts), new ones start `now`."""
    runtimes = {p.id: (engine.retune_runtime(p, state.runtimes[p.id]) if p.id in state.runtimes
                       else engine.start_runtime(p, now)) for p in strategies}
    return TurnState(runtimes, engine.retune_shared(limits, state.shared), state.last_attempt)


# ----- the turn --------------------------------------------------------------------------------
def attempt_due(params: StrategyParams, last: datetime | None, now: datetime) -> bool:
    """At most every min(frequency, 1 s) of `now`; a clock stepped back never stalls it."""
    if last is None:
        return True
    elapsed = (now - last).total_seconds()
    return elapsed < 0 or elapsed >= min(params.warmup.frequency_s, SCHEDULE_ATTEMPT_EVERY_S)


def step(state: TurnState, event: Turn, now: datetime, inputs: TurnInputs) -> Turned:
    turn = _Turn(state, now, inputs)
    for params in inputs.strategies:
        if params.id in inputs.paused:
            continue        # no new entries; the exit role keeps protecting positions
        for asset in params.assets:
            if event.tradable is not None and asset not in event.tradable:
                continue
            if params.trigger == "market" and asset not in event.dirty:
                continue
            if params.trigger == "schedule" and not attempt_due(params, turn.last_attempt.get((params.id, asset)),
                                                                 now):
                continue
            rng = inputs.rng(params.id)
            if rng is None:
                continue    # its random stream is not restored yet: drawing would repeat it
            try:
                turn.effects.append(turn.evaluate(params, asset, rng))
            except Exception as exc:     # one strategy's failure must not stop the others
                turn.effects.append(Failed(params, asset, exc))
    return Turned(TurnState(turn.runtimes, turn.shared, turn.last_attempt), tuple(turn.effects))


class _Turn:
    """The working state of one turn (mutable within `step` only)."""

    def __init__(self, state: TurnState, now: datetime, inputs: TurnInputs):
        self.now, self.inputs = now, inputs
        self.runtimes = dict(state.runtimes)
        self.shared = state.shared
        self.last_attempt = dict(state.last_attempt)
        self.added: dict[str, Decimal] = {}   # per asset: the signed amounts of this turn's signals
        self.effects: list[Effect] = []

    def evaluate(self, params: StrategyParams, asset: str, rng: random.Random) -> Effect:
        now, runtime = self.now, self.runtimes[params.id]
        if not decision.due(params, runtime, asset, now):
            return NotDue(params, asset)
        self.last_attempt[(params.id, asset)] = now
        snapshot = self.inputs.snapshot(asset)
        exposure = Decimal(0) if isinstance(snapshot, Unavailable) else self.exposure(params, asset, snapshot.price)
        planner = self.inputs.planner(params)
        before = rng.getstate()
        result = engine.evaluate(params, runtime, self.inputs.limits, self.shared, snapshot, exposure, rng, now,
                                 planner=planner)
        drew = rng.getstate() != before
        self.runtimes[params.id], self.shared = result.runtime, result.shared
        if isinstance(result.outcome, engine.Drop):
            return Dropped(params, asset, result.outcome.reason, drew)
        in_model = planner is not None
        signal = (model_signal(result.outcome, params, now, FEATURE_VERSION) if in_model
                  else warmup_signal(result.outcome, params, now))
        signed = InFlightSignal.of(signal).signed_amount
        self.added[signal.asset] = self.added.get(signal.asset, Decimal(0)) + signed
        return Emitted(params, signal, "model" if in_model else "warmup", drew)

    def exposure(self, params: StrategyParams, asset: str, price: Decimal) -> Exposure:
        """The caller's exposure (asked at each evaluation: the daemon's read also marks the
        strategy degraded or not) plus the signals this turn already emitted on the asset."""
        read = self.inputs.exposure(params.id, asset, price)
        if isinstance(read, ExposureUnknown) or asset not in self.added:
            return read
        return read + self.added[asset]
