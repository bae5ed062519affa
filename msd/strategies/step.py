"""The signaller's decision for one strategy on one asset at `now`, shared by the daemon's
signaller role and the backtest (pure: the clock, the exposure, the random stream and the
model's call are passed in; nothing here reads the wall clock or the database).

`due` is the cheap check before the exposure is read: in model mode the warm-up frequency
alone, in warm-up the engine's own check. `model_planner` turns the active version's call into
the engine's planner (plan_model_signal: frequency, missing features, exposure cap, confidence
threshold, amount scaled by confidence). `call_model` is the call itself: the features of the
snapshot by the training code, the calibrated probabilities of the three outcomes.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

import numpy as np

from msd.market.state import MarketSnapshot
from msd.ml.features import BUY, NEITHER, SELL, MissingFeature
from msd.strategies import engine
from msd.strategies.model_plan import ModelCall, model_features, plan_model_signal
from msd.strategies.params import StrategyParams

ModelCaller = Callable[[MarketSnapshot], "ModelCall | MissingFeature"]


def due(params: StrategyParams, runtime: engine.StrategyRuntime, asset: str, now: datetime) -> bool:
    """Warm-up and model mode pace alike: the strategy's frequency per asset (engine.is_due)."""
    return engine.is_due(params, runtime, asset, now)


def call_model(model: Any, version: int, wire_snapshot: Mapping, now: datetime) -> ModelCall | MissingFeature:
    """The version's call on a snapshot (FR-003: the features built by the training code)."""
    features = model_features(wire_snapshot, now)
    if isinstance(features, MissingFeature):
        return features
    proba = model.predict_proba(np.asarray(features, dtype=np.float64).reshape(1, -1))[0]
    return ModelCall(version, float(proba[BUY]), float(proba[SELL]), float(proba[NEITHER]))


def model_planner(params: StrategyParams, call: ModelCaller, threshold: float, now: datetime) -> engine.Planner:
    def plan(snapshot: MarketSnapshot, exposure, last_signal_at):
        return plan_model_signal(params.warmup, call(snapshot), threshold, exposure, now, last_signal_at)
    return plan
