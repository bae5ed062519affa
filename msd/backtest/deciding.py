"""The signaller's decision at one candle close, for one strategy and one asset: the live code.

`msd.strategies.engine.evaluate` (frequency, heuristics or the model plan, exposure cap,
conflicts, strategy and global rate limits) with the signaller's model planner (features from
the snapshot by msd.strategies.model_plan, the active version's calibrated probabilities,
plan_model_signal) and the signal built by msd.strategies.emit. Only the signal and trace ids
differ: derived from the seed and a counter instead of uuid4, so a run is reproducible.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from msd.backtest.learner import StrategyLearning, model_probabilities
from msd.market.state import MarketSnapshot
from msd.ml.features import BUY, FEATURE_VERSION, NEITHER, SELL, MissingFeature
from msd.strategies import engine
from msd.strategies.emit import model_signal, warmup_signal
from msd.strategies.warmup import frequency_allows
from msd.strategies.model_plan import ModelCall, model_features, plan_model_signal
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
    dropped: dict = None

    def __post_init__(self) -> None:
        self.dropped = {}


def planner_for(slot: StrategySlot, threshold: float, now: datetime):
    """Signaller.model_planner with ModelBook.call on the in-memory active version."""
    version = slot.learning.active

    def plan(snapshot: MarketSnapshot, exposure, last_signal_at):
        features = model_features(snapshot.to_wire(), now)
        if isinstance(features, MissingFeature):
            call: Any = features
        else:
            proba = model_probabilities(version.model, features)
            call = ModelCall(version.number, float(proba[BUY]), float(proba[SELL]), float(proba[NEITHER]))
        return plan_model_signal(slot.params.warmup, call, threshold, exposure, now, last_signal_at)
    return plan


def decide(slot: StrategySlot, limits: engine.SharedLimits, shared: engine.SharedState,
           snapshot: MarketSnapshot, exposure: Decimal, now: datetime, threshold: float, run_seed: int):
    """(signal or None, new shared state): one evaluation, state advanced only on emit."""
    in_model = slot.learning.active is not None
    due = (frequency_allows(slot.params.warmup, slot.runtime.last_signal_at.get(snapshot.asset), now)
           if in_model else engine.is_due(slot.params, slot.runtime, snapshot.asset, now))
    if not due:
        return None, shared
    planner = planner_for(slot, threshold, now) if in_model else None
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
