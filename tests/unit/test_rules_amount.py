"""Exit quantities and their USDT amounts against order-manager's arithmetic (CONTRACTS §3.6).

The property tests run the JSON body an exit signal carries through the test suite's own reading
of §3.6 (tests/contract/order_manager_rules.py, written apart from msd's) and check that the
order quantity is exactly the one msd meant.
"""
import json
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msd.bus.signal_format import signal_to_wire
from msd.market.quotes import PriceQuote
from msd.strategies.emit import exit_signal
from msd.rules import (
    AMOUNT_PADDING, ExitAmountError, ExitRules, Fill, Instrument, LadderStep, RowFacts, Side, TakeProfit,
    crossed_zero, decide, encode_amount, entry_of_an_earlier_position, fill_path_entry, note_row, position_entries,
    size_exit,
)
from tests.contract.order_manager_rules import order_quantity, problems

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
BTC = Instrument(D("0.001"), D("0.001"), D("5"))
DOGE = Instrument(D("1"), D("1"), D("5"))


def wire_quantity(decision, instrument) -> D:
    """The quantity order-manager makes of the JSON body of the decision's exit signal."""
    signal = exit_signal(decision, PriceQuote(decision.trigger_price, T0, "market_last_price"), None,
                         "exit-engine", None, "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", {})
    body = json.loads(json.dumps(signal_to_wire(signal)))
    assert problems(body) == []
    return order_quantity(body, instrument.lot_size, instrument.min_order_qty, instrument.min_order_value)


def position(size: D, entry: D, side=Side.LONG):
    return note_row(None, RowFacts("p1", "XUSDT", size * side.sign, entry, None, 1, T0), T0).state


def test_full_close_of_0_003_btc_at_97123_4_is_an_order_for_0_003():
    """Regression (issue 8): 0.003 x 97,123.4 rounded down to the cent is 291.37, and
    291.37 / 97,123.4 rounded down to 0.001 is 0.002: one lot stayed open."""
    decision = decide(position(D("0.003"), D(100000)), D("97123.4"), ExitRules(stop_loss_pct=D(2)), BTC, T0,
                      "s1").decision
    assert decision.amount == D("291.3702") and wire_quantity(decision, BTC) == D("0.003")


@pytest.mark.parametrize("size, price, amount", [
    ("0.1", "3055.2", "305.52"), ("0.029", "3055.2", "88.6008"), ("0.003", "97123.4", "291.3702"),
    ("2.5", "2.2", "5.5"), ("0.07", "97000.1", "6790.007"),
])
def test_exact_cent_products_give_back_exactly_the_quantity(size, price, amount):
    """In binary floats 0.029 x 3055.2 is 88.60079999999999, and that / 3055.2 rounds down to
    0.028: the amount is the exact Decimal product, sent as a string."""
    decision = decide(position(D(size), D(price) * 2), D(price), ExitRules(stop_loss_pct=D(2)), BTC, T0,
                      "s1").decision
    assert decision.amount == D(amount) and wire_quantity(decision, BTC) == D(size)


STEPS = st.sampled_from([(D("0.001"), D("0.001")), (D("0.0001"), D("0.001")), (D("0.01"), D("0.01")),
                         (D("0.1"), D("0.01")), (D("1"), D("1")), (D("1"), D("10"))])
PRICES = st.builds(lambda units, places: D(units).scaleb(-places),
                   st.integers(min_value=1, max_value=2_000_000_000), st.integers(min_value=0, max_value=8))


@settings(max_examples=400, deadline=None)
@given(lot=STEPS, lots=st.integers(min_value=1, max_value=5_000_000), price=PRICES,
       minimum=st.sampled_from([D("5"), D("1"), D("0")]), short=st.booleans())
def test_property_full_close_gives_exactly_the_size(lot, lots, price, minimum, short):
    lot_size, min_qty = lot
    instrument = Instrument(lot_size, min_qty, minimum)
    size = lots * instrument.step
    side = Side.SHORT if short else Side.LONG
    entry = price * 2 if side is Side.LONG else price / 2
    verdict = decide(position(size, entry, side), price, ExitRules(stop_loss_pct=D(2)), instrument, T0, "s1")
    if size < min_qty or size * price < max(minimum, D("0.01")):     # order-manager nacks < 0.01 USDT
        assert verdict.decision is None and verdict.held == "below_min_order_value"
        return
    decision = verdict.decision
    assert decision.full_close and decision.quantity == size
    assert wire_quantity(decision, instrument) == size
    assert decision.amount <= size * price * (1 + AMOUNT_PADDING)


@settings(max_examples=400, deadline=None)
@given(lot=STEPS, lots=st.integers(min_value=1, max_value=5_000_000), price=PRICES,
       close=st.integers(min_value=1, max_value=99))
def test_property_ladder_slice_is_exact_placeable_and_never_more_than_held(lot, lots, price, close):
    instrument = Instrument(*lot, D("5"))
    size = lots * instrument.step
    rules = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(1), D(close) / 100), LadderStep(D(2), D(1)))))
    verdict = decide(position(size, price / 2), price, rules, instrument, T0, "s1")
    if verdict.decision is None:
        assert verdict.held == "below_min_order_value" and (size < instrument.min_order_qty or size * price < 5)
        return
    decision = verdict.decision
    assert 0 < decision.quantity <= size and decision.quantity % instrument.step == 0
    assert wire_quantity(decision, instrument) == decision.quantity
    assert decision.amount <= size * price * (1 + AMOUNT_PADDING)
    if not decision.full_close:
        left = size - decision.quantity
        assert decision.quantity * price >= 5 and left * price >= 5
        assert decision.quantity >= instrument.min_order_qty and left >= instrument.min_order_qty
    else:
        assert decision.quantity == size


