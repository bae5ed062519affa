"""Inbound codecs against every example payload of CONTRACTS.md §2–§4, and the malformed variants to park."""
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from msd.bus.checks import REASONS, parse_decimal, parse_timestamp
from msd.bus.codecs import PARSERS, parse_market_event, parse_order_event, parse_position_update
from msd.values.messages import BookTop, Kline, OrderEvent, OrderSnapshot, PositionUpdate, TickerUpdate, Trade
from msd.errors import InvalidMessage

NOW = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
from tests.examples import ABSENT, with_value  # noqa: E402


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def variant(example: bytes, path: tuple, value) -> bytes:
    """The example with the value at `path` replaced (or removed when `value` is ABSENT)."""
    return json.dumps(with_value(example, path, value)).encode()


def rejection(parse, body: bytes, headers=None) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse(body, headers, now=NOW)
    assert caught.value.reason in REASONS
    return caught.value


from tests.examples import (  # noqa: E402  (copied verbatim from CONTRACTS.md)
    FILLED_EVENT,
    REJECTED_EVENT,
    PARTIALLY_FILLED_EVENT,
    CANCELLED_EVENT,
    POSITION_OPENED,
    POSITION_SHORT,
    TICKER_EVENT,
    ORDERBOOK_EVENT,
    TRADE_EVENT,
    KLINE_EVENT,
)


# --- scalar values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2025-11-20T10:15:31.001000", utc(2025, 11, 20, 10, 15, 31, 1000)),        # order-manager, naive = UTC
    ("2025-11-20T10:15:31", utc(2025, 11, 20, 10, 15, 31)),                      # ws-gateway, ms = 000
    ("2025-11-20T10:15:29.500000Z", utc(2025, 11, 20, 10, 15, 29, 500000)),
    ("2025-11-20T10:15:29.500000+00:00", utc(2025, 11, 20, 10, 15, 29, 500000)),
    ("2025-11-20T13:15:29+03:00", utc(2025, 11, 20, 10, 15, 29)),               # any offset → UTC
    (1732097731, utc(2024, 11, 20, 10, 15, 31)),                                 # epoch seconds
    (1732097731.5, utc(2024, 11, 20, 10, 15, 31, 500000)),
    (1732097731128, utc(2024, 11, 20, 10, 15, 31, 128000)),                      # epoch milliseconds
    ("1732097731128", utc(2024, 11, 20, 10, 15, 31, 128000)),                    # digit string
    ("1732097731", utc(2024, 11, 20, 10, 15, 31)),
])
def test_parse_timestamp_accepts(value, expected):
    parsed = parse_timestamp(value, "timestamp")
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("value, reason", [
    ("2025-11-20T10:15:29.500000+00:00Z", "bad_timestamp"),
    (True, "bad_timestamp"),
    (False, "bad_timestamp"),
    ("garbage", "bad_timestamp"),
    ("", "bad_timestamp"),
    ("2025-13-01T00:00:00", "bad_timestamp"),
    ([2025, 11, 20], "bad_timestamp"),
    (float("nan"), "bad_timestamp"),
    (1e300, "bad_timestamp"),
    (None, "missing_field"),
])
def test_parse_timestamp_rejects(value, reason):
    with pytest.raises(InvalidMessage) as caught:
        parse_timestamp(value, "order.created_at")
    assert caught.value.reason == reason
    assert "order.created_at" in caught.value.detail


@pytest.mark.parametrize("value, expected", [
    ("0E-8", Decimal(0)),
    ("0E+8", Decimal(0)),
    ("0.00100000", Decimal("0.001")),
    ("0.5319391488848105256103006884", Decimal("0.5319391488848105256103006884")),
    ("-0.41200000", Decimal("-0.412")),
    (95012.3, Decimal("95012.3")),                                               # float via str, not binary
    (5, Decimal(5)),
    ("1e3", Decimal(1000)),
])
def test_parse_decimal_accepts(value, expected):
    assert parse_decimal(value, "size") == expected


