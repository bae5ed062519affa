"""From a decision to the trading signal msd publishes (pure): warm-up and model signals from the
strategy engine, exit signals from the exit rules."""
from __future__ import annotations

import dataclasses
import uuid
from enum import Enum
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from msd.market.quotes import PriceQuote
from msd.market.state import MarketSnapshot
from msd.rules import ExitDecision
from msd.strategies.engine import Emit
from msd.strategies.params import StrategyParams
from msd.values.messages import MarketDataSnapshot, TradingSignal

# Exits are rule outcomes, not predictions: the rule either fired or it did not.
EXIT_CONFIDENCE = 1.0


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


def model_signal(emit: Emit, params: StrategyParams, now: datetime, feature_version: str) -> TradingSignal:
    """A model-mode signal: the confidence is the model's calibrated probability that the call
    pays after costs (the call the plan was made on); its version is named."""
    plan = emit.planned
    call, version = plan.call, f"v{plan.call.version}"
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


def exit_signal(decision: ExitDecision, quote: PriceQuote, market: MarketSnapshot | None,
                strategy_id: str, trace_id: str | None, signal_id: str, context: Mapping[str, Any]) -> TradingSignal:
    """The trading signal for one exit decision.

    The snapshot's price is the trigger price, the one the amount was computed with: order-manager
    turns the amount back into a quantity with it (amount / price = exactly `decision.quantity`).
    Both go out as decimal strings. `urgency` asks for a market order: a resting limit exit may
    never fill.
    """
    snapshot = MarketDataSnapshot(price=decision.trigger_price, spread=None, volume_24h=None, volatility=None)
    if market is not None:
        snapshot = dataclasses.replace(signal_snapshot(market), price=decision.trigger_price)
    metadata = {
        **decision.metadata(),
        "reasoning": f"exit: {decision.reason.value}",
        "urgency": True,
        "price_source": quote.source,
        "price_at": quote.at.isoformat(),
        **context,
    }
    return TradingSignal(
        signal_id=signal_id, signal_type=decision.side_to_send, asset=decision.key.asset,
        amount=decision.amount, confidence=EXIT_CONFIDENCE, timestamp=decision.decided_at,
        strategy_id=strategy_id, model_version=None, is_warmup=False, market_data_snapshot=snapshot,
        metadata=metadata, trace_id=trace_id or str(uuid.uuid4()), exact_decimals=True)
