"""order-manager stand-in, the decisions: risk limits, quantity, order type, fills and events.

Pure (the seeded RNG and `now` are passed in); `msd.sim.exchange` does the I/O around it in the
order order-manager does (CONTRACTS.md §1.3, §2): read the signal, check for a duplicate, check
risk (rejection → saved `REJECTED-{signal_id}` row + `rejected` event), else save a `pending`
order and let the market fill it. Events are built from the order row as read back from
the DB, so decimals carry the column's 8 places ("0E-8" for zero) exactly as the real one sends.

Quantity, order type and reduceOnly are order-manager's rules in `msd.exchange.orders` (§1.2,
§3.6), shared with the backtest; this module adds the risk limits, fills and events.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Mapping

from msd.exchange.orders import (DEFAULT_INSTRUMENT, InstrumentRules, OrderTypeThresholds, order_quantity, reduces,
                                 select_order_type as order_type_for)
from msd.exchange.positions import EIGHT_PLACES
from msd.sim.market import AssetSpec, Quote
from msd.sim.outbound import Outbound, json_body, naive_iso, new_uuid
from msd.sim.signals import Signal
from msd.values.parsing import finite_decimal

SIGNALS_QUEUE = "model-service.trading_signals"
ORDER_EVENTS_QUEUE = "order-manager.order_events"
OPEN_STATUSES = ("pending", "partially_filled")
# A duplicate signal is reprocessed only when its earlier order ended in one of these.
RETRYABLE_STATUSES = ("rejected", "dry_run")
BPS = Decimal("0.0001")


@dataclass(frozen=True)
class OrderManagerParams:
    """Account limits, order-type thresholds (order-manager's defaults) and fill model."""
    balance_usdt: Decimal = Decimal("10000")          # total |position| notional allowed
    max_order_usdt: Decimal = Decimal("2000")         # one order's notional
    max_position_usdt: Decimal = Decimal("5000")      # one asset's |position| notional
    market_confidence_threshold: Decimal = Decimal("0.9")
    market_spread_threshold: Decimal = Decimal("0.1")  # percent, like the snapshot's spread
    min_order_value_usdt: Decimal = Decimal("5")
    taker_fee_rate: Decimal = Decimal("0.00055")
    maker_fee_rate: Decimal = Decimal("0.0002")
    max_slippage_bps: Decimal = Decimal("2")          # random extra on market fills
    impact_bps: Decimal = Decimal("3")                # per level-1 size beyond the first
    limit_offset_bps: Decimal = Decimal("0")          # limit price = best bid/ask -/+ this
    limit_fill_probability: float = 0.35              # per tick while at the top of book
    # A resting Limit's time to live on the exchange; None (the default): it rests until filled or
    # cancelled by a newer signal for its asset, because CONTRACTS gives order-manager's orders no
    # expiry (§2.3: its own cancels are cancel_order on a new signal). A number is a test's choice.
    limit_ttl_s: float | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Decimal) and not (value.is_finite() and value >= 0):
                raise ValueError(f"{item.name}: {value!r} is invalid; expected a Decimal >= 0")
        if not 0 < self.limit_fill_probability <= 1:
            raise ValueError(f"limit_fill_probability: {self.limit_fill_probability!r} is invalid; "
                             "expected 0 < p <= 1")
        if self.limit_ttl_s is not None and not self.limit_ttl_s > 0:
            raise ValueError(f"limit_ttl_s: {self.limit_ttl_s!r} is invalid; expected > 0 or None (no expiry)")


@dataclass(frozen=True)
class AccountExposure:
    """What the account holds when a signal arrives (signed base size of the asset, all notional)."""
    position_size: Decimal
    total_notional: Decimal


@dataclass(frozen=True)
class OrderPlan:
    side: str                   # 'Buy' / 'SELL'
    order_type: str             # 'Market' / 'Limit'
    quantity: Decimal
    price: Decimal | None       # limit price; None for Market
    rejection_reason: str | None
    reduce_only: bool = False   # position-manager showed a position this order reduces


@dataclass(frozen=True)
class OrderFill:
    quantity: Decimal
    price: Decimal
    fee: Decimal