def test_parse_decimal_keeps_all_28_digits():
    assert str(parse_decimal("0.5319391488848105256103006884", "pct")) == "0.5319391488848105256103006884"


@pytest.mark.parametrize("value, flags, reason", [
    ("NaN", {}, "bad_decimal"),
    ("nan", {}, "bad_decimal"),
    ("sNaN", {}, "bad_decimal"),
    ("Infinity", {}, "bad_decimal"),
    ("-Infinity", {}, "bad_decimal"),
    (float("inf"), {}, "bad_decimal"),
    (True, {}, "bad_decimal"),
    ("", {}, "bad_decimal"),
    ("abc", {}, "bad_decimal"),
    ([1], {}, "bad_decimal"),
    (None, {}, "missing_field"),
    ("0", {"positive": True}, "out_of_range"),
    ("0E-8", {"positive": True}, "out_of_range"),
    ("-1", {"non_negative": True}, "out_of_range"),
])
def test_parse_decimal_rejects(value, flags, reason):
    with pytest.raises(InvalidMessage) as caught:
        parse_decimal(value, "order.quantity", **flags)
    assert (caught.value.reason, "order.quantity" in caught.value.detail) == (reason, True)


@pytest.mark.parametrize("value, flags, expected", [
    (None, {"nullable": True}, None),
    ("0E-8", {"non_negative": True}, Decimal(0)),
    ("-0.0005", {"nullable": True}, Decimal("-0.0005")),                         # maker rebate
])
def test_parse_decimal_flags_allow(value, flags, expected):
    assert parse_decimal(value, "order.fees", **flags) == expected


# --- order events (§2.5) ---------------------------------------------------------------------------------

def order_snapshot(**changes) -> OrderSnapshot:
    """The order shared by the filled/rejected/partially_filled examples, with per-example changes."""
    fields = dict(
        id="6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", order_id="1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80",
        signal_id="b028389f-2f98-489a-a4a7-a9c20e69f568", asset="BTCUSDT", side="buy", order_type="Market",
        quantity=Decimal("0.001"), price=None, status="filled", filled_quantity=Decimal("0.001"),
        average_price=Decimal("95012.3"), fees=Decimal("0.05225677"),
        created_at=utc(2025, 11, 20, 10, 15, 30, 123456), updated_at=utc(2025, 11, 20, 10, 15, 31, 2345),
        executed_at=utc(2025, 11, 20, 10, 15, 31, 1000), is_dry_run=False,
    )
    return OrderSnapshot(**{**fields, **changes})


@pytest.mark.parametrize("example, expected", [
    (FILLED_EVENT, OrderEvent(
        event_id="2c5152f3-c55f-4c22-97be-7eea47f2a538", event_type="filled",
        timestamp=utc(2025, 11, 20, 10, 15, 31, 422890), trace_id="a1b2c3", order=order_snapshot(),
        market_price=Decimal("95012.3"))),
    (REJECTED_EVENT, OrderEvent(
        event_id="461bedba-0c73-4533-ad7a-595be5e16b51", event_type="rejected",
        timestamp=utc(2025, 11, 20, 10, 15, 31, 423038), trace_id="a1b2c3",
        order=order_snapshot(order_id="REJECTED-b028389f-2f98-489a-a4a7-a9c20e69f568", side="sell",
                             quantity=Decimal("0.001052"), status="rejected", filled_quantity=Decimal(0),
                             average_price=None, fees=None, executed_at=None),
        rejection_reason="Risk limit exceeded: Position size would exceed limit",
        market_price=Decimal("95000.5"), strategy_id="momentum_v1")),
    (PARTIALLY_FILLED_EVENT, OrderEvent(
        event_id="353bc7fb-1182-4250-9fcf-aea646907038", event_type="partially_filled",
        timestamp=utc(2025, 11, 20, 10, 15, 32, 100), trace_id="t-77",
        order=order_snapshot(order_type="Limit", quantity=Decimal("0.01"), price=Decimal("94900"),
                             status="partially_filled", filled_quantity=Decimal("0.004"),
                             average_price=Decimal("94900"), fees=None, executed_at=None),
        market_price=Decimal("94900.0"))),
    (CANCELLED_EVENT, OrderEvent(
        event_id="16a0acbe-8732-4c88-b7bd-ce3fde7ee580", event_type="cancelled",
        timestamp=utc(2025, 11, 20, 11, 0, 30, 260000), trace_id="c0ffee",
        order=OrderSnapshot(
            id="0a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d", order_id="5f0d3c2b-1a09-4e8f-b7d6-c5b4a3928170",
            signal_id="7e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6", asset="ETHUSDT", side="buy", order_type="Limit",
            quantity=Decimal("0.05"), price=Decimal("3050"), status="cancelled", filled_quantity=Decimal("0.02"),
            average_price=Decimal("3050"), fees=Decimal("0.01098"), created_at=utc(2025, 11, 20, 11, 0, 0, 5000),
            updated_at=utc(2025, 11, 20, 11, 0, 30, 250000), executed_at=None, is_dry_run=False))),
])
def test_order_event_examples(example, expected):
    parsed = parse_order_event(example, None, now=NOW)
    assert parsed == expected
    assert parsed.raw == json.loads(example)


