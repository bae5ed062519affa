"""Regression tests for the hostile payload families that passed the codecs (issue #10), by name.

Each family was accepted as valid and reached the database or the exit role. They must now be
refused at the edge with a reason, while the neighbours' real forms (28 significant digits,
"0E+8", negative fees) still parse.
"""
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from msd.bus.checks import Limits
from msd.bus.codecs import PARSERS, parse_market_event, parse_order_event, parse_position_update
from msd.bus.checks import REASONS, decode_object
from msd.errors import InvalidMessage
from tests.examples import FILLED_EVENT, KLINE_EVENT, ORDERBOOK_EVENT, POSITION_SHORT, TICKER_EVENT, TRADE_EVENT

NOW = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
EXAMPLE_OF_KIND = {"order_event": FILLED_EVENT, "position_update": POSITION_SHORT, "market": TICKER_EVENT}


def raw_variant(example: bytes, path: tuple, raw_json: str) -> bytes:
    """The example with the value at `path` replaced by a raw JSON fragment (so escapes stay escapes)."""
    document = json.loads(example)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = "__HOLE__"
    return json.dumps(document).replace('"__HOLE__"', raw_json).encode()


def refused(parse, body: bytes, **kwargs) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse(body, None, now=NOW, **kwargs)
    assert caught.value.reason in REASONS
    return caught.value


# 1. A `position_updated` whose position_id is the JSON escape "\ud800" crashed the exits role.
def test_lone_surrogate_position_id_is_refused():
    error = refused(parse_position_update, raw_variant(POSITION_SHORT, ("position_id",), r'"\ud800"'))
    assert error.reason == "bad_text" and "position_id" in error.detail


# 2. `"size": "-1e10"` for a real open position became a 29,396,350,000,000 USDT exit.
def test_position_size_minus_1e10_is_refused():
    error = refused(parse_position_update, raw_variant(POSITION_SHORT, ("size",), '"-1e10"'))
    assert error.reason == "out_of_range" and "size" in error.detail


# 3. `"size": "-1e30"` made the exit role log a dozen tracebacks.
def test_position_size_minus_1e30_is_refused():
    assert refused(parse_position_update, raw_variant(POSITION_SHORT, ("size",), '"-1e30"')).reason == "out_of_range"


# 4. 400-digit integers where a number is expected.
@pytest.mark.parametrize("kind, path", [
    ("order_event", ("order", "quantity")), ("position_update", ("realized_pnl",)),
    ("market", ("payload", "volume24h")), ("position_update", ("time_held_minutes",)),
])
def test_400_digit_integers_are_refused(kind, path):
    assert refused(PARSERS[kind], raw_variant(EXAMPLE_OF_KIND[kind], path, "9" * 400)).reason == "out_of_range"


# 5. "1e400" as a string (a finite Decimal, but no exchange's number).
@pytest.mark.parametrize("kind, path", [
    ("order_event", ("order", "fees")), ("order_event", ("order", "average_price")),
    ("position_update", ("unrealized_pnl",)), ("market", ("payload", "lastPrice")),
])
def test_1e400_as_a_string_is_refused(kind, path):
    assert refused(PARSERS[kind], raw_variant(EXAMPLE_OF_KIND[kind], path, '"1e400"')).reason == "out_of_range"


# 6. UTF-16 bodies (json.loads guesses the encoding of bytes and accepted them).
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "latin-1"])
@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_utf16_and_other_non_utf8_bodies_are_refused(kind, encoding):
    document = {**json.loads(EXAMPLE_OF_KIND[kind]), "note": "caf\u00e9"}
    error = refused(PARSERS[kind], json.dumps(document, ensure_ascii=False).encode(encoding))
    assert error.reason in ("bad_encoding", "bad_json")


# 7. Lone surrogates (and NUL) anywhere: values, keys, nested objects, headers.
@pytest.mark.parametrize("kind, path, raw", [
    ("order_event", ("order", "order_id"), r'"abc\udfff"'),
    ("order_event", ("rejection_reason",), r'"\ud83d"'),
    ("order_event", ("execution_details", "note"), r'"x\u0000y"'),
    ("position_update", ("update_source",), r'"\u0000"'),
    ("market", ("payload", "tickDirection"), r'"\udc80"'),
    ("market", ("trace_id",), r'"\ud800\ud800"'),
])
def test_lone_surrogates_and_nul_anywhere_are_refused(kind, path, raw):
    assert refused(PARSERS[kind], raw_variant(EXAMPLE_OF_KIND[kind], path, raw)).reason == "bad_text"


def test_surrogate_in_a_key_is_refused():
    body = FILLED_EVENT.replace(b'"trace_id"', b'"\\ud800"', 1)
    assert refused(parse_order_event, body).reason == "bad_text"


def test_surrogate_in_the_trace_id_header_is_refused():
    with pytest.raises(InvalidMessage) as caught:
        parse_order_event(FILLED_EVENT, {"trace_id": "\ud800"}, now=NOW)
    assert caught.value.reason == "bad_text"


