"""Outbound signals: order-manager's acceptance rules (CONTRACTS.md §1.2) and our wire form (§1.5)."""
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.bus.signal_format import encode_signal, format_timestamp, signal_to_wire, validate_wire_signal
from msd.values.messages import MarketDataSnapshot, TradingSignal

from tests.examples import ABSENT, with_value  # noqa: E402

# --- examples copied verbatim from CONTRACTS.md §1.5 ------------------------------------------------------

MODEL_BUY = '''{"signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "signal_type": "buy", "asset": "BTCUSDT", "amount": 100.0,
 "confidence": 0.7, "timestamp": "2025-11-20T10:15:29.500000Z", "strategy_id": "momentum_v1",
 "model_version": "v1763633400", "is_warmup": false,
 "market_data_snapshot": {"price": 95000.5, "spread": 0.1, "volume_24h": 12.5, "volatility": 0.0012,
   "orderbook_depth": {"bid_depth": 3.21, "ask_depth": 2.87}, "technical_indicators": null},
 "metadata": {"reasoning": "Model prediction: 1", "prediction_result": {"prediction": 1, "buy_probability": 0.7, "sell_probability": 0.3},
   "model_version": "v1763633400", "feature_registry_version": "1.0.0", "inference_timestamp": "2025-11-20T10:15:29.501000Z"},
 "trace_id": "9d1f6a52-7a55-4a8e-8d9b-0f2b7d1e3c44"}'''

WRONG_UNIT_WARMUP_SELL = '''{"signal_id": "3c0e5d0b-8f3a-4d51-9a39-1b7f2f9b6e10", "signal_type": "sell", "asset": "ETHUSDT", "amount": 0.0327,
 "confidence": 0.61, "timestamp": "2025-11-20T10:20:00Z", "strategy_id": "momentum_v1", "model_version": null,
 "is_warmup": true, "market_data_snapshot": {"price": 3055.2, "spread": 0.001, "volume_24h": 1000000.0,
 "volatility": 0.02, "orderbook_depth": null, "technical_indicators": null},
 "metadata": {"reasoning": "Warm-up signal: sell based on heuristics", "risk_score": 0.35, "randomness_level": 0.5}, "trace_id": null}'''

MINIMAL_ACCEPTED = '''{"signal_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "signal_type": "BUY", "asset": "btcusdt", "amount": "25",
 "confidence": "0.85", "timestamp": "2025-11-20T10:15:29Z", "strategy_id": "s1", "market_data_snapshot": {"price": 95000}}'''


def variant(example: str, path: tuple, value) -> dict:
    return with_value(example, path, value)


def model_buy_signal(**changes) -> TradingSignal:
    """The typed signal whose wire form is the MODEL_BUY reference example."""
    reference = json.loads(MODEL_BUY)
    fields = dict(
        signal_id="b028389f-2f98-489a-a4a7-a9c20e69f568", signal_type="buy", asset="BTCUSDT", amount=Decimal("100"),
        confidence=0.7, timestamp=datetime(2025, 11, 20, 10, 15, 29, 500000, tzinfo=timezone.utc),
        strategy_id="momentum_v1", model_version="v1763633400", is_warmup=False,
        market_data_snapshot=MarketDataSnapshot(
            price=Decimal("95000.5"), spread=Decimal("0.1"), volume_24h=Decimal("12.5"), volatility=0.0012,
            orderbook_depth={"bid_depth": 3.21, "ask_depth": 2.87}, technical_indicators=None),
        metadata=reference["metadata"], trace_id="9d1f6a52-7a55-4a8e-8d9b-0f2b7d1e3c44",
    )
    return TradingSignal(**{**fields, **changes})


@pytest.mark.parametrize("example", [MODEL_BUY, MINIMAL_ACCEPTED, WRONG_UNIT_WARMUP_SELL])
def test_reference_examples_are_accepted(example):
    assert validate_wire_signal(json.loads(example)) == []


def test_wrong_unit_sell_passes_the_validator_so_amount_must_be_built_in_usdt():
    # 0.0327 is what a previous implementation sent: ETH, not USDT. order-manager cannot tell the two
    # apart (0.0327 >= 0.01), so the unit is ours to get right: a SELL closing 0.0327 ETH at 3055.2 is
    # sent as its USDT notional, from which order-manager derives the base quantity again.
    assert validate_wire_signal(json.loads(WRONG_UNIT_WARMUP_SELL)) == []
    close_notional = Decimal("0.0327") * Decimal("3055.2")
    snapshot = MarketDataSnapshot(price=Decimal("3055.2"), spread=Decimal("0.001"), volume_24h=None, volatility=0.02)
    sell = model_buy_signal(signal_type="sell", asset="ETHUSDT", amount=close_notional, market_data_snapshot=snapshot)
    wire = signal_to_wire(sell)
    assert wire["amount"] == 99.90504
    order_manager_quantity = Decimal(str(wire["amount"])) / Decimal(str(wire["market_data_snapshot"]["price"]))
    assert order_manager_quantity == Decimal("0.0327")


