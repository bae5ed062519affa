"""order-manager and position-manager stand-ins, the pure parts: acceptance, sizing, fills, events."""
import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.bus.codecs import parse_order_event, parse_position_update
from msd.sim import order_manager as om
from msd.sim.market import CATALOG, Quote
from msd.sim.position_manager import apply_fill, apply_websocket, mark, position_event
from msd.sim.signals import Refused, Signal, read_signal, rejection_market_conditions, signal_block
from tests import examples

BTC = CATALOG["BTCUSDT"]
NOW = datetime(2025, 11, 20, 10, 15, 31)
QUOTE = Quote(Decimal("95000.0"), Decimal("95001.0"), Decimal("1.5"), Decimal("1.2"))
PARAMS = om.OrderManagerParams()
MODEL_BUY = {
    "signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "signal_type": "buy", "asset": "BTCUSDT",
    "amount": 100.0, "confidence": 0.7, "timestamp": "2025-11-20T10:15:29.500000Z",
    "strategy_id": "momentum_v1", "model_version": "v1763633400", "is_warmup": False,
    "market_data_snapshot": {"price": 95000.5, "spread": 0.1, "volume_24h": 12.5, "volatility": 0.0012,
                             "orderbook_depth": {"bid_depth": 3.21, "ask_depth": 2.87},
                             "technical_indicators": None},
    "metadata": {"reasoning": "Model prediction: 1"}, "trace_id": "9d1f6a52-7a55-4a8e-8d9b-0f2b7d1e3c44"}
MINIMAL = {"signal_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "signal_type": "BUY", "asset": "btcusdt",
           "amount": "25", "confidence": "0.85", "timestamp": "2025-11-20T10:15:29Z", "strategy_id": "s1",
           "market_data_snapshot": {"price": 95000}}


def read(payload, headers=None):
    return read_signal(json.dumps(payload).encode(), headers, random.Random(0))


def variant(**changes):
    payload = dict(MODEL_BUY, **changes)
    return {k: v for k, v in payload.items() if v is not ...}


def test_valid_examples_are_read_as_order_manager_normalises_them():
    model = read(MODEL_BUY, {"trace_id": b"header-trace"})
    assert isinstance(model, Signal) and model.trace_id == "header-trace"   # header wins
    assert (model.side, model.amount, model.spread) == ("Buy", Decimal("100.0"), Decimal("0.1"))
    minimal = read(MINIMAL)
    assert isinstance(minimal, Signal)
    assert (minimal.signal_type, minimal.asset, minimal.is_warmup) == ("buy", "BTCUSDT", False)
    assert minimal.trace_id and minimal.trace_id != MODEL_BUY["trace_id"]   # generated


@pytest.mark.parametrize("payload", [
    variant(signal_id="not-a-uuid"), variant(asset="BTC-USDT"), variant(amount=0.001),
    variant(confidence=1.5), variant(timestamp="2025-11-20T10:15:29+00:00Z"),
    variant(market_data_snapshot=...), variant(market_data_snapshot=None), variant(metadata=[1]),
])
def test_invalid_signals_are_refused(payload):
    assert isinstance(read(payload), Refused)


def test_non_json_body_is_refused():
    assert isinstance(read_signal(b"{not json", None, random.Random(0)), Refused)


def test_order_type_follows_confidence_spread_and_urgency():
    assert om.select_order_type(read(MODEL_BUY), PARAMS) == "Limit"      # 0.7 < 0.9, spread not < 0.1
    assert om.select_order_type(read(MINIMAL), PARAMS) == "Market"       # null spread counts as 0
    assert om.select_order_type(read(variant(confidence=0.95)), PARAMS) == "Market"
    assert om.select_order_type(read(variant(metadata={"urgency": True})), PARAMS) == "Market"
    assert om.select_order_type(read(variant(metadata={"urgency": "yes"})), PARAMS) == "Limit"


def test_quantity_is_amount_over_price_on_the_lot_and_at_least_the_minimum_value():
    assert om.order_quantity(Decimal(25), Decimal(95000), BTC.lot, Decimal(5)) == Decimal("0.0002")
    assert om.order_quantity(Decimal(1), Decimal(95000), BTC.lot, Decimal(5)) == Decimal("0.0001")
    assert om.order_quantity(Decimal(3), Decimal(95000), BTC.lot, Decimal(10)) == Decimal("0.0002")