@pytest.mark.parametrize("headers, expected", [
    ({"trace_id": b"from-header"}, "from-header"),                               # pika hands bytes
    ({"trace_id": "from-header"}, "from-header"),
    ({"trace_id": ""}, "a1b2c3"),
    ({}, "a1b2c3"),
    (None, "a1b2c3"),
])
def test_order_event_trace_id_prefers_the_amqp_header(headers, expected):
    assert parse_order_event(FILLED_EVENT, headers, now=NOW).trace_id == expected


@pytest.mark.parametrize("path, value, field, expected", [
    (("order", "side"), "SELL", "side", "sell"),
    (("order", "side"), "Sell", "side", "sell"),
    (("order", "side"), "BUY", "side", "buy"),
    (("order", "fees"), "-0.00012000", "fees", Decimal("-0.00012")),               # maker rebate
    (("order", "fees"), "0E+8", "fees", Decimal(0)),
    (("order", "quantity"), "0.00100000", "quantity", Decimal("0.001")),
])
def test_order_event_accepted_variants(path, value, field, expected):
    parsed = parse_order_event(variant(FILLED_EVENT, path, value), None, now=NOW)
    assert getattr(parsed.order, field) == expected


def test_in_memory_signal_rejection_with_zero_quantity_is_recorded():
    body = variant(variant(variant(REJECTED_EVENT, ("order", "quantity"), "0"),
                           ("order", "filled_quantity"), "0"), ("order", "side"), "Sell")
    order = parse_order_event(body, None, now=NOW).order
    assert (order.quantity, order.filled_quantity, order.side) == (Decimal(0), Decimal(0), "sell")


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "bad_json"),
    (b"", "bad_json"),
    (b"\xff\xfe\x00", "bad_encoding"),
    (b"   ", "bad_json"),
    (b"garbage", "bad_json"),
    (b"[1, 2]", "not_object"),
    (b'"filled"', "not_object"),
    (b"null", "not_object"),
])
@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_undecodable_bodies(kind, body, reason):
    assert rejection(PARSERS[kind], body).reason == reason


