"""Exit state: exact peak/trough tracking, reset detection, JSON round trip for the jsonb column."""
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import (
    ExitState,
    InvalidPositionData,
    PositionKey,
    PositionView,
    Side,
    initial_state,
    observe_price,
    pnl_pct,
    reset_needed,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
PRICES = [D("100.5"), D("101.37"), D("99.01"), D("103.999"), D("103.998"), D("97.25"), D("102")]


def position(side=Side.LONG, position_id="p1", size=D(1), opened_at=T0, asset="ETHUSDT", entry=D(100)):
    return PositionView(PositionKey(asset, side, position_id), size, entry, opened_at)


@pytest.mark.parametrize("side, expected", [(Side.LONG, max(PRICES)), (Side.SHORT, min(PRICES))])
def test_extreme_is_exactly_the_best_price_seen(side, expected):
    state = initial_state(position(side), T0)
    for price in PRICES:
        state = observe_price(state, side, price)
    assert state.extreme_price == expected
    assert state.highest_pnl_pct == max(pnl_pct(side, D(100), p) for p in PRICES)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_initial_state_starts_at_entry(side):
    state = initial_state(position(side), T0)
    assert (state.extreme_price, state.highest_pnl_pct, state.ladder_steps_done) == (D(100), 0, ())
    assert state.last_exit_at is None and not state.stop_moved_to_breakeven


@pytest.mark.parametrize("side, price, pnl", [
    (Side.LONG, D(103), D(3)), (Side.LONG, D(97), D(-3)),
    (Side.SHORT, D(97), D(3)), (Side.SHORT, D(103), D(-3)),
])
def test_pnl_pct_sign_for_both_sides(side, price, pnl):
    assert pnl_pct(side, D(100), price) == pnl


def test_observe_price_refuses_wrong_side_and_bad_price():
    state = initial_state(position(Side.LONG), T0)
    with pytest.raises(ValueError, match="side"):
        observe_price(state, Side.SHORT, D(100))
    with pytest.raises(InvalidPositionData) as err:
        observe_price(state, Side.LONG, D(0))
    assert err.value.field == "price"


@pytest.mark.parametrize("other, expected", [
    (position(), False),
    (position(entry=D(95), size=D(3)), False),  # added to: same position
    (position(position_id="p2"), True),
    (position(opened_at=T0 + timedelta(seconds=1)), True),
    (position(side=Side.SHORT), True),
    (position(asset="BTCUSDT"), True),
    (position(size=D(0)), True),
])
def test_reset_needed(other, expected):
    assert reset_needed(initial_state(position(), T0), other) is expected


FULL = ExitState(
    key=PositionKey("BTCUSDT", Side.SHORT, "abc-1"),
    entry_price=D("64250.50"),
    opened_at=datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
    extreme_price=D("63000.125"),
    highest_pnl_pct=D("1.945548011921898816415000"),
    ladder_steps_done=(0, 1),
    stop_moved_to_breakeven=True,
    last_exit_at=datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
)


@pytest.mark.parametrize("state", [FULL, replace(FULL, ladder_steps_done=(), last_exit_at=None,
                                                 stop_moved_to_breakeven=False)])
def test_exit_state_dict_round_trip_through_json(state):
    data = json.loads(json.dumps(state.to_dict()))
    assert ExitState.from_dict(data) == state


@pytest.mark.parametrize("field, value", [
    ("entry_price", "NaN"), ("extreme_price", None), ("opened_at", "yesterday"),
    ("opened_at", "2024-03-01T12:00:00"), ("ladder_steps_done", [0, -1]), ("side", "up"),
    ("stop_moved_to_breakeven", "yes"), ("version", 99), ("position_id", ""),
])
def test_exit_state_from_damaged_dict_names_the_field(field, value):
    data = {**FULL.to_dict(), field: value}
    with pytest.raises(InvalidPositionData) as err:
        ExitState.from_dict(data)
    assert err.value.field == field


@pytest.mark.parametrize("text, side", [("long", Side.LONG), ("Buy", Side.LONG), ("SHORT", Side.SHORT),
                                        ("Sell", Side.SHORT)])
def test_side_parse(text, side):
    assert Side.parse(text) is side
