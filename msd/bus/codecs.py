"""Parse inbound AMQP messages into the typed forms of `msd.bus.messages` (wire: CONTRACTS.md §2–§4).

Pure and stdlib-only, so the rules can be tested without a broker. Every rejection is
`InvalidMessage(reason, detail)`: `reason` is one of `REASONS` (a stable metric label), `detail`
names the field path (e.g. `order.filled_quantity`) and the offending value. Values outside an
allowed set (a side that is neither buy nor sell, an orderbook `type` that is neither snapshot nor
delta) count as `out_of_range`, as do absurd values: non-positive or huge prices, negative sizes,
timestamps before 2009 or more than a day ahead of `now`. A required value that is absent or null
(or an empty required string) is `missing_field`.
"""
from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Callable, Mapping

from msd.bus.messages import (
    BookTop, Kline, MarketUpdate, OrderEvent, OrderSnapshot, PositionUpdate, TickerUpdate, Trade,
)
from msd.errors import InvalidMessage

REASONS = frozenset({
    "bad_json", "not_object", "missing_field", "wrong_type", "bad_decimal", "bad_timestamp",
    "out_of_range", "unsupported_event_type", "bad_asset",
})

# Nothing msd trades existed before 2009; an earlier time is a unit mistake (e.g. seconds read as ms).
EARLIEST_TIMESTAMP = datetime(2009, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_SKEW = timedelta(days=1)
# The shared tables use DECIMAL(20,8), which cannot hold 1e12; no real price comes near it.
MAX_PRICE = Decimal("1e12")
# 1e11 seconds is the year 5138 while 1e11 milliseconds is 1973, so the two ranges cannot be confused.
EPOCH_MILLISECONDS_ABOVE = 1e11

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_TEXT = re.compile(r"\d+(\.\d+)?")
_ASSET_TEXT = re.compile(r"[A-Z0-9]+")
_SIDES = frozenset({"buy", "sell"})
_BOOK_TYPES = MappingProxyType({"snapshot": True, "delta": False})

Headers = Mapping[str, Any] | None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- scalar values -------------------------------------------------------------------------------

def parse_timestamp(value: Any, field: str) -> datetime:
    """An aware UTC datetime from ISO-8601 (naive = UTC, `Z`, any offset) or epoch s/ms (number or digits)."""
    if value is None:
        raise InvalidMessage("missing_field", f"{field}: null where a timestamp is required")
    if isinstance(value, bool):
        raise InvalidMessage("bad_timestamp", f"{field}: {value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        return _from_epoch(value, field)
    if isinstance(value, str) and _EPOCH_TEXT.fullmatch(value):
        return _from_epoch(float(value) if "." in value else int(value), field)
    if isinstance(value, str):
        return _from_iso(value, field)
    raise InvalidMessage("bad_timestamp", f"{field}: {_shown(value)} is not a timestamp")


def _from_epoch(number: int | float, field: str) -> datetime:
    if not math.isfinite(number):
        raise InvalidMessage("bad_timestamp", f"{field}: {number!r} is not a timestamp")
    try:
        if number > EPOCH_MILLISECONDS_ABOVE:
            return _UNIX_EPOCH + timedelta(milliseconds=number)
        return _UNIX_EPOCH + timedelta(seconds=number)
    except OverflowError:
        raise InvalidMessage("bad_timestamp", f"{field}: {number!r} is beyond the calendar") from None


def _from_iso(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage("bad_timestamp", f"{field}: {_shown(text)} is not ISO-8601") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_decimal(value: Any, field: str, *, nullable: bool = False, positive: bool = False,
                  non_negative: bool = False) -> Decimal | None:
    """A finite Decimal from a string or JSON number (floats via `str`); None only when `nullable`."""
    if value is None:
        if nullable:
            return None
        raise InvalidMessage("missing_field", f"{field}: null where a number is required")
    if not isinstance(value, (str, int, float)):  # a bool passes here and fails as Decimal("True")
        raise InvalidMessage("bad_decimal", f"{field}: {_shown(value)} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidMessage("bad_decimal", f"{field}: {_shown(value)} is not a number") from None
    if not number.is_finite():
        raise InvalidMessage("bad_decimal", f"{field}: {_shown(value)} is not a finite number")
    if positive and number <= 0:
        raise InvalidMessage("out_of_range", f"{field}: {value!r} must be > 0")
    if non_negative and number < 0:
        raise InvalidMessage("out_of_range", f"{field}: {value!r} must be >= 0")
    return number


def _checked_price(value: Any, field: str, *, nullable: bool = False) -> Decimal | None:
    price = parse_decimal(value, field, nullable=nullable, positive=True)
    if price is not None and price > MAX_PRICE:
        raise InvalidMessage("out_of_range", f"{field}: {value!r} is above {MAX_PRICE}")
    return price


def _checked_asset(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ASSET_TEXT.fullmatch(value):
        raise InvalidMessage("bad_asset", f"{field}: {_shown(value)} is not an uppercase alphanumeric symbol")
    return value


def _checked_side(value: Any, field: str) -> str:
    side = value.lower() if isinstance(value, str) else None
    if side not in _SIDES:
        raise InvalidMessage("out_of_range", f"{field}: {_shown(value)} is neither buy nor sell")
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

    def text(self, key: str, *, nullable: bool = False) -> str | None:
        """A string; when `nullable`, null and "" both mean "not given", otherwise "" is missing."""
        value = self.value(key, nullable=nullable)
        if value is None or (nullable and value == ""):
            return None
        if not isinstance(value, str):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected a string, got {_shown(value)}")
        if not value:
            raise InvalidMessage("missing_field", f"{self.name(key)}: required but empty")
        return value

    def flag(self, key: str) -> bool:
        value = self.required(key)
        if not isinstance(value, bool):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected true/false, got {_shown(value)}")
        return value

    def whole_number(self, key: str, *, nullable: bool = False) -> int | None:
        value = self.value(key, nullable=nullable)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected an integer, got {_shown(value)}")
        return value

    def decimal(self, key: str, *, nullable: bool = False, positive: bool = False,
                non_negative: bool = False) -> Decimal | None:
        return parse_decimal(self.value(key, nullable=nullable), self.name(key), nullable=nullable,
                             positive=positive, non_negative=non_negative)

    def price(self, key: str, *, nullable: bool = False) -> Decimal | None:
        return _checked_price(self.value(key, nullable=nullable), self.name(key), nullable=nullable)

    def moment(self, key: str, now: datetime, *, nullable: bool = False) -> datetime | None:
        value = self.value(key, nullable=nullable)
        if value is None:
            return None
        moment = parse_timestamp(value, self.name(key))
        if moment < EARLIEST_TIMESTAMP or moment > now + MAX_FUTURE_SKEW:
            raise InvalidMessage("out_of_range", f"{self.name(key)}: {moment.isoformat()} is implausible "
                                 f"(allowed {EARLIEST_TIMESTAMP.date()} .. now + {MAX_FUTURE_SKEW})")
        return moment

    def asset(self, key: str) -> str:
        return _checked_asset(self.required(key), self.name(key))

    def side(self, key: str) -> str:
        return _checked_side(self.required(key), self.name(key))

    def child(self, key: str, *, nullable: bool = False) -> _Object | None:
        value = self.value(key, nullable=nullable)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidMessage("wrong_type", f"{self.name(key)}: expected an object, got {_shown(value)}")
        return _Object(value, self.name(key))


def _decode_object(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidMessage("bad_json", f"body: {exc}") from None
    if not isinstance(decoded, dict):
        raise InvalidMessage("not_object", f"body: expected a JSON object, got {type(decoded).__name__}")
    return decoded


def _reference_time(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)


def _trace_id(headers: Headers, root: _Object) -> str | None:
    """The AMQP header wins over the body, as order-manager does (CONTRACTS.md §1.1)."""
    header_value = (headers or {}).get("trace_id")
    if isinstance(header_value, bytes):
        header_value = header_value.decode("utf-8", errors="replace")
    if header_value is not None and not isinstance(header_value, str):
        raise InvalidMessage("wrong_type", f"headers.trace_id: expected a string, got {_shown(header_value)}")
    return header_value or root.text("trace_id", nullable=True) or None


# --- order-manager.order_events (§2) --------------------------------------------------------------

def parse_order_event(body: bytes, headers: Headers = None, *, now: datetime | None = None) -> OrderEvent:
    """Any order-manager event (filled, partially_filled, cancelled, rejected, ...) with its order."""
    now = _reference_time(now)
    root = _Object(_decode_object(body))
    market = root.child("market_conditions", nullable=True)
    signal = root.child("signal", nullable=True)
    return OrderEvent(
        event_id=root.text("event_id"),
        event_type=root.text("event_type"),
        timestamp=root.moment("timestamp", now),
        trace_id=_trace_id(headers, root),
        order=_parse_order_snapshot(root.child("order"), now),
        rejection_reason=root.text("rejection_reason", nullable=True),
        market_price=market.price("price", nullable=True) if market else None,
        strategy_id=signal.text("strategy_id", nullable=True) if signal else None,
        raw=root.data,
    )


def _checked_uuid(value: str, field: str) -> str:
    # orders.signal_id is a uuid column on both sides; anything else cannot be joined to a signal.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidMessage("wrong_type", f"{field}: {_shown(value)} is not a UUID") from None


def _parse_order_snapshot(order: _Object, now: datetime) -> OrderSnapshot:
    # Quantity may be 0: order-manager publishes in-memory rejections with quantity "0".
    quantity = order.decimal("quantity", non_negative=True)
    filled_quantity = order.decimal("filled_quantity", non_negative=True)
    if filled_quantity > quantity:
        raise InvalidMessage("out_of_range", f"{order.name('filled_quantity')}: {filled_quantity} exceeds "
                             f"{order.name('quantity')} {quantity}")
    return OrderSnapshot(
        id=order.text("id"),
        order_id=order.text("order_id"),
        signal_id=_checked_uuid(order.text("signal_id"), order.name("signal_id")),
        asset=order.asset("asset"),
        side=order.side("side"),
        order_type=order.text("order_type"),
        quantity=quantity,
        price=order.price("price", nullable=True),
        status=order.text("status"),
        filled_quantity=filled_quantity,
        average_price=order.price("average_price", nullable=True),
        fees=order.decimal("fees", nullable=True),
        created_at=order.moment("created_at", now),
        updated_at=order.moment("updated_at", now),
        executed_at=order.moment("executed_at", now, nullable=True),
        is_dry_run=order.flag("is_dry_run"),
    )


# --- position-manager.position_updated (§3) -------------------------------------------------------

def parse_position_update(body: bytes, headers: Headers = None, *, now: datetime | None = None) -> PositionUpdate:
    """A position write; negative size is a short, pnl percentage and time held may be null."""
    now = _reference_time(now)
    root = _Object(_decode_object(body))
    event_type = root.data.get("event_type", "position_updated")
    if event_type != "position_updated":
        raise InvalidMessage("unsupported_event_type", f"event_type: {_shown(event_type)} is not position_updated")
    return PositionUpdate(
        position_id=root.text("position_id"),
        asset=root.asset("asset"),
        size=root.decimal("size"),
        unrealized_pnl=root.decimal("unrealized_pnl"),
        realized_pnl=root.decimal("realized_pnl"),
        mode=root.text("mode"),
        unrealized_pnl_pct=root.decimal("unrealized_pnl_pct", nullable=True),
        time_held_minutes=root.whole_number("time_held_minutes", nullable=True),
        update_source=root.text("update_source"),
        trace_id=_trace_id(headers, root),
        timestamp=root.moment("timestamp", now),
    )


# --- ws-gateway.{ticker,orderbook,trade,kline} (§4) -----------------------------------------------

@dataclass(frozen=True)
class _Envelope:
    """What every market payload inherits from the ws-gateway envelope."""
    asset: str
    timestamp: datetime
    trace_id: str | None
    now: datetime


_TICKER_PRICES = MappingProxyType({
    "lastPrice": "last_price", "bid1Price": "bid", "ask1Price": "ask", "markPrice": "mark_price"})
_TICKER_AMOUNTS = MappingProxyType({
    "bid1Size": "bid_size", "ask1Size": "ask_size", "volume24h": "volume_24h", "turnover24h": "turnover_24h"})


def _ticker(payload: _Object, envelope: _Envelope) -> TickerUpdate:
    # A delta carries only the keys that changed; absent ones stay None so a merge keeps old values.
    prices = {name: payload.price(key, nullable=True) for key, name in _TICKER_PRICES.items()}
    amounts = {name: payload.decimal(key, nullable=True, non_negative=True) for key, name in _TICKER_AMOUNTS.items()}
    return TickerUpdate(asset=envelope.asset, timestamp=envelope.timestamp, trace_id=envelope.trace_id,
                        **prices, **amounts)


def _best_level(payload: _Object, key: str, best: Callable) -> tuple[Decimal | None, Decimal | None]:
    levels = payload.data.get(key)
    if not isinstance(levels, list):
        raise InvalidMessage("missing_field" if levels is None else "wrong_type",
                             f"{payload.name(key)}: expected a list of [price, size], got {_shown(levels)}")
    live_levels = []
    for index, level in enumerate(levels):
        path = f"{payload.name(key)}[{index}]"
        if not isinstance(level, list) or len(level) < 2:
            raise InvalidMessage("wrong_type", f"{path}: expected [price, size], got {_shown(level)}")
        size = parse_decimal(level[1], f"{path}[1]", non_negative=True)
        if size > 0:  # size "0" deletes the level
            live_levels.append((_checked_price(level[0], f"{path}[0]"), size))
    if not live_levels:
        return None, None
    return best(live_levels, key=lambda price_and_size: price_and_size[0])


def _book_top(payload: _Object, envelope: _Envelope) -> BookTop:
    book_type = payload.text("type")
    if book_type not in _BOOK_TYPES:
        raise InvalidMessage("out_of_range", f"{payload.name('type')}: {_shown(book_type)} is neither snapshot nor delta")
    bid, bid_size = _best_level(payload, "b", max)
    ask, ask_size = _best_level(payload, "a", min)
    return BookTop(asset=envelope.asset, timestamp=envelope.timestamp, bid=bid, bid_size=bid_size, ask=ask,
                   ask_size=ask_size, is_snapshot=_BOOK_TYPES[book_type], trace_id=envelope.trace_id)


def _trade(payload: _Object, envelope: _Envelope) -> Trade:
    # The trade's own time `T`: one ws message carries several trades under one envelope time.
    return Trade(asset=envelope.asset, timestamp=payload.moment("T", envelope.now), price=payload.price("p"),
                 quantity=payload.decimal("v", positive=True), side=payload.side("S"),
                 trade_id=payload.text("i"), trace_id=envelope.trace_id)


def _kline(payload: _Object, envelope: _Envelope) -> Kline:
    prices = {name: payload.price(name) for name in ("open", "high", "low", "close")}
    if prices["low"] > min(prices["open"], prices["close"]) or prices["high"] < max(prices["open"], prices["close"]):
        raise InvalidMessage("out_of_range", f"{payload.name('high')}/{payload.name('low')}: bar "
                             f"{prices} does not contain its open and close")
    return Kline(asset=envelope.asset, start=payload.moment("start", envelope.now), **prices,
                 volume=payload.decimal("volume", non_negative=True),
                 turnover=payload.decimal("turnover", non_negative=True),
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


def parse_market_event(body: bytes, headers: Headers = None, *, now: datetime | None = None) -> MarketUpdate:
    """A ws-gateway envelope holding a ticker, orderbook (level 1), trade or kline payload."""
    now = _reference_time(now)
    root = _Object(_decode_object(body))
    event_type = root.text("event_type")
    parse_payload = _MARKET_PAYLOAD_PARSERS.get(event_type)
    if parse_payload is None:
        raise InvalidMessage("unsupported_event_type",
                             f"event_type: {_shown(event_type)} (msd reads {', '.join(_MARKET_PAYLOAD_PARSERS)})")
    payload = root.child("payload")
    envelope = _Envelope(asset=_market_asset(root, payload), timestamp=root.moment("timestamp", now),
                         trace_id=_trace_id(headers, root), now=now)
    return parse_payload(payload, envelope)


PARSERS: Mapping[str, Callable[..., OrderEvent | PositionUpdate | MarketUpdate]] = MappingProxyType({
    "order_event": parse_order_event,
    "position_update": parse_position_update,
    "market": parse_market_event,
})