@pytest.mark.parametrize("path, value, reason", [
    (("order",), ABSENT, "missing_field"),
    (("order",), None, "missing_field"),
    (("order",), ["not", "an", "object"], "wrong_type"),
    (("order", "signal_id"), ABSENT, "missing_field"),
    (("order", "order_id"), "", "missing_field"),
    (("event_id",), 123, "wrong_type"),
    (("event_type",), ABSENT, "missing_field"),
    (("order", "is_dry_run"), "false", "wrong_type"),
    (("trace_id",), 42, "wrong_type"),
    (("order", "quantity"), "NaN", "bad_decimal"),
    (("order", "fees"), "Infinity", "bad_decimal"),
    (("order", "quantity"), True, "bad_decimal"),
    (("order", "quantity"), ABSENT, "missing_field"),
    (("timestamp",), "2025-11-20T10:15:31.422890+00:00Z", "bad_timestamp"),
    (("order", "created_at"), None, "missing_field"),
    (("order", "executed_at"), "yesterday", "bad_timestamp"),
    (("timestamp",), "2008-12-31T23:59:59", "out_of_range"),
    (("timestamp",), "2025-11-20T12:05:01", "out_of_range"),                      # NOW + 301 s (max_future_s 300)
    (("order", "average_price"), "-95012.3", "out_of_range"),
    (("order", "average_price"), "0", "out_of_range"),
    (("order", "price"), "1000000000001", "out_of_range"),
    (("order", "quantity"), "-0.001", "out_of_range"),
    (("order", "filled_quantity"), "0.00200000", "out_of_range"),                 # more than quantity
    (("order", "side"), "hold", "out_of_range"),
    (("order", "asset"), "btc-usdt", "bad_asset"),
    (("market_conditions", "price"), -5.0, "out_of_range"),
    (("signal",), "momentum_v1", "wrong_type"),
])
def test_malformed_order_events(path, value, reason):
    error = rejection(parse_order_event, variant(FILLED_EVENT, path, value))
    assert error.reason == reason
    assert ".".join(path) in error.detail


def test_malformed_header_trace_id():
    assert rejection(parse_order_event, FILLED_EVENT, {"trace_id": 7}).reason == "wrong_type"


# --- position updates (§3.4) ------------------------------------------------------------------------------

@pytest.mark.parametrize("example, expected", [
    (POSITION_OPENED, PositionUpdate(
        position_id="3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", asset="BTCUSDT", size=Decimal("0.001"),
        unrealized_pnl=Decimal(0), realized_pnl=Decimal(0), mode="one-way", unrealized_pnl_pct=Decimal(0),
        time_held_minutes=0, update_source="order_execution", trace_id=None,
        timestamp=utc(2025, 11, 20, 10, 15, 31, 812345))),
    (POSITION_SHORT, PositionUpdate(
        position_id="3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", asset="BTCUSDT", size=Decimal("-0.003"),
        unrealized_pnl=Decimal("1.50007037"), realized_pnl=Decimal("-0.412"), mode="one-way",
        unrealized_pnl_pct=Decimal("0.5319391488848105256103006884"), time_held_minutes=104,
        update_source="websocket", trace_id="trace-xyz", timestamp=utc(2025, 11, 20, 12, 0, 0, 104000))),
])
def test_position_update_examples(example, expected):
    assert parse_position_update(example, None, now=NOW) == expected


@pytest.mark.parametrize("field, value, expected", [
    ("time_held_minutes", -3, -3),                                                # DB created_at was NULL
    ("time_held_minutes", None, None),
    ("unrealized_pnl_pct", None, None),
    ("unrealized_pnl_pct", "0E+8", Decimal(0)),
    ("size", "0E-8", Decimal(0)),                                                 # flat
    ("size", "0.00300000", Decimal("0.003")),                                     # long
])
def test_position_update_accepted_variants(field, value, expected):
    parsed = parse_position_update(variant(POSITION_SHORT, (field,), value), None, now=NOW)
    assert getattr(parsed, field) == expected


@pytest.mark.parametrize("field, value, reason", [
    ("size", "abc", "bad_decimal"),
    ("size", ABSENT, "missing_field"),
    ("asset", "btcusdt", "bad_asset"),
    ("asset", "BTC/USDT", "bad_asset"),
    ("time_held_minutes", "5", "wrong_type"),
    ("time_held_minutes", 1.5, "wrong_type"),
    ("time_held_minutes", True, "wrong_type"),
    ("position_id", ABSENT, "missing_field"),
    ("unrealized_pnl_pct", "NaN", "bad_decimal"),
    ("timestamp", "2025-11-20T12:00:00.104000+00:00Z", "bad_timestamp"),
    ("event_type", "portfolio_updated", "unsupported_event_type"),
])
def test_malformed_position_updates(field, value, reason):
    error = rejection(parse_position_update, variant(POSITION_SHORT, (field,), value))
    assert (error.reason, field in error.detail) == (reason, True)


