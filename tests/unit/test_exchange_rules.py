"""The neighbours' order and position rules (msd.exchange), each test naming the CONTRACTS
paragraph it follows. msd-sim and the backtest both use these functions."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from msd.exchange.orders import (DEFAULT_INSTRUMENT, LIMIT, MARKET, InstrumentRules, order_quantity, order_side,
                                 reduce_only_cap, reduces, select_order_type)
from msd.exchange.positions import apply_fill, apply_websocket, time_held_minutes
from msd.rules import ORDER_MANAGER_DEFAULTS, order_manager_quantity

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def test_contracts_3_6_step_is_min_of_lot_size_and_min_order_qty():
    assert InstrumentRules(Decimal("0.01"), Decimal("0.001"), Decimal(5)).step == Decimal("0.001")
    assert DEFAULT_INSTRUMENT == InstrumentRules(Decimal("0.001"), Decimal("0.001"), Decimal(5))


def test_one_instrument_type_for_the_sim_the_backtest_and_the_exit_rules():
    from msd.rules import Instrument
    assert Instrument is InstrumentRules and ORDER_MANAGER_DEFAULTS is DEFAULT_INSTRUMENT
    # numbers are parsed once, as the exit rules always did; `source` does not take part in equality
    assert InstrumentRules("0.01", 0.001, 5, "test") == InstrumentRules(Decimal("0.01"), Decimal("0.001"), Decimal(5))
    with pytest.raises(ValueError, match="instrument_info.min_order_value"):
        InstrumentRules(Decimal(1), Decimal(1), Decimal(-5))


def test_contracts_3_6_quantity_rounds_down_then_is_raised_to_min_order_value():
    step, minimum = Decimal("0.001"), Decimal(5)
    assert order_quantity(Decimal("291.37"), Decimal("97123.4"), step, minimum) == Decimal("0.002")   # 0.00299.. down
    assert order_quantity(Decimal("1"), Decimal("100"), step, minimum) == Decimal("0.050")           # raised to 5 USDT
    assert order_quantity(Decimal("4.8"), Decimal("0.16"), Decimal(1), minimum) == 32               # raised, rounded up


@given(amount=st.decimals(min_value="0.01", max_value="100000", places=2),
       price=st.decimals(min_value="0.0001", max_value="200000", places=4),
       step=st.sampled_from([Decimal("0.001"), Decimal("0.01"), Decimal(1), Decimal("0.00001")]))
def test_contracts_3_6_quantity_is_a_step_multiple_worth_at_least_the_minimum(amount, price, step):
    quantity = order_quantity(amount, price, step, Decimal(5))
    assert quantity % step == 0 and quantity > 0
    assert quantity * price >= Decimal(5) or quantity * price >= amount - step * price
    # the exit rules size with the same function (one place for §3.6)
    assert order_manager_quantity(amount, price, ORDER_MANAGER_DEFAULTS) == order_quantity(
        amount, price, ORDER_MANAGER_DEFAULTS.step, ORDER_MANAGER_DEFAULTS.min_order_value)


def test_contracts_3_6_reduce_only_only_while_there_is_a_position_to_reduce():
    assert reduces("SELL", Decimal("0.01")) and reduces("Buy", Decimal("-0.01"))
    assert not reduces("SELL", Decimal(0)) and not reduces("SELL", Decimal("-0.01"))
    # a working reduceOnly order is cut to the position, cancelled once there is none
    assert reduce_only_cap("SELL", Decimal("0.03"), Decimal("0.01")) == Decimal("0.01")
    assert reduce_only_cap("SELL", Decimal("0.005"), Decimal("0.01")) == Decimal("0.005")
    assert reduce_only_cap("SELL", Decimal("0.03"), Decimal(0)) is None


@pytest.mark.parametrize("confidence, spread, urgent, expected", [
    ("0.95", "0.5", False, MARKET),     # confidence >= 0.9
    ("0.9", "0.5", False, MARKET),
    ("0.7", None, False, MARKET),       # a null spread counts as 0
    ("0.7", "0.05", False, MARKET),     # spread < 0.1 percent
    ("0.7", "0.1", False, LIMIT),       # not strictly below
    ("0.7", "0.5", True, MARKET),       # metadata.urgency
])
def test_contracts_1_2_order_type(confidence, spread, urgent, expected):
    assert select_order_type(Decimal(confidence), None if spread is None else Decimal(spread), urgent) == expected


def test_contracts_2_2_order_side_spelling():
    assert (order_side("buy"), order_side("BUY"), order_side("sell")) == ("Buy", "Buy", "SELL")


def test_contracts_3_5_fill_path_flips_in_one_update_and_reopens_with_a_fresh_entry():
    long = apply_fill(None, "BTCUSDT", "Buy", Decimal("0.01"), Decimal(100), Decimal(0), T0)
    assert (long.size, long.average_entry_price, long.closed_at) == (Decimal("0.01"), Decimal(100), None)
    added = apply_fill(long, "BTCUSDT", "Buy", Decimal("0.01"), Decimal(110), Decimal(0), T0)
    assert added.average_entry_price == Decimal(105)                              # adding averages
    partial = apply_fill(added, "BTCUSDT", "SELL", Decimal("0.005"), Decimal(120), Decimal(0), T0)
    assert partial.average_entry_price == Decimal(105)                            # a partial close keeps it
    flipped = apply_fill(partial, "BTCUSDT", "SELL", Decimal("0.03"), Decimal(90), Decimal(0), T0)
    assert (flipped.size, flipped.average_entry_price, flipped.closed_at) == (Decimal("-0.015"), Decimal(90), None)
    flat = apply_fill(flipped, "BTCUSDT", "Buy", Decimal("0.015"), Decimal(95), Decimal(0), T0 + timedelta(minutes=1))
    assert (flat.size, flat.average_entry_price, flat.closed_at) == (0, None, T0 + timedelta(minutes=1))
    again = apply_fill(flat, "BTCUSDT", "Buy", Decimal("0.01"), Decimal(97), Decimal(0), T0 + timedelta(minutes=2))
    assert (again.average_entry_price, again.closed_at) == (Decimal(97), None)


def test_contracts_3_5_websocket_path_keeps_closed_at_and_a_stale_entry():
    row = apply_websocket(None, "BTCUSDT", Decimal("0.01"), Decimal(100), Decimal(100), T0)
    closed = apply_websocket(row, "BTCUSDT", Decimal(0), Decimal(101), None, T0 + timedelta(minutes=1))
    reopened = apply_websocket(closed, "BTCUSDT", Decimal("0.02"), Decimal(102), None, T0 + timedelta(minutes=2))
    assert reopened.closed_at == T0 + timedelta(minutes=1) and reopened.average_entry_price == Decimal(100)


def test_contracts_3_2_time_held_minutes_from_the_first_created_at_negative_when_null():
    assert time_held_minutes(T0, T0 + timedelta(minutes=90), T0 + timedelta(minutes=90)) == 90
    # created_at NULL: position-manager's model defaults it to now, after last_updated
    assert time_held_minutes(None, T0, T0 + timedelta(seconds=30)) == -1