def test_a_valid_surrogate_pair_is_text_not_an_error():
    body = raw_variant(FILLED_EVENT, ("rejection_reason",), r'"limit \ud83d\ude00"')
    assert parse_order_event(body, None, now=NOW).rejection_reason == "limit \U0001F600"


# --- magnitudes, never precision ---------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("unrealized_pnl_pct", "0.5319391488848105256103006884"),    # 28 significant digits (§0.3)
    ("unrealized_pnl_pct", "0E+8"), ("size", "0E-8"), ("size", "-9999999999.99999999"),
    ("realized_pnl", "-999999999999.99999999"), ("unrealized_pnl_pct", "-99.999999999999999999999999"),
])
def test_precision_is_never_a_reason(field, value):
    assert parse_position_update(raw_variant(POSITION_SHORT, (field,), json.dumps(value)), None, now=NOW)


@pytest.mark.parametrize("example, path, value", [
    (POSITION_SHORT, ("unrealized_pnl",), "1e12"), (POSITION_SHORT, ("unrealized_pnl_pct",), "1e6"),
    (POSITION_SHORT, ("size",), "1e-30"), (FILLED_EVENT, ("order", "quantity"), "20000000000"),
    (FILLED_EVENT, ("order", "fees"), "-1e12"), (ORDERBOOK_EVENT, ("payload", "b"), [["95010.1", "1e11"]]),
    (TRADE_EVENT, ("payload", "v"), "1e10"), (KLINE_EVENT, ("payload", "turnover"), "1e15"),
    (TICKER_EVENT, ("payload", "ask1Price"), 1e12),
])
def test_magnitudes_no_exchange_produces_are_refused(example, path, value):
    parse = {POSITION_SHORT: parse_position_update, FILLED_EVENT: parse_order_event}.get(example, parse_market_event)
    assert refused(parse, raw_variant(example, path, json.dumps(value))).reason == "out_of_range"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_json_numbers_anywhere_are_refused(raw):
    body = raw_variant(FILLED_EVENT, ("execution_details", "fill_percentage"), raw)
    assert refused(parse_order_event, body).reason == "bad_decimal"


# --- size, shape and time ----------------------------------------------------------------------

def test_oversized_body_is_refused_before_parsing():
    body = b"{" + b" " * 2000 + b"}"
    assert refused(parse_order_event, body, limits=Limits(max_body_bytes=1000)).reason == "too_large"
    # even when it is not JSON at all: the size is looked at first
    assert refused(parse_order_event, b"\xff" * 1001, limits=Limits(max_body_bytes=1000)).reason == "too_large"


@pytest.mark.parametrize("body, reason", [
    (b"", "bad_json"), (b"  \n ", "bad_json"), (b"junk junk", "bad_json"), (b"<xml/>", "bad_json"),
    (b"[1]", "not_object"), (b"17", "not_object"), (b"true", "not_object"), (b'"s"', "not_object"),
    (b"\x00{}", "bad_encoding"), (b"\xef\xbb\xbf{}", "bad_encoding"), (b'{"a": "\xc3"}', "bad_encoding"),
    (b"{" * 100_000, "bad_json"), (b'{"a": ' + b"1" * 5000 + b"}", "bad_json"),
])
def test_bodies_that_are_not_one_utf8_json_object(body, reason):
    with pytest.raises(InvalidMessage) as caught:
        decode_object(body)
    assert caught.value.reason == reason


@pytest.mark.parametrize("seconds, ok", [(299, True), (301, False)])
def test_timestamps_further_ahead_than_max_future_s_are_refused(seconds, ok):
    moment = datetime.fromtimestamp(NOW.timestamp() + seconds, timezone.utc).isoformat()
    body = raw_variant(POSITION_SHORT, ("timestamp",), json.dumps(moment))
    if ok:
        assert parse_position_update(body, None, now=NOW)
    else:
        assert refused(parse_position_update, body).reason == "out_of_range"
    assert parse_position_update(body, None, now=NOW, limits=Limits(max_future_s=3600))


@pytest.mark.parametrize("path, value", [
    (("order", "order_id"), "x" * 201), (("event_type",), "filled" * 100), (("order", "asset"), "A" * 31),
])
def test_absurdly_long_text_is_refused(path, value):
    assert refused(parse_order_event, raw_variant(FILLED_EVENT, path, json.dumps(value))).reason in (
        "out_of_range", "bad_asset")


def test_position_id_must_be_a_uuid_as_in_the_positions_table():
    error = refused(parse_position_update, raw_variant(POSITION_SHORT, ("position_id",), '"pos-1"'))
    assert error.reason == "wrong_type"


def test_negative_fee_rebate_is_still_a_fee():
    parsed = parse_order_event(raw_variant(FILLED_EVENT, ("order", "fees"), '"-0.00012000"'), None, now=NOW)
    assert parsed.order.fees == Decimal("-0.00012")