# --- market data (§4) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("example, expected", [
    (TICKER_EVENT, TickerUpdate(
        asset="BTCUSDT", timestamp=utc(2025, 11, 20, 10, 15, 31, 123000), last_price=Decimal("95010.20"),
        bid=Decimal("95010.10"), ask=Decimal("95010.20"), bid_size=Decimal("1.234"), ask_size=Decimal("0.567"),
        volume_24h=Decimal("130012.345"), turnover_24h=Decimal("12345678901.2345"), mark_price=Decimal("95009.87"),
        trace_id="e3b0c442-98fc-4c14-9afb-f4c8996fb924")),
    (ORDERBOOK_EVENT, BookTop(
        asset="BTCUSDT", timestamp=utc(2025, 11, 20, 10, 15, 31, 125000), bid=Decimal("95010.10"),
        bid_size=Decimal("1.234"), ask=Decimal("95010.20"), ask_size=Decimal("0.567"), is_snapshot=True,
        trace_id="0c9a1f5e-2b7d-4e3a-9c8b-7d6e5f4a3b2c")),
    (TRADE_EVENT, Trade(
        asset="BTCUSDT", timestamp=utc(2024, 11, 20, 10, 15, 31, 128000), price=Decimal("95010.10"),
        quantity=Decimal("0.015"), side="sell", trade_id="e7a5b2c4-1d3f-5a6b-8c9d-0e1f2a3b4c5d",
        trace_id="4f3e2d1c-0b9a-4876-9543-210fedcba987")),
    (KLINE_EVENT, Kline(
        asset="BTCUSDT", start=utc(2024, 11, 20, 10, 15), open=Decimal("94998.00"), high=Decimal("95020.00"),
        low=Decimal("94990.50"), close=Decimal("95010.20"), volume=Decimal("12.345"), turnover=Decimal("1172839.12"),
        confirmed=False, timestamp=utc(2025, 11, 20, 10, 15, 31), trace_id="8a7b6c5d-4e3f-4a1b-9c0d-e1f2a3b4c5d6")),
])
def test_market_event_examples(example, expected):
    assert parse_market_event(example, None, now=NOW) == expected


def test_ticker_delta_with_only_last_price_leaves_the_rest_unknown():
    body = variant(TICKER_EVENT, ("payload",), {"symbol": "BTCUSDT", "lastPrice": "95011.00"})
    assert parse_market_event(body, None, now=NOW) == TickerUpdate(
        asset="BTCUSDT", timestamp=utc(2025, 11, 20, 10, 15, 31, 123000), last_price=Decimal("95011.00"),
        trace_id="e3b0c442-98fc-4c14-9afb-f4c8996fb924")


def test_asset_falls_back_to_the_topic_suffix():
    body = variant(variant(TICKER_EVENT, ("payload",), {"lastPrice": "3050.1"}), ("topic",), "tickers.ETHUSDT")
    assert parse_market_event(body, None, now=NOW).asset == "ETHUSDT"


@pytest.mark.parametrize("bids, asks, book_type, expected", [
    ([], [["95010.20", "0.567"]], "delta", (None, None, Decimal("95010.20"), Decimal("0.567"), False)),
    ([["95010.10", "1.234"]], [], "snapshot", (Decimal("95010.10"), Decimal("1.234"), None, None, True)),
    ([["95010.10", "0"]], [["95010.20", "0.5"]], "delta", (None, None, Decimal("95010.20"), Decimal("0.5"), False)),
    ([["95010.10", "0"], ["95009.90", "2"], ["95010.00", "1"]], [["95010.30", "0.1"], ["95010.20", "0.2"]], "delta",
     (Decimal("95010.00"), Decimal("1"), Decimal("95010.20"), Decimal("0.2"), False)),
])
def test_orderbook_level_one(bids, asks, book_type, expected):
    body = variant(variant(variant(ORDERBOOK_EVENT, ("payload", "b"), bids), ("payload", "a"), asks),
                   ("payload", "type"), book_type)
    top = parse_market_event(body, None, now=NOW)
    assert (top.bid, top.bid_size, top.ask, top.ask_size, top.is_snapshot) == expected


