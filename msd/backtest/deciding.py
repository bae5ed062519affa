"""The signaller's decision at one candle close, for one strategy and one asset: the live code.

msd.strategies.step (the due check and the model planner the daemon's signaller calls, the
active version's call) and `msd.strategies.engine.evaluate` (frequency, heuristics or the model
plan, exposure cap, conflicts, strategy and global rate limits), the signal built by
msd.strategies.emit. Only the signal and trace ids differ: derived from the seed and a counter
instead of uuid4, so a run is reproducible.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal


from msd.backtest.learner import StrategyLearning
from msd.market.state import MarketSnapshot
from msd.ml.features import FEATURE_VERSION
from msd.strategies import engine, step
from msd.strategies.emit import model_signal, warmup_signal
from msd.strategies.params import StrategyParams

NAMESPACE = uuid.UUID("6f0c1b8e-2d4c-4e57-9a43-6b1f0a3c5d21")


@dataclass
class StrategySlot:
    """What the signaller keeps per strategy (StrategyRuntime, its random stream, its learning)."""
    params: StrategyParams
    runtime: engine.StrategyRuntime
    rng: random.Random
    learning: StrategyLearning
    emitted: int = 0
    dropped: dict = field(default_factory=dict)     # reason -> count, as the signaller's status shows


def decide(slot: StrategySlot, limits: engine.SharedLimits, shared: engine.SharedState,
           snapshot: MarketSnapshot, exposure: Decimal, now: datetime, threshold: float, run_seed: int):
    """(signal or None, new shared state): one evaluation, state advanced only on emit."""
    version = slot.learning.active
    in_model = version is not None
    if not step.due(slot.params, slot.runtime, snapshot.asset, now):
        return None, shared
    planner = (step.model_planner(slot.params, lambda snap: step.call_model(version.model, version.number,
                                                                            snap.to_wire(), now), threshold, now)
               if in_model else None)
    result = engine.evaluate(slot.params, slot.runtime, limits, shared, snapshot, exposure, slot.rng, now,
                             planner=planner)
    slot.runtime = result.runtime
    if isinstance(result.outcome, engine.Drop):
        slot.dropped[result.outcome.reason] = slot.dropped.get(result.outcome.reason, 0) + 1
        return None, result.shared
    signal = (model_signal(result.outcome, slot.params, now, FEATURE_VERSION) if in_model
              else warmup_signal(result.outcome, slot.params, now))
    slot.emitted += 1
    ident = str(uuid.uuid5(NAMESPACE, f"{run_seed}/{slot.params.id}/{slot.emitted}"))
    return replace(signal, signal_id=ident, trace_id=ident), result.shared
