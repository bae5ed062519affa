"""Parse inbound AMQP messages into the typed forms of `msd.values.messages` (wire: CONTRACTS.md §2–§4).

Pure and stdlib-only, so the rules can be tested without a broker. Every rejection is
`InvalidMessage(reason, detail)`: `reason` is one of `REASONS` (a stable metric label), `detail`
names the field path (e.g. `order.filled_quantity`) and the offending value. What a single value
must satisfy (storable text, sane magnitudes per kind of field, plausible timestamps, bodies
that are UTF-8 JSON objects within `consumer.max_body_bytes`) is `msd.bus.checks`; this module
knows which field is which. Values outside an allowed set (a side that is neither buy nor sell,
an orderbook `type` that is neither snapshot nor delta) count as `out_of_range`. A required value
that is absent or null (or an empty required string) is `missing_field`.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, Mapping

from msd.bus.checks import (
    DEFAULT_LIMITS, MAX_LONG_TEXT_CHARS, MAX_TEXT_CHARS, MINUTES, MONEY, PERCENT, PRICE, SIZE, VOLUME, Limits, Magnitude,
    bounded_text, decode_object, latest_plausible, parse_decimal, plausible_moment, shown,
)
from msd.errors import InvalidMessage
from msd.values.messages import (
    BookTop, Kline, MarketUpdate, OrderEvent, OrderSnapshot, PositionUpdate, TickerUpdate, Trade,
)

_ASSET_TEXT = re.compile(r"[A-Z0-9]{1,30}")
_SIDES = frozenset({"buy", "sell"})
_BOOK_TYPES = MappingProxyType({"snapshot": True, "delta": False})

Headers = Mapping[str, Any] | None


def _checked_price(value: Any, field: str, *, nullable: bool = False) -> Decimal | None:
    return parse_decimal(value, field, nullable=nullable, positive=True, magnitude=PRICE)


def _checked_asset(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ASSET_TEXT.fullmatch(value):
        raise InvalidMessage("bad_asset", f"{field}: {shown(value)} is not an uppercase alphanumeric symbol")
    return value


def _checked_side(value: Any, field: str) -> str:
    side = value.lower() if isinstance(value, str) else None
    if side not in _SIDES:
        raise InvalidMessage("out_of_range", f"{field}: {shown(value)} is neither buy nor sell")
    return side


# --- JSON objects --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Object:
    """A decoded JSON object with its path in the message, so every error names the field."""
    data: Mapping[str, Any]
    path: str = ""

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def required(self, key: str) -> Any:
        if self.data.get(key) is None:
            state = "absent" if key not in self.data else "null"
            raise InvalidMessage("missing_field", f"{self.name(key)}: required but {state}")
        return self.data[key]

    def value(self, key: str, *, nullable: bool) -> Any:
        return self.data.get(key) if nullable else self.required(key)

    def text(self, key: str, *, nullable: bool = False, max_chars: int | None = None) -> str | None:
        """A string; when `nullable`, null and "" both mean "not given", otherwise "" is missing."""
        value = self.value(key, nullable=nullable)
        if value is None or (nullable and value == ""):
            return None
        if not isinstance(value, str):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected a string, got {shown(value)}")
        if not value:
            raise InvalidMessage("missing_field", f"{self.name(key)}: required but empty")
        limit = MAX_TEXT_CHARS if max_chars is None else max_chars
        if len(value) <= limit and value.isascii() and "\x00" not in value:
            return value        # the common case; bounded_text says why anything else is refused
        return bounded_text(value, self.name(key), limit)

    def flag(self, key: str) -> bool:
        value = self.required(key)
        if not isinstance(value, bool):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected true/false, got {shown(value)}")
        return value

    def whole_number(self, key: str, *, nullable: bool = False, limit: int) -> int | None:
        value = self.value(key, nullable=nullable)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected an integer, got {shown(value)}")
        if value is not None and abs(value) >= limit:
            raise InvalidMessage("out_of_range", f"{self.name(key)}: {shown(value)} is beyond |x| < {limit}")
        return value

    def decimal(self, key: str, magnitude: Magnitude, *, nullable: bool = False, positive: bool = False,
                non_negative: bool = False) -> Decimal | None:
        return parse_decimal(self.value(key, nullable=nullable), self.name(key), nullable=nullable,
                             positive=positive, non_negative=non_negative, magnitude=magnitude)

    def price(self, key: str, *, nullable: bool = False) -> Decimal | None:
        return _checked_price(self.value(key, nullable=nullable), self.name(key), nullable=nullable)

    def moment(self, key: str, clock: _Clock, *, nullable: bool = False) -> datetime | None:
        value = self.value(key, nullable=nullable)
        if value is None:
            return None
        return plausible_moment(value, self.name(key), clock.now, clock.limits, clock.latest)

    def asset(self, key: str) -> str:
        return _checked_asset(self.required(key), self.name(key))

    def side(self, key: str) -> str:
        return _checked_side(self.required(key), self.name(key))

    def uuid(self, key: str) -> str:
        return _checked_uuid(self.text(key), self.name(key))

    def child(self, key: str, *, nullable: bool = False) -> _Object | None:
        value = self.value(key, nullable=nullable)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected an object, got {shown(value)}")
        return _Object(value, self.name(key))


@dataclass(frozen=True)
class _Clock:
    """The receiver's time and limits every timestamp of one message is checked against."""
    now: datetime
    limits: Limits
    latest: datetime            # the latest plausible timestamp: now + limits.max_future_s