def test_quantity_follows_contracts_3_6_step_is_min_of_lot_and_min_qty_and_rounds_down():
    """CONTRACTS §3.6: 291.37 USDT at 97,123.4 is 0.0029999... BTC, rounded DOWN to 0.002."""
    btc = om.InstrumentRules(Decimal("0.001"), Decimal("0.001"), Decimal(5))
    assert om.order_quantity(Decimal("291.37"), Decimal("97123.4"), btc.step, btc.min_order_value) == Decimal("0.002")
    assert om.order_quantity(Decimal("291.3702"), Decimal("97123.4"), btc.step, btc.min_order_value) == Decimal("0.003")
    odd = om.InstrumentRules(Decimal("0.01"), Decimal("0.001"), Decimal(5))
    assert odd.step == Decimal("0.001")
    doge = om.InstrumentRules(Decimal(1), Decimal(1), Decimal(5))
    assert om.order_quantity(Decimal("4.8"), Decimal("0.16"), doge.step, doge.min_order_value) == 32  # raised
    assert om.DEFAULT_INSTRUMENT == om.InstrumentRules(Decimal("0.001"), Decimal("0.001"), Decimal(5))


def test_reduce_only_only_while_the_position_manager_row_shows_a_position_to_reduce():
    """CONTRACTS §3.6: an exit sent after position-manager shows the position flat is a plain
    order, which opens the position the other way."""
    sell = read(variant(signal_type="sell", confidence=0.95))
    reduce_long = om.plan_order(sell, BTC, QUOTE, om.AccountExposure(Decimal("0.01"), Decimal(950)), PARAMS)
    flat = om.plan_order(sell, BTC, QUOTE, om.AccountExposure(Decimal(0), Decimal(0)), PARAMS)
    short = om.plan_order(sell, BTC, QUOTE, om.AccountExposure(Decimal("-0.01"), Decimal(950)), PARAMS)
    assert (reduce_long.reduce_only, flat.reduce_only, short.reduce_only) == (True, False, False)
    assert om.reduces("Buy", Decimal(-1)) and not om.reduces("Buy", Decimal(1))


def test_risk_limits():
    flat = om.AccountExposure(Decimal(0), Decimal(0))
    params = om.OrderManagerParams(max_order_usdt=Decimal(1000), max_position_usdt=Decimal(1500),
                                   balance_usdt=Decimal(2000))
    price = Decimal(100)
    assert om.risk_rejection("Buy", Decimal(5), price, flat, params) is None
    assert "Order size" in om.risk_rejection("Buy", Decimal(11), price, flat, params)
    long = om.AccountExposure(Decimal(10), Decimal(1000))
    assert "Position size" in om.risk_rejection("Buy", Decimal(6), price, long, params)
    assert om.risk_rejection("SELL", Decimal(10), price, long, params) is None   # reducing
    busy = om.AccountExposure(Decimal(0), Decimal(1800))
    assert "Insufficient balance" in om.risk_rejection("SELL", Decimal(3), price, busy, params)


def test_market_fill_pays_the_spread_and_slippage():
    fill = om.market_fill("Buy", Decimal("0.01"), QUOTE, BTC, PARAMS, random.Random(1))
    assert QUOTE.ask <= fill.price <= QUOTE.ask * Decimal("1.0003")
    assert fill.fee == (fill.quantity * fill.price * PARAMS.taker_fee_rate).quantize(om.EIGHT_PLACES)
    sell = om.market_fill("SELL", Decimal("3"), QUOTE, BTC, PARAMS, random.Random(1))
    assert sell.price < QUOTE.bid * Decimal("0.9997")   # twice the level-1 size walks the book


def test_limit_fill_whole_when_crossed_in_parts_at_the_top_none_when_away():
    price, remaining, rng = Decimal("95000.0"), Decimal("0.0100"), random.Random(2)
    crossed = Quote(Decimal("94990.0"), Decimal("94999.0"), Decimal(1), Decimal(1))
    assert om.limit_fill("Buy", price, remaining, crossed, BTC, PARAMS, rng).quantity == remaining
    away = Quote(Decimal("95010.0"), Decimal("95011.0"), Decimal(1), Decimal(1))
    assert all(om.limit_fill("Buy", price, remaining, away, BTC, PARAMS, rng) is None for _ in range(50))
    parts = [om.limit_fill("Buy", price, remaining, QUOTE, BTC, PARAMS, rng) for _ in range(50)]
    parts = [fill for fill in parts if fill is not None]
    assert parts and all(Decimal(0) < fill.quantity < remaining for fill in parts)
    assert all(fill.fee == (fill.quantity * price * PARAMS.maker_fee_rate).quantize(om.EIGHT_PLACES) for fill in parts)