def select_order_type(signal: Signal, params: OrderManagerParams) -> str:
    """order_type_selector (§1.2), with this paper order-manager's thresholds."""
    thresholds = OrderTypeThresholds(params.market_confidence_threshold, params.market_spread_threshold)
    return order_type_for(signal.confidence, signal.spread, signal.urgent, thresholds)


def limit_price(side: str, quote: Quote, spec: AssetSpec, params: OrderManagerParams) -> Decimal:
    """Join the live best bid (buy) or ask (sell), `limit_offset_bps` further away."""
    offset = quote.mid * params.limit_offset_bps * BPS
    if side == "Buy":
        return ((quote.bid - offset) / spec.price_tick).to_integral_value(ROUND_FLOOR) * spec.price_tick
    return ((quote.ask + offset) / spec.price_tick).to_integral_value(ROUND_CEILING) * spec.price_tick


def risk_rejection(side: str, quantity: Decimal, price: Decimal, exposure: AccountExposure,
                   params: OrderManagerParams) -> str | None:
    """The RiskLimitError message order-manager would raise, or None when the order may go."""
    notional = quantity * price
    if notional > params.max_order_usdt:
        return "Risk limit exceeded: Order size exceeds limit"
    before = exposure.position_size
    after = before + (quantity if side == "Buy" else -quantity)
    if abs(after) <= abs(before):
        return None     # reducing a position is always allowed
    if abs(after) * price > params.max_position_usdt:
        return "Risk limit exceeded: Position size would exceed limit"
    if exposure.total_notional + (abs(after) - abs(before)) * price > params.balance_usdt:
        return "Risk limit exceeded: Insufficient balance"
    return None


def plan_order(signal: Signal, spec: AssetSpec, quote: Quote, exposure: AccountExposure,
               params: OrderManagerParams, instrument: InstrumentRules = DEFAULT_INSTRUMENT) -> OrderPlan:
    """Quantity, type, limit price, reduceOnly and the risk verdict for an accepted signal.

    `exposure.position_size` is position-manager's row: when it lags, reduceOnly is not set.
    """
    quantity = order_quantity(signal.amount, signal.price, instrument.step, instrument.min_order_value)
    order_type = select_order_type(signal, params)
    price = limit_price(signal.side, quote, spec, params) if order_type == "Limit" else None
    reason = risk_rejection(signal.side, quantity, signal.price, exposure, params)
    return OrderPlan(signal.side, order_type, quantity, price, reason, reduces(signal.side, exposure.position_size))


# -- fills ---------------------------------------------------------------------------------------

def market_fill(side: str, quantity: Decimal, quote: Quote, spec: AssetSpec,
                params: OrderManagerParams, rng: random.Random) -> OrderFill:
    """A taker fill at the touch, worse by random slippage and by size beyond the level-1 size."""
    touch, depth = (quote.ask, quote.ask_size) if side == "Buy" else (quote.bid, quote.bid_size)
    beyond = max(Decimal(0), quantity / depth - 1)
    slip = finite_decimal(rng.uniform(0, float(params.max_slippage_bps))) + params.impact_bps * beyond
    if side == "Buy":
        price = (touch * (1 + slip * BPS) / spec.price_tick).to_integral_value(ROUND_CEILING)
    else:
        price = (touch * (1 - slip * BPS) / spec.price_tick).to_integral_value(ROUND_FLOOR)
    price = max(spec.price_tick, price * spec.price_tick)
    return OrderFill(quantity, price, _fee(quantity, price, params.taker_fee_rate))


def limit_fill(side: str, price: Decimal, remaining: Decimal, quote: Quote, spec: AssetSpec,
               params: OrderManagerParams, rng: random.Random) -> OrderFill | None:
    """A resting maker order: filled whole once the market trades through it, in random parts
    while it is at (or inside) the top of book, not at all while the market is away from it."""
    crossed = quote.ask <= price if side == "Buy" else quote.bid >= price
    at_top = quote.bid <= price if side == "Buy" else quote.ask >= price
    if crossed:
        quantity = remaining
    elif at_top and rng.random() < params.limit_fill_probability:
        share = finite_decimal(rng.uniform(0.2, 0.8))
        quantity = min(remaining, max(spec.lot, (remaining * share / spec.lot).to_integral_value(ROUND_FLOOR) * spec.lot))
    else:
        return None
    return OrderFill(quantity, price, _fee(quantity, price, params.maker_fee_rate))


