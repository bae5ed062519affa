"""From an engine decision to the trading signal msd publishes (pure)."""
from __future__ import annotations

import dataclasses
import uuid
from enum import Enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from msd.values.messages import MarketDataSnapshot, TradingSignal
from msd.market.state import MarketSnapshot
from msd.strategies.engine import Emit
from msd.strategies.params import StrategyParams


def signal_snapshot(snap: MarketSnapshot) -> MarketDataSnapshot:
    """The decision-time market state as the signal carries it (FR-005; units in README)."""
    wire = snap.to_wire()
    return MarketDataSnapshot(
        price=snap.price, spread=snap.spread_pct, volume_24h=snap.volume_24h, volatility=snap.volatility,
        orderbook_depth=wire["orderbook_depth"], technical_indicators=wire["technical_indicators"])


def warmup_parameters(params: StrategyParams) -> dict[str, Any]:
    """The warm-up parameters in force, JSON-safe, for mode-transition rows and signal metadata."""
    return _json_safe(dataclasses.asdict(params.warmup))


def warmup_signal(emit: Emit, params: StrategyParams, now: datetime) -> TradingSignal:
    plan = emit.planned
    return TradingSignal(
        signal_id=str(uuid.uuid4()), signal_type=plan.side, asset=emit.asset, amount=plan.amount_usdt,
        confidence=plan.confidence, timestamp=now, strategy_id=params.id, model_version=None,
        is_warmup=True, market_data_snapshot=signal_snapshot(emit.snapshot),
        metadata={"reasoning": plan.reasoning, "heuristic": str(params.warmup.heuristic),
                  "randomness_level": params.warmup.randomness, "trigger": params.trigger},
        trace_id=str(uuid.uuid4()))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def model_signal(emit: Emit, params: StrategyParams, now: datetime, call, feature_version: str) -> TradingSignal:
    """A model-mode signal: the confidence is the model's calibrated probability that the call
    pays after costs; its version is named."""
    plan, version = emit.planned, f"v{call.version}"
    return TradingSignal(
        signal_id=str(uuid.uuid4()), signal_type=plan.side, asset=emit.asset, amount=plan.amount_usdt,
        confidence=plan.confidence, timestamp=now, strategy_id=params.id, model_version=version,
        is_warmup=False, market_data_snapshot=signal_snapshot(emit.snapshot),
        metadata={"reasoning": plan.reasoning, "model_version": version, "feature_registry_version": feature_version,
                  "prediction_result": {"prediction": 1 if plan.side == "buy" else 0,
                                        "buy_probability": call.buy_probability,
                                        "sell_probability": call.sell_probability,
                                        "neither_probability": call.neither_probability},
                  "inference_timestamp": now.isoformat()},
        trace_id=str(uuid.uuid4()))