def test_only_status_changes_publish():
    assert om.event_for_transition("pending", "partially_filled") == "partially_filled"
    assert om.event_for_transition("partially_filled", "partially_filled") is None
    assert om.event_for_transition("partially_filled", "filled") == "filled"


def order_row(**changes):
    row = {"id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "order_id": "1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80",
           "signal_id": "b028389f-2f98-489a-a4a7-a9c20e69f568", "asset": "BTCUSDT", "side": "Buy",
           "order_type": "Market", "quantity": Decimal("0.00100000"), "price": None, "status": "filled",
           "filled_quantity": Decimal("0.00100000"), "average_price": Decimal("95012.30000000"),
           "fees": Decimal("0.05225677"), "created_at": NOW - timedelta(seconds=1), "updated_at": NOW,
           "executed_at": NOW, "trace_id": "a1b2c3", "is_dry_run": False, "rejection_reason": None}
    row.update(changes)
    return row


def test_fill_event_has_the_real_shape_and_parses():
    row = order_row()
    message = om.order_event(row, "filled", trace_id="a1b2c3", now=NOW, rng=random.Random(0),
                             extra={"market_conditions": om.fill_conditions(row, NOW)})
    assert (message.queue, message.persistent, message.content_type) == ("order-manager.order_events", False, "application/json")
    assert message.headers == {"trace_id": "a1b2c3"}
    body = json.loads(message.body)
    reference = json.loads(examples.FILLED_EVENT)
    assert list(body) == list(reference)
    assert list(body["order"]) == list(reference["order"])
    assert body["execution_details"] == {"execution_latency_seconds": 1.0, "fill_percentage": 100.0,
                                         "remaining_quantity": "0E-8"}
    event = parse_order_event(message.body, message.headers, now=NOW.replace(tzinfo=timezone.utc))
    assert (event.order.side, event.order.filled_quantity, event.market_price) == ("buy", Decimal("0.001"), Decimal("95012.3"))


def test_rejection_event_has_signal_and_market_conditions_and_parses():
    signal = read(variant(signal_type="sell", model_version=None))
    row = order_row(order_id=f"REJECTED-{signal.signal_id}", side="SELL", status="rejected",
                    filled_quantity=Decimal("0E-8"), average_price=None, fees=None, executed_at=None)
    extra = {"rejection_reason": "Risk limit exceeded: Position size would exceed limit",
             "market_conditions": rejection_market_conditions(signal), "signal": signal_block(signal)}
    message = om.order_event(row, "rejected", trace_id=signal.trace_id, now=NOW, rng=random.Random(0), extra=extra)
    body, reference = json.loads(message.body), json.loads(examples.REJECTED_EVENT)
    assert list(body) == list(reference) and set(body["signal"]) == set(reference["signal"])
    assert body["market_conditions"]["timestamp"] == "2025-11-20T10:15:29.500000+00:00"
    assert (body["order"]["filled_quantity"], body["order"]["fees"]) == ("0E-8", None)
    event = parse_order_event(message.body, message.headers, now=NOW.replace(tzinfo=timezone.utc))
    assert event.event_type == "rejected" and event.strategy_id == "momentum_v1"


def test_fill_path_follows_contracts_3_5():
    """CONTRACTS §3.5 fill path: averaging on adds, entry kept on a partial close, a flip in one
    update at the fill's price, closed_at set and entry cleared when flat, reset on reopen."""
    opened = apply_fill(None, "BTCUSDT", "Buy", Decimal("0.002"), Decimal(100), Decimal("0.1"), NOW)
    assert (opened.size, opened.average_entry_price, opened.closed_at) == (Decimal("0.002"), Decimal(100), None)
    added = apply_fill(opened, "BTCUSDT", "Buy", Decimal("0.002"), Decimal(110), Decimal(0), NOW)
    assert added.average_entry_price == Decimal(105)
    later = NOW + timedelta(minutes=3)
    reduced = apply_fill(added, "BTCUSDT", "SELL", Decimal("0.001"), Decimal(115), Decimal(0), later)
    assert reduced.realized_pnl == Decimal("-0.1") + Decimal("0.01") and reduced.average_entry_price == 105
    flipped = apply_fill(reduced, "BTCUSDT", "SELL", Decimal("0.005"), Decimal(120), Decimal(0), later)
    assert (flipped.size, flipped.average_entry_price, flipped.closed_at) == (Decimal("-0.002"), Decimal(120), None)
    closed = apply_fill(flipped, "BTCUSDT", "Buy", Decimal("0.002"), Decimal(110), Decimal(0), later)
    assert (closed.size, closed.average_entry_price, closed.closed_at) == (0, None, later)
    reopened = apply_fill(closed, "BTCUSDT", "Buy", Decimal("0.001"), Decimal(90), Decimal(0), later)
    assert (reopened.average_entry_price, reopened.closed_at) == (Decimal(90), None)
    assert mark(flipped, Decimal(119), later).unrealized_pnl == Decimal("0.002")