def _start(body: bytes, now: datetime | None, limits: Limits) -> tuple[_Object, _Clock]:
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return _Object(decode_object(body, limits)), _Clock(now, limits, latest_plausible(now, limits))


def trace_id_header(headers: Headers) -> str | None:
    """The AMQP `trace_id` header as text, the one decoder of it: bytes are read as UTF-8 with bad
    bytes replaced (as order-manager reads them); None when absent, empty or not text."""
    value = (headers or {}).get("trace_id")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and value else None


def _trace_id(headers: Headers, root: _Object) -> str | None:
    """The AMQP header wins over the body, as order-manager does (CONTRACTS.md §1.1)."""
    raw = (headers or {}).get("trace_id")
    if raw is not None and not isinstance(raw, (str, bytes)):
        raise InvalidMessage("wrong_type", f"headers.trace_id: expected a string, got {shown(raw)}")
    header_value = trace_id_header(headers)
    if header_value:
        return bounded_text(header_value, "headers.trace_id")
    return root.text("trace_id", nullable=True) or None


def _checked_uuid(value: str, field: str) -> str:
    # signal_id and position_id are uuid columns on both sides; anything else cannot be joined.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidMessage("wrong_type", f"{field}: {shown(value)} is not a UUID") from None


# --- order-manager.order_events (§2) --------------------------------------------------------------

def parse_order_event(body: bytes, headers: Headers = None, *, now: datetime | None = None,
                      limits: Limits = DEFAULT_LIMITS) -> OrderEvent:
    """Any order-manager event (filled, partially_filled, cancelled, rejected, ...) with its order."""
    root, clock = _start(body, now, limits)
    market = root.child("market_conditions", nullable=True)
    signal = root.child("signal", nullable=True)
    return OrderEvent(
        event_id=root.text("event_id"),
        event_type=root.text("event_type"),
        timestamp=root.moment("timestamp", clock),
        trace_id=_trace_id(headers, root),
        order=_parse_order_snapshot(root.child("order"), clock),
        rejection_reason=root.text("rejection_reason", nullable=True, max_chars=MAX_LONG_TEXT_CHARS),
        market_price=market.price("price", nullable=True) if market else None,
        strategy_id=signal.text("strategy_id", nullable=True) if signal else None,
        raw=root.data,
    )


