"""Orders inside a backtest: from a decision to a working order, and from a candle to its fill.

The quantity, order type and reduceOnly are order-manager's rules (msd.exchange.orders); the
fill price and time follow msd.backtest.fills. Order-manager's risk check is modelled as one
limit, stated in the report: an order that grows the account's gross exposure beyond its
equity is rejected (no leverage).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from msd.backtest.candles import Candle
from msd.backtest.fills import (BUY, CostModel, limit_price, limit_traded_through, market_fill_price)
from msd.values.parsing import finite_decimal
from msd.exchange.orders import (LIMIT, MARKET, InstrumentRules, OrderTypeThresholds, order_quantity, order_side,
                                 reduce_only_cap, reduces, select_order_type)


@dataclass
class WorkingOrder:
    signal_id: str
    strategy: str | None          # None: an exit (the account's position, split over strategies)
    asset: str
    side: str                     # Buy | SELL
    order_type: str               # Market | Limit
    quantity: Decimal
    price: Decimal | None         # limit price
    decided_at: datetime
    expires_at: datetime | None   # a Limit's time to live
    reference: Decimal            # decision-time price (the signal snapshot's)
    reduce_only: bool
    info: dict[str, Any]          # what trades.csv shows about the decision


@dataclass(frozen=True)
class Filled:
    quantity: Decimal
    price: Decimal
    fee: Decimal
    mid: Decimal                  # the price without the spread, for the spread cost


def plan(signal, *, strategy: str | None, position_size: Decimal, instrument: InstrumentRules,
         thresholds: OrderTypeThresholds, costs: CostModel, info: dict[str, Any]) -> WorkingOrder:
    """order-manager's order for a TradingSignal (CONTRACTS §1.2, §3.6)."""
    snapshot = signal.market_data_snapshot
    side = order_side(signal.signal_type)
    quantity = order_quantity(Decimal(signal.amount), snapshot.price, instrument.step, instrument.min_order_value)
    urgent = (signal.metadata or {}).get("urgency") is True
    confidence = finite_decimal(signal.confidence)
    order_type = select_order_type(confidence, snapshot.spread, urgent, thresholds)
    price = limit_price(side, snapshot.price, costs.half_spread) if order_type == LIMIT else None
    expires = signal.timestamp + costs.limit_ttl if order_type == LIMIT else None
    return WorkingOrder(signal.signal_id, strategy, signal.asset, side, order_type, quantity, price,
                        signal.timestamp, expires, snapshot.price, reduces(side, position_size), info)


def risk_rejection(order: WorkingOrder, position_size: Decimal, gross_notional: Decimal, equity: Decimal) -> str | None:
    """The one risk limit modelled: no leverage on the account's gross exposure."""
    after = position_size + (order.quantity if order.side == BUY else -order.quantity)
    if abs(after) <= abs(position_size):
        return None
    added = (abs(after) - abs(position_size)) * order.reference
    if gross_notional + added > equity:
        return "Risk limit exceeded: Insufficient balance"
    return None


def try_fill(order: WorkingOrder, candle: Candle, held: Decimal, costs: CostModel) -> Filled | str | None:
    """The order's fill on `candle`, "cancelled" when it ends unfilled, None to keep working."""
    quantity = order.quantity
    if order.reduce_only:
        capped = reduce_only_cap(order.side, quantity, held)
        if capped is None:
            return "cancelled"          # nothing left to reduce: the exchange cancels it
        quantity = capped
    if order.order_type == MARKET:
        price = market_fill_price(order.side, candle, costs.half_spread)
        return Filled(quantity, price, quantity * price * costs.taker_fee, candle.open)
    if order.expires_at is not None and candle.open_time >= order.expires_at:
        return "cancelled"
    if limit_traded_through(order.side, order.price, candle):
        # The market opened beyond the price (a gap): nobody traded at the limit, the first trade
        # is the open, and the order takes it (a price improvement a real book would also give).
        price = min(order.price, candle.open) if order.side == BUY else max(order.price, candle.open)
        # A maker is paid the half spread: the mid when the market came to the order lay that much
        # beyond its price (the candle profile's book).
        mid = price * (1 + costs.half_spread) if order.side == BUY else price * (1 - costs.half_spread)
        return Filled(quantity, price, quantity * price * costs.maker_fee, mid)
    return None