@pytest.mark.parametrize("path, value", [
    (("signal_id",), "B028389F-2F98-489A-A4A7-A9C20E69F568"),
    (("signal_id",), "{b028389f-2f98-489a-a4a7-a9c20e69f568}"),
    (("signal_id",), "urn:uuid:b028389f-2f98-489a-a4a7-a9c20e69f568"),
    (("signal_id",), "b028389f2f98489aa4a7a9c20e69f568"),
    (("signal_type",), "SELL"),
    (("signal_type",), "Sell"),
    (("asset",), "ethusdt"),
    (("asset",), "A" * 20),
    (("amount",), "1e3"),
    (("amount",), 0.01),
    (("amount",), 25),
    (("amount",), "25"),
    (("confidence",), 0),
    (("confidence",), 1),
    (("confidence",), "0.5"),
    (("timestamp",), "2025-11-20T10:15:29"),
    (("timestamp",), "2025-11-20T10:15:29+00:00"),
    (("timestamp",), "2099-01-01T00:00:00Z"),                                     # no freshness check
    (("timestamp",), 1763633729),
    (("timestamp",), 1763633729500),
    (("strategy_id",), "s" * 100),
    (("model_version",), None),
    (("model_version",), "v" * 100),
    (("model_version",), ABSENT),
    (("is_warmup",), "true"),
    (("is_warmup",), "No"),
    (("is_warmup",), 1),
    (("is_warmup",), ABSENT),
    (("metadata",), None),
    (("metadata",), ABSENT),
    (("trace_id",), None),
    (("trace_id",), "t" * 100),
    (("unknown_extra_key",), "ignored"),
    (("market_data_snapshot", "price"), "95000.5"),
    (("market_data_snapshot", "price"), 95000),
    (("market_data_snapshot", "spread"), None),
    (("market_data_snapshot", "spread"), 0),
    (("market_data_snapshot", "volatility"), ABSENT),
    (("market_data_snapshot", "orderbook_depth"), None),
])
def test_accepted_variants(path, value):
    assert validate_wire_signal(variant(MODEL_BUY, path, value)) == []


@pytest.mark.parametrize("path, value", [
    (("signal_id",), ABSENT),
    (("signal_id",), "not-a-uuid"),
    (("signal_id",), 12345),
    (("signal_type",), ABSENT),
    (("signal_type",), "hold"),
    (("signal_type",), " buy"),                                                   # no strip
    (("signal_type",), "buy" + " " * 8),                                          # 11 characters
    (("signal_type",), 1),
    (("asset",), ABSENT),
    (("asset",), "BTC-USDT"),                                                     # passes pydantic, not _validate_signal
    (("asset",), "btc"),
    (("asset",), "A" * 21),
    (("asset",), "1234"),                                                         # isupper() is False without letters
    (("asset",), 42),
    (("amount",), ABSENT),
    (("amount",), 0),
    (("amount",), -1),
    (("amount",), 0.009),
    (("amount",), "NaN"),
    (("amount",), "Infinity"),
    (("amount",), float("inf")),
    (("amount",), True),
    (("amount",), None),
    (("amount",), "abc"),
    (("confidence",), ABSENT),
    (("confidence",), 1.01),
    (("confidence",), -0.1),
    (("confidence",), "NaN"),
    (("confidence",), True),
    (("timestamp",), ABSENT),
    (("timestamp",), "2025-11-20T10:15:29.500000+00:00Z"),
    (("timestamp",), "yesterday"),
    (("timestamp",), True),
    (("timestamp",), None),
    (("strategy_id",), ABSENT),
    (("strategy_id",), ""),
    (("strategy_id",), "s" * 101),
    (("strategy_id",), None),
    (("model_version",), "v" * 101),
    (("model_version",), 5),
    (("is_warmup",), "maybe"),
    (("is_warmup",), None),
    (("is_warmup",), 2),
    (("metadata",), ["urgency"]),
    (("metadata",), "text"),
    (("trace_id",), "t" * 101),
    (("trace_id",), 5),
    (("market_data_snapshot",), ABSENT),
    (("market_data_snapshot",), None),
    (("market_data_snapshot",), [95000.5]),
    (("market_data_snapshot", "price"), ABSENT),
    (("market_data_snapshot", "price"), 0),
    (("market_data_snapshot", "price"), -1),
    (("market_data_snapshot", "price"), None),
    (("market_data_snapshot", "price"), "NaN"),
    (("market_data_snapshot", "price"), True),
    (("market_data_snapshot", "spread"), -0.1),
    (("market_data_snapshot", "spread"), "wide"),
    (("market_data_snapshot", "volume_24h"), -1),
    (("market_data_snapshot", "volatility"), "-Infinity"),
    (("market_data_snapshot", "orderbook_depth"), [[95000, 1]]),
    (("market_data_snapshot", "technical_indicators"), "rsi"),
])
def test_rejected_variants_name_the_field(path, value):
    problems = validate_wire_signal(variant(MODEL_BUY, path, value))
    assert len(problems) == 1
    assert problems[0].startswith(".".join(path) + ":")