def test_websocket_path_keeps_closed_at_and_a_stale_entry_on_reopen():
    """CONTRACTS §3.5 websocket path: closed_at is set when the size becomes 0 but not reset on a
    reopen, and the entry keeps its old value when the exchange sends none."""
    opened = apply_fill(None, "BTCUSDT", "Buy", Decimal("0.002"), Decimal(100), Decimal(0), NOW)
    later = NOW + timedelta(minutes=3)
    closed = apply_websocket(opened, "BTCUSDT", Decimal(0), Decimal(101), None, later)
    assert (closed.size, closed.closed_at, closed.average_entry_price) == (0, later, Decimal(100))
    reopened = apply_websocket(closed, "BTCUSDT", Decimal("0.003"), Decimal(95), None, later + timedelta(minutes=1))
    assert (reopened.closed_at, reopened.average_entry_price) == (later, Decimal(100))     # both stale
    priced = apply_websocket(closed, "BTCUSDT", Decimal("0.003"), Decimal(95), Decimal(95), later)
    assert priced.average_entry_price == Decimal(95)


def position_row(size, entry, unrealized, created=NOW):
    return {"id": "3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "asset": "BTCUSDT", "size": size,
            "average_entry_price": entry, "unrealized_pnl": unrealized, "realized_pnl": Decimal("0E-8"),
            "mode": "one-way", "created_at": created, "last_updated": NOW + timedelta(minutes=104)}


def test_position_event_has_the_real_shape_and_parses():
    row = position_row(Decimal("-0.00300000"), Decimal("94000.00000000"), Decimal("1.50007037"))
    message = position_event(row, update_source="websocket", trace_id="trace-xyz", now=NOW)
    body, reference = json.loads(message.body), json.loads(examples.POSITION_SHORT)
    assert list(body) == list(reference)
    assert (message.persistent, message.headers, message.content_type) == (True, None, None)
    assert body["time_held_minutes"] == 104 and body["timestamp"].endswith("+00:00")
    update = parse_position_update(message.body, now=NOW.replace(tzinfo=timezone.utc))
    assert update.size == Decimal("-0.003") and update.unrealized_pnl_pct > 0
    flat = position_event(position_row(Decimal("0E-8"), None, Decimal("0E-8")), update_source="order_execution",
                          trace_id=None, now=NOW)
    assert json.loads(flat.body)["unrealized_pnl_pct"] is None and json.loads(flat.body)["size"] == "0E-8"


@pytest.mark.parametrize("filled, recorded", [(Decimal("0"), "cancelled"), (Decimal("0E-8"), "cancelled"),
                                              (Decimal("0.001"), None)])
def test_an_exchange_cancel_after_a_partial_fill_is_not_recorded_as_order_manager_does(filled, recorded):
    """CONTRACTS §2.3: an exchange-driven cancel of an unfilled order is `cancelled` (with
    market_conditions, no modification); after a partial fill Bybit's PartiallyFilledCanceled
    violates order-manager's status CHECK, so the row keeps `partially_filled` and no event goes
    out. The sim used to record `cancelled` and send cancel_order's event for both."""
    from msd.sim.order_manager import exchange_cancel_status
    assert exchange_cancel_status(filled) == recorded


def test_sim_invented_a_600s_limit_expiry_order_manager_does_not_have():
    # Regression: msd-sim cancelled a resting Limit after 600 s, an exchange-driven cancel the real
    # order-manager never causes (CONTRACTS §2.3: its cancels are cancel_order on a newer signal).
    assert om.OrderManagerParams().limit_ttl_s is None
    assert om.OrderManagerParams(limit_ttl_s=30).limit_ttl_s == 30       # a test may still set one
    with pytest.raises(ValueError, match="limit_ttl_s"):
        om.OrderManagerParams(limit_ttl_s=0)
