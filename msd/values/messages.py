"""Typed forms of the messages msd reads and writes (wire formats: CONTRACTS.md).

Codecs in `msd.bus.codecs` turn raw bodies into these; everything downstream uses only these.
All timestamps are aware UTC datetimes; all money and sizes are Decimal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping


@dataclass(frozen=True)
class OrderSnapshot:
    """The nested `order` object of an order-manager event (CONTRACTS.md §2.2)."""
    id: str
    order_id: str
    signal_id: str
    asset: str
    side: str                      # normalised to "buy" / "sell"
    order_type: str
    quantity: Decimal
    price: Decimal | None
    status: str
    filled_quantity: Decimal       # cumulative
    average_price: Decimal | None
    fees: Decimal | None           # cumulative; may be negative (maker rebate)
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None
    is_dry_run: bool


@dataclass(frozen=True)
class OrderEvent:
    """order-manager.order_events message (CONTRACTS.md §2)."""
    event_id: str
    event_type: str                # filled | partially_filled | cancelled | rejected | ...
    timestamp: datetime
    trace_id: str | None
    order: OrderSnapshot
    rejection_reason: str | None = None
    market_price: Decimal | None = None      # market_conditions.price
    strategy_id: str | None = None           # signal.strategy_id (rejections from the signal path only)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class PositionUpdate:
    """position-manager.position_updated message (CONTRACTS.md §3)."""
    position_id: str
    asset: str
    size: Decimal                  # signed: negative = short
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    mode: str
    unrealized_pnl_pct: Decimal | None
    time_held_minutes: int | None
    update_source: str
    trace_id: str | None
    timestamp: datetime


@dataclass(frozen=True)
class TickerUpdate:
    """ws-gateway.ticker payload; fields absent from a delta are None (merge keeps old values)."""
    asset: str
    timestamp: datetime
    last_price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None
    volume_24h: Decimal | None = None
    turnover_24h: Decimal | None = None
    mark_price: Decimal | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class BookTop:
    """ws-gateway.orderbook level 1 (best bid/ask; None when that side is empty or deleted)."""
    asset: str
    timestamp: datetime
    bid: Decimal | None
    bid_size: Decimal | None
    ask: Decimal | None
    ask_size: Decimal | None
    is_snapshot: bool
    trace_id: str | None = None


@dataclass(frozen=True)
class Trade:
    """ws-gateway.trade payload (one trade)."""
    asset: str
    timestamp: datetime
    price: Decimal
    quantity: Decimal
    side: str                      # "buy" / "sell" (taker side)
    trade_id: str
    trace_id: str | None = None


@dataclass(frozen=True)
class Kline:
    """ws-gateway.kline payload (1-minute bar; `confirm` = bar closed)."""
    asset: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    turnover: Decimal
    confirmed: bool
    timestamp: datetime
    trace_id: str | None = None


MarketUpdate = TickerUpdate | BookTop | Trade | Kline


@dataclass(frozen=True)
class MarketDataSnapshot:
    """Market state at decision time; it is both order-manager's conversion input and our feature source."""
    price: Decimal                      # quote per base; order quantity = amount / price
    spread: Decimal | None              # percent of mid: (ask - bid) / mid * 100
    volume_24h: Decimal | None          # base units (ticker volume24h)
    volatility: float | None            # std of 1-minute log returns over the last hour, a fraction
    orderbook_depth: Mapping[str, Any] | None = None
    technical_indicators: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TradingSignal:
    """One decision to send to order-manager; `amount` is always USDT, for buys, sells and exits alike."""
    signal_id: str                      # uuid4
    signal_type: str                    # "buy" / "sell"
    asset: str                          # uppercase alphanumeric, e.g. BTCUSDT
    amount: Decimal                     # quote currency (USDT)
    confidence: float                   # 0..1
    timestamp: datetime                 # aware
    strategy_id: str
    model_version: str | None           # None while warming up
    is_warmup: bool
    market_data_snapshot: MarketDataSnapshot
    metadata: Mapping[str, Any]
    trace_id: str
    # Send `amount` and the snapshot `price` as decimal strings (CONTRACTS §1.2 accepts them), so
    # order-manager's amount / price is exactly the quantity msd meant (exits, CONTRACTS §3.6);
    # a float such as 305.52 / 3055.2 would come out a hair below 0.1 and round down a lot.
    exact_decimals: bool = False
