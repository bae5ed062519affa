"""The exit role's pure parts: price selection, rows and instruments as the rules see them, the
signal an exit decision becomes, and the identity check of an incoming position id."""
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.bus.signal_format import encode_signal, signal_to_wire
from msd.market.state import AssetState
from msd.market.quotes import PriceQuote, freshest, market_quotes, table_quote
from msd.roles.exits.tables import fills_of, instrument_of, row_facts
from msd.strategies.emit import exit_signal
from msd.roles.exits.main import canonical_id, update_context
from msd.rules import ORDER_MANAGER_DEFAULTS, ExitRules, InvalidPositionData, Side, decide, note_row
from msd.store.neighbours import FillRow, InstrumentRow, PositionRow
from tests.contract.order_manager_rules import problems

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def row(size="1", entry="100", current="100", *, version=3, closed_at=None, created=T0):
    return PositionRow("3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69", "BTCUSDT", D(size),
                       None if entry is None else D(entry), None if current is None else D(current), T0, created,
                       "one-way", version, closed_at)


def quote(price, at=T0, source="positions_table"):
    return PriceQuote(D(price), at, source)


def test_freshest_price_wins_and_a_tie_prefers_the_traded_price():
    old_table = quote("100", T0)
    newer_trade = quote("99", T0 + timedelta(seconds=1), "market_last_price")
    assert freshest([old_table, newer_trade, None]) == newer_trade
    tied = [quote("100", T0), quote("101", T0, "market_mid"), quote("102", T0, "market_last_price")]
    assert freshest(tied).source == "market_last_price"
    assert freshest([None]) is None


def test_market_quotes_skip_a_crossed_book_and_unknown_assets():
    state = AssetState("BTCUSDT", last_price=D(100), last_price_at=T0, bid=D(101), ask=D(100), book_at=T0)
    assert [q.source for q in market_quotes(state)] == ["market_last_price"]
    assert market_quotes(None) == []
    assert table_quote(row_facts(row(current=None))) is None and table_quote(None) is None


def test_row_facts_keep_version_and_closed_at_but_not_created_at():
    facts = row_facts(row("-0.003", closed_at=T0 - timedelta(days=3)))
    assert (facts.side, facts.size, facts.version, facts.closed_at) == (Side.SHORT, D("-0.003"), 3,
                                                                       T0 - timedelta(days=3))
    assert not hasattr(facts, "created_at"), "created_at is not a position's open time (CONTRACTS §3.5)"


def test_instrument_defaults_are_order_managers_own_for_a_missing_row_or_column():
    assert instrument_of(None) == ORDER_MANAGER_DEFAULTS
    doge = instrument_of(InstrumentRow("DOGEUSDT", D(1), D(1), D(5)))
    assert (doge.step, doge.min_order_value, doge.source) == (D(1), D(5), "instrument_info")
    assert instrument_of(InstrumentRow("XUSDT", None, D("0.01"), None)).lot_size == D("0.001")


def test_instrument_row_with_a_negative_lot_size_is_the_positions_invalid_data_not_an_error():
    # Regression (one instrument type): the exits role skips a position whose data is unusable
    # (InvalidPositionData, field named) instead of counting it as a crash of its turn.
    with pytest.raises(InvalidPositionData) as caught:
        instrument_of(InstrumentRow("XUSDT", D("-0.001"), D("0.001"), D(5)))
    assert caught.value.field == "instrument_info.lot_size"


def test_fills_of_maps_sides_and_unpriced_fills():
    fills = fills_of([FillRow("buy", D(1), D(100), T0), FillRow("sell", D(2), None, T0)])
    assert [(f.side, f.quantity, f.price) for f in fills] == [(Side.LONG, D(1), D(100)), (Side.SHORT, D(2), None)]


@pytest.mark.parametrize("size, price, side, amount", [("2", "97", "sell", "194"), ("-3", "103", "buy", "309")])
def test_stop_loss_signal_closes_exactly_the_size_in_usdt_with_the_trigger_price(size, price, side, amount):
    state = note_row(None, row_facts(row(size)), T0).state
    decision = decide(state, D(price), ExitRules(stop_loss_pct=D(2)), ORDER_MANAGER_DEFAULTS, T0, "s").decision
    signal = exit_signal(decision, quote(price), None, "exit-engine", "t-1", "0f8fad5b-d9cb-469f-a165-70867728950e",
                         {"trigger": "event"})
    wire = json.loads(encode_signal(signal)[0])
    assert problems(wire) == []
    assert (wire["signal_type"], wire["amount"], wire["market_data_snapshot"]["price"]) == (side, amount, price)
    assert wire["metadata"]["urgency"] is True and wire["metadata"]["quantity"] == str(abs(D(size)))
    assert (wire["confidence"], wire["trace_id"], wire["is_warmup"]) == (1.0, "t-1", False)
    assert signal_to_wire(signal)["metadata"]["price_source"] == "positions_table"


def test_position_ids_must_be_uuids_so_nothing_else_reaches_a_query():
    assert canonical_id("3D6F0A51-2B7E-4D8C-9A1F-0E2D3C4B5A69") == "3d6f0a51-2b7e-4d8c-9a1f-0e2d3c4b5a69"
    for bad in ("\ud800", "not-a-uuid", None, 5):
        with pytest.raises(InvalidPositionData):
            canonical_id(bad)


def test_update_context_of_an_id_with_a_lone_surrogate_can_be_logged():
    from msd.values.messages import PositionUpdate
    update = PositionUpdate("\ud800", "BTCUSDT", D(1), D(0), D(0), "one-way", None, None, "websocket", None, T0)
    assert json.dumps(update_context(update)).encode("utf-8")