def _fee(quantity: Decimal, price: Decimal, rate: Decimal) -> Decimal:
    return (quantity * price * rate).quantize(EIGHT_PLACES)


def accumulate(filled: Decimal, average: Decimal | None, fees: Decimal | None,
               fill: OrderFill) -> tuple[Decimal, Decimal, Decimal]:
    """Cumulative filled quantity, volume-weighted average price and fees after `fill`."""
    total = filled + fill.quantity
    value = filled * (average or 0) + fill.quantity * fill.price
    return total, (value / total).quantize(EIGHT_PLACES), ((fees or 0) + fill.fee).quantize(EIGHT_PLACES)


def status_after(filled: Decimal, quantity: Decimal) -> str:
    return "filled" if filled >= quantity else "partially_filled"


def event_for_transition(before: str, after: str) -> str | None:
    """order-manager publishes only when the status changes: the first partial fill, the fill."""
    return after if after != before else None


# -- events --------------------------------------------------------------------------------------

def _text(value: Decimal | None) -> str | None:
    # `str(x) if x else None`: zero and null both become null, as in order-manager.
    return str(value) if value else None


def order_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """The `order` object of an event from an `orders` row (trace_id and rejection_reason left out)."""
    return {
        "id": str(row["id"]), "order_id": row["order_id"], "signal_id": str(row["signal_id"]),
        "asset": row["asset"], "side": row["side"], "order_type": row["order_type"],
        "quantity": str(row["quantity"]), "price": _text(row["price"]), "status": row["status"],
        "filled_quantity": str(row["filled_quantity"]), "average_price": _text(row["average_price"]),
        "fees": _text(row["fees"]), "created_at": naive_iso(row["created_at"]),
        "updated_at": naive_iso(row["updated_at"]),
        "executed_at": naive_iso(row["executed_at"]) if row["executed_at"] else None,
        "is_dry_run": bool(row["is_dry_run"]),
    }


def execution_details(row: Mapping[str, Any]) -> dict[str, Any]:
    quantity, filled = row["quantity"], row["filled_quantity"]
    latency = (row["executed_at"] - row["created_at"]).total_seconds() if row["executed_at"] else None
    return {"execution_latency_seconds": latency,
            "fill_percentage": float(filled / quantity * 100) if quantity else 0.0,
            "remaining_quantity": str(quantity - filled)}


def order_event(row: Mapping[str, Any], event_type: str, *, trace_id: str, now: datetime,
                rng: random.Random, extra: Mapping[str, Any] | None = None) -> Outbound:
    """`_enrich_event`'s envelope around the row; `extra` adds rejection_reason, market_conditions,
    signal or modification in that order. Transient, JSON content type, trace_id header."""
    event = {"event_id": new_uuid(rng), "event_type": event_type, "timestamp": naive_iso(now),
             "trace_id": trace_id, "order": order_object(row), "execution_details": execution_details(row)}
    event.update(extra or {})
    return Outbound(queue=ORDER_EVENTS_QUEUE, body=json_body(event), persistent=False,
                    headers={"trace_id": trace_id}, content_type="application/json", payload=event)


def fill_conditions(row: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """An exchange-driven event's market_conditions: the average price and the exchange time."""
    return {"price": float(row["average_price"]) if row["average_price"] else None,
            "timestamp": naive_iso(at)}


def exchange_cancel_status(filled_quantity: Decimal) -> str | None:
    """What order-manager records when the exchange cancels an order (CONTRACTS §2.3, exchange-
    driven row): Bybit's `Cancelled` maps to `cancelled`; after a partial fill Bybit says
    `PartiallyFilledCanceled`, whose lowercased status violates the DB CHECK: nothing is recorded
    and no event goes out (None)."""
    return None if filled_quantity > 0 else "cancelled"


def modification(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """`cancel_order`'s before/after summary."""
    def summary(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": row["status"], "filled_quantity": str(row["filled_quantity"]),
                "average_price": _text(row["average_price"])}
    return {"modification": {"before": summary(before), "after": summary(after)}}