@pytest.mark.parametrize("wanted, size, price, instrument, quantity, full, held, merged", [
    ("0.5", "1", "100", BTC, "0.5", False, None, None),
    ("0.0004", "1", "100", BTC, "1", True, None, "slice_below_minimum"),       # rounds to 0
    ("0.04", "1", "100", BTC, "1", True, None, "slice_below_minimum"),         # 4 USDT < 5
    ("0.96", "1", "100", BTC, "1", True, None, "remainder_below_minimum"),     # 0.04 left = 4 USDT
    ("2", "1", "100", BTC, "1", True, None, None),
    ("1", "0.04", "100", BTC, "0", False, "below_min_order_value", None),
    ("333.7", "1000", "0.16", DOGE, "333", False, None, None),
    ("30", "1000", "0.16", DOGE, "1000", True, None, "slice_below_minimum"),   # 4.8 USDT < 5
])
def test_size_exit(wanted, size, price, instrument, quantity, full, held, merged):
    sizing = size_exit(D(wanted), D(size), D(price), instrument)
    assert (sizing.quantity, sizing.full_close, sizing.held) == (D(quantity), full, held)
    assert sizing.notes.get("merged_into_full_close") == merged


def test_size_exit_with_a_slice_in_flight_is_capped_and_never_merged():
    assert size_exit(D(10), D(10), D(100), BTC, cap=D(6)).quantity == 6
    assert size_exit(D(10), D(10), D(100), BTC, cap=D("0.01")).held == "slice_overlaps_in_flight"


def test_a_size_that_is_not_a_step_multiple_is_said_so():
    sizing = size_exit(D(1), D("1.0005"), D(100), BTC)
    assert sizing.quantity == D(1) and sizing.notes["size_not_a_step_multiple"] == "0.0005"


def test_encode_amount_refuses_a_quantity_order_manager_would_not_give_back():
    with pytest.raises(ExitAmountError):
        encode_amount(D("0.0015"), D(100), BTC)          # not a step multiple
    with pytest.raises(ExitAmountError):
        encode_amount(D("0.001"), D(100), BTC)           # 0.1 USDT would be raised to the minimum


def fills(*items):
    return [Fill(Side.LONG if side == "buy" else Side.SHORT, D(qty), None if price is None else D(price))
            for side, qty, price in items]


@pytest.mark.parametrize("items, entry, size", [
    ((("buy", "1", "100"), ("buy", "1", "110")), D(105), D(2)),
    ((("buy", "1", "100"), ("sell", "0.5", "120")), D(100), D("0.5")),          # partial close keeps it
    ((("buy", "1", "100"), ("sell", "1", "120"), ("sell", "2", "90")), D(90), D(-2)),
    ((("buy", "1", "100"), ("sell", "3", "95")), D(95), D(-2)),                  # flip at the fill's price
    ((("buy", "1", "100"), ("sell", "1", "100")), None, D(0)),
    ((("buy", "1", None),), None, D(1)),
])
def test_fill_path_entry(items, entry, size):
    assert fill_path_entry(fills(*items)) == (entry, size)


@pytest.mark.parametrize("start, items, crossed", [
    ("1", (("sell", "0.5", "1"), ("buy", "2", "1")), False),
    ("1", (("sell", "1", "1"), ("buy", "1", "1")), True),
    ("1", (("sell", "3", "1"),), True),
    ("-1", (("buy", "0.5", "1"),), False),
])
def test_crossed_zero(start, items, crossed):
    assert crossed_zero(D(start), fills(*items)) is crossed


@pytest.mark.parametrize("size, items, entries", [
    ("1", (("buy", "1", "100"),), (D(100),)),
    ("2", (("buy", "1", "100"), ("buy", "1", "110")), (D(100), D(105))),
    ("0.5", (("buy", "1", "100"), ("sell", "0.5", "120")), (D(100),)),
    ("1", (("buy", "1", "100"), ("sell", "1", "120"), ("buy", "1", "105")), (D(105),)),     # closed, reopened
    ("-2", (("buy", "1", "100"), ("sell", "3", "95")), (D(95),)),                            # flipped
    ("3", (("buy", "1", "100"), ("buy", "1", "110")), None),          # the fills do not reach its opening
    ("1", (("buy", "1", None),), None),
])
def test_position_entries(size, items, entries):
    assert position_entries(D(size), fills(*items)) == entries


@pytest.mark.parametrize("stored_entry, size, items, earlier", [
    # Closed and reopened while msd was down (across the upgrade): the stored 100 is the old one's.
    ("100", "1", (("buy", "1", "100"), ("sell", "1", "120"), ("buy", "1", "105")), True),
    ("100", "1", (("buy", "1", "100"),), False),                                  # the same position
    ("100", "2", (("buy", "1", "100"), ("buy", "1", "110")), False),              # saw it before the add
    ("105", "2", (("buy", "1", "100"), ("buy", "1", "110")), False),              # and after it
    ("105.00000001", "2", (("buy", "1", "100"), ("buy", "1", "110")), False),     # the row's 8 decimals
    ("100", "3", (("buy", "1", "100"), ("buy", "1", "110")), False),              # cannot tell: kept
])
def test_upgraded_state_of_a_position_closed_and_reopened_while_down_is_recognised(stored_entry, size, items,
                                                                                    earlier):
    """Regression (exit review 7): a state stored by the first format has no row facts, so the
    fills msd checks for a close and reopen while it was down were never read for it."""
    assert entry_of_an_earlier_position(D(stored_entry), D(size), fills(*items)) is earlier