def _parse_order_snapshot(order: _Object, clock: _Clock) -> OrderSnapshot:
    # Quantity may be 0: order-manager publishes in-memory rejections with quantity "0".
    quantity = order.decimal("quantity", SIZE, non_negative=True)
    filled_quantity = order.decimal("filled_quantity", SIZE, non_negative=True)
    if filled_quantity > quantity:
        raise InvalidMessage("out_of_range", f"{order.name('filled_quantity')}: {filled_quantity} exceeds "
                             f"{order.name('quantity')} {quantity}")
    return OrderSnapshot(
        id=order.text("id"),
        order_id=order.text("order_id"),
        signal_id=order.uuid("signal_id"),
        asset=order.asset("asset"),
        side=order.side("side"),
        order_type=order.text("order_type"),
        quantity=quantity,
        price=order.price("price", nullable=True),
        status=order.text("status"),
        filled_quantity=filled_quantity,
        average_price=order.price("average_price", nullable=True),
        fees=order.decimal("fees", MONEY, nullable=True),
        created_at=order.moment("created_at", clock),
        updated_at=order.moment("updated_at", clock),
        executed_at=order.moment("executed_at", clock, nullable=True),
        is_dry_run=order.flag("is_dry_run"),
    )


# --- position-manager.position_updated (§3) -------------------------------------------------------

def parse_position_update(body: bytes, headers: Headers = None, *, now: datetime | None = None,
                          limits: Limits = DEFAULT_LIMITS) -> PositionUpdate:
    """A position write; negative size is a short, pnl percentage and time held may be null."""
    root, clock = _start(body, now, limits)
    event_type = root.data.get("event_type", "position_updated")
    if event_type != "position_updated":
        raise InvalidMessage("unsupported_event_type", f"event_type: {shown(event_type)} is not position_updated")
    return PositionUpdate(
        position_id=root.uuid("position_id"),
        asset=root.asset("asset"),
        size=root.decimal("size", SIZE),
        unrealized_pnl=root.decimal("unrealized_pnl", MONEY),
        realized_pnl=root.decimal("realized_pnl", MONEY),
        mode=root.text("mode"),
        unrealized_pnl_pct=root.decimal("unrealized_pnl_pct", PERCENT, nullable=True),
        time_held_minutes=root.whole_number("time_held_minutes", nullable=True, limit=MINUTES),
        update_source=root.text("update_source"),
        trace_id=_trace_id(headers, root),
        timestamp=root.moment("timestamp", clock),
    )


# --- ws-gateway.{ticker,orderbook,trade,kline} (§4) -----------------------------------------------

@dataclass(frozen=True)
class _Envelope:
    """What every market payload inherits from the ws-gateway envelope."""
    asset: str
    timestamp: datetime
    trace_id: str | None
    clock: _Clock


_TICKER_PRICES = MappingProxyType({
    "lastPrice": "last_price", "bid1Price": "bid", "ask1Price": "ask", "markPrice": "mark_price"})
_TICKER_AMOUNTS = MappingProxyType({  # key -> (field, magnitude)
    "bid1Size": ("bid_size", SIZE), "ask1Size": ("ask_size", SIZE), "volume24h": ("volume_24h", VOLUME),
    "turnover24h": ("turnover_24h", VOLUME)})


def _ticker(payload: _Object, envelope: _Envelope) -> TickerUpdate:
    # A delta carries only the keys that changed; absent ones stay None so a merge keeps old values.
    prices = {name: payload.price(key, nullable=True) for key, name in _TICKER_PRICES.items()}
    amounts = {name: payload.decimal(key, magnitude, nullable=True, non_negative=True)
               for key, (name, magnitude) in _TICKER_AMOUNTS.items()}
    return TickerUpdate(asset=envelope.asset, timestamp=envelope.timestamp, trace_id=envelope.trace_id,
                        **prices, **amounts)


def _best_level(payload: _Object, key: str, best: Callable) -> tuple[Decimal | None, Decimal | None]:
    levels = payload.data.get(key)
    if not isinstance(levels, list):
        raise InvalidMessage("missing_field" if levels is None else "wrong_type",
                             f"{payload.name(key)}: expected a list of [price, size], got {shown(levels)}")
    live_levels = []
    for index, level in enumerate(levels):
        path = f"{payload.name(key)}[{index}]"
        if not isinstance(level, list) or len(level) < 2:
            raise InvalidMessage("wrong_type", f"{path}: expected [price, size], got {shown(level)}")
        size = parse_decimal(level[1], f"{path}[1]", non_negative=True, magnitude=SIZE)
        if size > 0:  # size "0" deletes the level
            live_levels.append((_checked_price(level[0], f"{path}[0]"), size))
    if not live_levels:
        return None, None
    return best(live_levels, key=lambda price_and_size: price_and_size[0])


