"""The signaller's turn at one candle close: the live code.

The turn is msd.strategies.signal_turn's step, the one the daemon's signaller calls (which
strategies are evaluated on which assets, the due check, the warm-up or model plan, exposure
cap, conflicts, strategy and global rate limits, the signal built by msd.strategies.emit, a
turn's signals counted toward the exposure of the strategies after them). What the backtest
supplies: the snapshots of its MarketState, the exposure of its account, each strategy's random
stream and the model plan of the strategy's active version (`turn_inputs`). Only the signal
and trace ids differ: derived from the seed and a counter instead of uuid4 (`identified`), so
a run is reproducible.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable, Mapping

from msd.backtest.learner import StrategyLearning
from msd.market.state import MarketSnapshot, Unavailable
from msd.strategies import engine, signal_turn, step
from msd.strategies.params import StrategyParams
from msd.values.messages import TradingSignal

NAMESPACE = uuid.UUID("6f0c1b8e-2d4c-4e57-9a43-6b1f0a3c5d21")


@dataclass
class StrategySlot:
    """What the backtest keeps per strategy beside the turn's state: its random stream, its learning."""
    params: StrategyParams
    rng: random.Random
    learning: StrategyLearning
    emitted: int = 0
    dropped: dict = field(default_factory=dict)     # reason -> count, as the signaller's status shows


def turn_inputs(slots: Mapping[str, StrategySlot], limits: engine.SharedLimits,
                snapshot: Callable[[str], MarketSnapshot | Unavailable],
                exposure: Callable[[str, str, Decimal], Decimal], now: datetime,
                threshold: float) -> signal_turn.TurnInputs:
    """The turn's inputs at `now` for these strategies (in their order), a paused one skipped."""
    return signal_turn.TurnInputs(
        [slot.params for slot in slots.values()], limits, {sid for sid, slot in slots.items() if slot.learning.paused},
        snapshot, exposure, lambda sid: slots[sid].rng, lambda params: _planner(slots[params.id], threshold, now))


def _planner(slot: StrategySlot, threshold: float, now: datetime) -> engine.Planner | None:
    """The active version's plan (msd.strategies.step, as the daemon's ModelBook serves it); None in warm-up."""
    version = slot.learning.active
    if version is None:
        return None
    return step.model_planner(slot.params, lambda snap: step.call_model(version.model, version.number, snap.to_wire(),
                                                                        now), threshold, now)


def count(slot: StrategySlot, effect: signal_turn.Effect) -> None:
    """A drop counted by reason (the report's `dropped`); a failed evaluation stops the run."""
    if isinstance(effect, signal_turn.Failed):
        raise effect.error
    if isinstance(effect, signal_turn.Dropped):
        slot.dropped[effect.reason] = slot.dropped.get(effect.reason, 0) + 1


def identified(slot: StrategySlot, signal: TradingSignal, run_seed: int) -> TradingSignal:
    """The signal under its run's ids: the seed and the strategy's signal count."""
    slot.emitted += 1
    ident = str(uuid.uuid5(NAMESPACE, f"{run_seed}/{slot.params.id}/{slot.emitted}"))
    return replace(signal, signal_id=ident, trace_id=ident)