def test_market_trace_id_header_as_bytes_wins():
    assert parse_market_event(TRADE_EVENT, {"trace_id": b"hdr-9", "event_type": b"trade"}, now=NOW).trace_id == "hdr-9"


@pytest.mark.parametrize("event_type", ["funding", "liquidation", "balance", "position", "order", "mystery"])
def test_unsupported_market_event_types(event_type):
    error = rejection(parse_market_event, variant(TICKER_EVENT, ("event_type",), event_type))
    assert error.reason == "unsupported_event_type"


@pytest.mark.parametrize("example, path, value, reason", [
    (TICKER_EVENT, ("payload",), ABSENT, "missing_field"),
    (TICKER_EVENT, ("payload",), "BTCUSDT", "wrong_type"),
    (TICKER_EVENT, ("payload", "symbol"), "btcusdt", "bad_asset"),
    (TICKER_EVENT, ("payload", "lastPrice"), "NaN", "bad_decimal"),
    (TICKER_EVENT, ("payload", "bid1Price"), "0", "out_of_range"),
    (TICKER_EVENT, ("payload", "volume24h"), "-1", "out_of_range"),
    (TICKER_EVENT, ("timestamp",), "2025-11-20T10:15:31.123000+00:00Z", "bad_timestamp"),
    (ORDERBOOK_EVENT, ("payload", "type"), "partial", "out_of_range"),
    (ORDERBOOK_EVENT, ("payload", "b"), "95010.10", "wrong_type"),
    (ORDERBOOK_EVENT, ("payload", "b"), [["95010.10"]], "wrong_type"),
    (ORDERBOOK_EVENT, ("payload", "a"), ABSENT, "missing_field"),
    (ORDERBOOK_EVENT, ("payload", "a"), [["-1", "0.5"]], "out_of_range"),
    (TRADE_EVENT, ("payload", "S"), "Hold", "out_of_range"),
    (TRADE_EVENT, ("payload", "p"), "-95010.10", "out_of_range"),
    (TRADE_EVENT, ("payload", "v"), "abc", "bad_decimal"),
    (TRADE_EVENT, ("payload", "T"), 17320977311, "out_of_range"),                 # a digit too many: year 2518
    (TRADE_EVENT, ("payload", "i"), ABSENT, "missing_field"),
    (KLINE_EVENT, ("payload", "high"), "95000.00", "out_of_range"),               # below the close
    (KLINE_EVENT, ("payload", "confirm"), "false", "wrong_type"),
    (KLINE_EVENT, ("payload", "start"), True, "bad_timestamp"),
])
def test_malformed_market_events(example, path, value, reason):
    error = rejection(parse_market_event, variant(example, path, value))
    assert error.reason == reason
    assert ".".join(path) in error.detail


def test_market_event_without_symbol_or_topic():
    document = json.loads(TICKER_EVENT)
    del document["topic"]
    document["payload"] = {"lastPrice": "95010.20"}
    assert rejection(parse_market_event, json.dumps(document).encode()).reason == "missing_field"


@pytest.mark.parametrize("kind, example, expected_type", [
    ("order_event", CANCELLED_EVENT, OrderEvent),
    ("position_update", POSITION_OPENED, PositionUpdate),
    ("market", KLINE_EVENT, Kline),
])
def test_parsers_dispatch_by_kind(kind, example, expected_type):
    assert isinstance(PARSERS[kind](example, None, now=NOW), expected_type)


def test_order_event_with_non_uuid_signal_id_is_invalid_not_a_database_error():
    """The store's signal_id columns are uuid; a bad id must be dead-lettered at the edge."""
    body = json.loads(FILLED_EVENT)
    body["order"]["signal_id"] = "not-a-uuid"
    with pytest.raises(InvalidMessage) as err:
        parse_order_event(json.dumps(body).encode(), None, now=NOW)
    assert err.value.reason == "wrong_type" and "order.signal_id" in err.value.detail