@pytest.mark.parametrize("body", [[], "signal", None])
def test_non_object_body_is_rejected(body):
    assert validate_wire_signal(body) == [f"signal: must be a JSON object, got {type(body).__name__}"]


def test_every_problem_is_reported_not_only_the_first():
    problems = validate_wire_signal({"signal_type": "hold", "market_data_snapshot": {"price": 0}})
    assert [problem.split(":")[0] for problem in problems] == [
        "signal_id", "signal_type", "asset", "amount", "confidence", "timestamp", "strategy_id",
        "market_data_snapshot.price"]


def test_signal_to_wire_reproduces_the_reference_example():
    assert signal_to_wire(model_buy_signal()) == json.loads(MODEL_BUY)


@pytest.mark.parametrize("changes", [
    {},
    {"signal_type": "sell", "model_version": None, "is_warmup": True, "metadata": {}},
    {"amount": Decimal("0.01"), "confidence": 0.0},
    {"amount": Decimal("12345.678901"), "confidence": 1.0},
    {"timestamp": datetime(2025, 11, 20, 13, 15, 29, tzinfo=timezone(timedelta(hours=3)))},
    {"market_data_snapshot": MarketDataSnapshot(price=Decimal("0.000123"), spread=None, volume_24h=None,
                                                volatility=None)},
])
def test_round_trip_through_the_validator_is_clean(changes):
    assert validate_wire_signal(signal_to_wire(model_buy_signal(**changes))) == []


def test_encode_signal_puts_trace_id_in_the_amqp_header_and_the_body():
    signal = model_buy_signal(trace_id="trace-42")
    body, headers = encode_signal(signal)
    assert headers == {"trace_id": "trace-42"}
    assert json.loads(body.decode("utf-8")) == signal_to_wire(signal)


@pytest.mark.parametrize("changes", [
    {"amount": Decimal("0.001")},                                                 # below order-manager's 0.01 USDT
    {"asset": "BTC-USDT"},
    {"confidence": 1.5},
    {"strategy_id": ""},
    {"metadata": {"score": float("nan")}},                                        # not representable in JSON
])
def test_encode_signal_refuses_what_order_manager_would_drop(changes):
    with pytest.raises(ValueError):
        encode_signal(model_buy_signal(**changes))


@pytest.mark.parametrize("moment, expected", [
    (datetime(2025, 11, 20, 10, 15, 29, 500000, tzinfo=timezone.utc), "2025-11-20T10:15:29.500000Z"),
    (datetime(2025, 11, 20, 10, 15, 29, tzinfo=timezone.utc), "2025-11-20T10:15:29Z"),
    (datetime(2025, 11, 20, 13, 15, 29, 1, tzinfo=timezone(timedelta(hours=3))), "2025-11-20T10:15:29.000001Z"),
    (datetime(2025, 11, 20, 5, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))), "2025-11-20T10:30:00Z"),
])
def test_format_timestamp_is_utc_with_a_single_z(moment, expected):
    formatted = format_timestamp(moment)
    assert formatted == expected
    assert not formatted.endswith("+00:00Z")
    assert validate_wire_signal(variant(MODEL_BUY, ("timestamp",), formatted)) == []


def test_format_timestamp_refuses_a_naive_datetime():
    with pytest.raises(ValueError):
        format_timestamp(datetime(2025, 11, 20, 10, 15, 29))