def _book_top(payload: _Object, envelope: _Envelope) -> BookTop:
    book_type = payload.text("type")
    if book_type not in _BOOK_TYPES:
        raise InvalidMessage("out_of_range", f"{payload.name('type')}: {shown(book_type)} is neither snapshot nor delta")
    bid, bid_size = _best_level(payload, "b", max)
    ask, ask_size = _best_level(payload, "a", min)
    return BookTop(asset=envelope.asset, timestamp=envelope.timestamp, bid=bid, bid_size=bid_size, ask=ask,
                   ask_size=ask_size, is_snapshot=_BOOK_TYPES[book_type], trace_id=envelope.trace_id)


def _trade(payload: _Object, envelope: _Envelope) -> Trade:
    # The trade's own time `T`: one ws message carries several trades under one envelope time.
    return Trade(asset=envelope.asset, timestamp=payload.moment("T", envelope.clock), price=payload.price("p"),
                 quantity=payload.decimal("v", SIZE, positive=True), side=payload.side("S"),
                 trade_id=payload.text("i"), trace_id=envelope.trace_id)


def _kline(payload: _Object, envelope: _Envelope) -> Kline:
    prices = {name: payload.price(name) for name in ("open", "high", "low", "close")}
    if prices["low"] > min(prices["open"], prices["close"]) or prices["high"] < max(prices["open"], prices["close"]):
        raise InvalidMessage("out_of_range", f"{payload.name('high')}/{payload.name('low')}: bar "
                             f"{prices} does not contain its open and close")
    return Kline(asset=envelope.asset, start=payload.moment("start", envelope.clock), **prices,
                 volume=payload.decimal("volume", VOLUME, non_negative=True),
                 turnover=payload.decimal("turnover", VOLUME, non_negative=True),
                 confirmed=payload.flag("confirm"), timestamp=envelope.timestamp, trace_id=envelope.trace_id)


_MARKET_PAYLOAD_PARSERS: Mapping[str, Callable[[_Object, _Envelope], MarketUpdate]] = MappingProxyType({
    "ticker": _ticker, "orderbook": _book_top, "trade": _trade, "kline": _kline})


def _market_asset(root: _Object, payload: _Object) -> str:
    for key in ("symbol", "s"):
        if key in payload.data:
            return payload.asset(key)
    topic = payload.data.get("topic") or root.data.get("topic")
    if isinstance(topic, str) and "." in topic:
        return _checked_asset(topic.rsplit(".", 1)[1], "topic")
    raise InvalidMessage("missing_field", "payload.symbol: absent and no topic to take the symbol from")


def parse_market_event(body: bytes, headers: Headers = None, *, now: datetime | None = None,
                       limits: Limits = DEFAULT_LIMITS) -> MarketUpdate:
    """A ws-gateway envelope holding a ticker, orderbook (level 1), trade or kline payload."""
    root, clock = _start(body, now, limits)
    event_type = root.text("event_type")
    parse_payload = _MARKET_PAYLOAD_PARSERS.get(event_type)
    if parse_payload is None:
        raise InvalidMessage("unsupported_event_type",
                             f"event_type: {shown(event_type)} (msd reads {', '.join(_MARKET_PAYLOAD_PARSERS)})")
    payload = root.child("payload")
    envelope = _Envelope(asset=_market_asset(root, payload), timestamp=root.moment("timestamp", clock),
                         trace_id=_trace_id(headers, root), clock=clock)
    return parse_payload(payload, envelope)


PARSERS: Mapping[str, Callable[..., OrderEvent | PositionUpdate | MarketUpdate]] = MappingProxyType({
    "order_event": parse_order_event,
    "position_update": parse_position_update,
    "market": parse_market_event,
})
