"""A position's state: exact peak/trough folding, identity from events and rows (CONTRACTS §3.5),
and the JSON round trip for the jsonb column."""
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import (
    ExitReason, ExitState, InFlight, InvalidPositionData, PositionKey, RowFacts, Side, fold_bar, fold_price,
    note_row, pnl_pct,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)
PRICES = [D("100.5"), D("101.37"), D("99.01"), D("103.999"), D("103.998"), D("97.25"), D("102")]


def row(size="1", version=1, when=T0, entry="100", closed_at=None, pid="p1", asset="ETHUSDT"):
    return RowFacts(pid, asset, D(size), None if entry is None else D(entry), None, version, when, closed_at)


def opened(size="1", now=T0, **kw):
    return note_row(None, row(size, **kw), now).state


@pytest.mark.parametrize("size, expected", [("1", max(PRICES)), ("-1", min(PRICES))])
def test_extreme_is_exactly_the_best_price_seen(size, expected):
    state = opened(size)
    for price in PRICES:
        state = fold_price(state, price, T0)
    assert state.extreme_price == expected
    assert state.highest_pnl_pct == max(pnl_pct(state.side, D(100), p) for p in PRICES)


@pytest.mark.parametrize("size", ["1", "-1"])
def test_a_new_position_starts_its_extreme_at_the_entry(size):
    state = opened(size)
    assert (state.extreme_price, state.highest_pnl_pct, state.ladder_steps_done) == (D(100), 0, ())
    assert state.last_exit_at is None and not state.stop_moved_to_breakeven and state.opened_by == "table"


@pytest.mark.parametrize("side, price, pnl", [
    (Side.LONG, D(103), D(3)), (Side.LONG, D(97), D(-3)),
    (Side.SHORT, D(97), D(3)), (Side.SHORT, D(103), D(-3)),
])
def test_pnl_pct_sign_for_both_sides(side, price, pnl):
    assert pnl_pct(side, D(100), price) == pnl


def test_fold_price_refuses_a_bad_price():
    with pytest.raises(InvalidPositionData) as err:
        fold_price(opened(), D(0), T0)
    assert err.value.field == "price"


@pytest.mark.parametrize("size, extreme", [("1", D("104.5")), ("-1", D("95.5"))])
def test_a_closed_bar_moves_the_extreme_by_its_high_or_low(size, extreme):
    state = fold_bar(opened(size), D("104.5"), D("95.5"), T0)
    assert state.extreme_price == extreme


@pytest.mark.parametrize("size, tick_at, price, extreme, highest", [
    ("1", T0 - timedelta(milliseconds=1), D(130), D(100), D(0)),      # before the open: another position's
    ("1", T0 - timedelta(seconds=4), D(130), D(100), D(0)),           # inside the old 5 s grace: still before
    ("1", T0, D(130), D(130), D(30)),                                 # at the open: counts
    ("1", T0 + S, D(130), D(130), D(30)),
    ("-1", T0 - S, D(70), D(100), D(0)),
    ("-1", T0 + S, D(70), D(70), D(30)),
])
def test_ticks_received_before_the_position_opened_are_not_folded_into_its_peak(size, tick_at, price, extreme,
                                                                                 highest):
    """Regression (exit review 8): ticks stamped up to 5 s before the open (and any price decide()
    was given, however old) were folded into the extreme, arming a trailing stop from a peak the
    position never had. Only prices at or after the open count."""
    state = fold_price(opened(size), price, tick_at)
    assert (state.extreme_price, state.highest_pnl_pct) == (extreme, highest)


def test_decide_judges_a_price_from_before_the_open_but_does_not_fold_it():
    """Regression (exit review 8): decide() folded the freshest quote whatever its time."""
    from msd.rules import ORDER_MANAGER_DEFAULTS, ExitRules, Trailing, decide
    rules = ExitRules(trailing=Trailing(D(2), D(1)))
    verdict = decide(opened(), D(130), rules, ORDER_MANAGER_DEFAULTS, T0 + S, "s1", price_at=T0 - S)
    assert (verdict.state.extreme_price, verdict.state.highest_pnl_pct) == (D(100), D(0))
    assert decide(opened(), D(130), rules, ORDER_MANAGER_DEFAULTS, T0 + S, "s1",
                  price_at=T0 + S).state.extreme_price == D(130)


def test_a_bar_that_began_before_the_position_was_seen_is_left_out():
    state = opened(now=T0 + timedelta(seconds=30))
    assert fold_bar(state, D(120), D(80), T0) is state


# --- identity: events and rows --------------------------------------------------------------------

def test_reopened_position_on_a_days_old_row_is_dated_from_when_msd_saw_it():
    """Regression (issue 8): position-manager keeps one row per asset forever and its created_at
    is the first position's; msd dates a position from when it first read it non-zero."""
    now = T0 + timedelta(days=9)
    first = note_row(None, row("0.5", 17, now, closed_at=T0 + timedelta(days=2)), now, seen_by="event")
    assert (first.change, first.state.opened_at, first.state.opened_by) == ("opened", now, "event")
    from_table = note_row(None, row("0.5", 17, now), now + S).state
    assert (from_table.opened_at, from_table.opened_by) == (now + S, "table")


def test_close_and_reopen_in_one_debounce_window_start_a_new_position():
    """Regression (issue 8): the debouncer coalesced a close and a reopen, and the new position
    inherited the old one's ladder steps, breakeven flag and peak. The two writes are seen in the
    fills between the two reads (`closed_between`, read by the role when the version moved by 2+)."""
    old = replace(fold_price(opened(), D(120), T0), ladder_steps_done=(0,), stop_moved_to_breakeven=True,
                  ladder_base_size=D(1))
    outcome = note_row(old, row("2", 3, T0 + 2 * S, entry="110"), T0 + 3 * S, closed_between=True, seen_by="event")
    new = outcome.state
    assert outcome.change == "new_position" and (new.opened_at, new.opened_by) == (T0 + 3 * S, "event")
    assert (new.extreme_price, new.ladder_steps_done, new.stop_moved_to_breakeven) == (D(110), (), False)
    assert (new.ladder_base_size, new.entry_price) == (None, D(110))


def test_flip_in_one_update_starts_a_new_position_on_the_other_side():
    """CONTRACTS §3.5: a fill that crosses zero flips the row in one update, no zero in between."""
    old = fold_price(opened(), D(120), T0)
    outcome = note_row(old, row("-2", 2, T0 + S, entry="119"), T0 + 2 * S)
    assert outcome.change == "new_position" and outcome.state.side is Side.SHORT
    assert outcome.state.extreme_price == D(119) and outcome.state.opened_at == T0 + 2 * S


@pytest.mark.parametrize("newer", [
    row("1", 2, T0 + S),                          # a mark write after a fake size-0 or hedge-mode event
    row("1", 2, T0 + S, entry="101"),             # an add moved the entry
    row("0.5", 2, T0 + S),                        # a partial close
])
def test_fake_size_0_or_hedge_mode_event_does_not_reset_the_position(newer):
    """Regression (exit review 3): an event saying size 0 (or mode hedge) while the row says open
    marked the position closed (or refused and dropped it); the next newer row then started a
    new position: new open time, ladder and peak lost. Events no longer reach the rules: only a
    row read does, and a newer row on the same side, with no close in the fills, is the same
    position."""
    old = replace(fold_price(opened(), D(120), T0), ladder_steps_done=(0,), ladder_base_size=D(1))
    outcome = note_row(old, newer, T0 + 2 * S)
    assert outcome.change == "same"
    kept = outcome.state
    assert (kept.opened_at, kept.ladder_steps_done, kept.extreme_price) == (T0, (0,), D(120))


def test_an_unchanged_row_changes_nothing():
    state = fold_price(opened(), D(120), T0)
    outcome = note_row(state, row("1", 1, T0), T0 + S)
    assert outcome.change == "same" and outcome.state is state


def test_close_and_reopen_on_the_websocket_path_is_seen_from_closed_at():
    """CONTRACTS §3.5: the websocket path sets closed_at on a close and never resets it."""
    old = opened(when=T0)
    reopened = note_row(old, row("1", 5, T0 + timedelta(minutes=5), closed_at=T0 + timedelta(minutes=2)),
                        T0 + timedelta(minutes=5))
    assert reopened.change == "new_position"
    again = note_row(reopened.state, row("1", 6, T0 + timedelta(minutes=6), closed_at=T0 + timedelta(minutes=2)),
                     T0 + timedelta(minutes=6))
    assert again.change == "same", "the old closed_at stays on the row; it is not a new close"


def test_close_and_reopen_while_msd_was_down_starts_a_new_position():
    old = replace(fold_price(opened(), D(130), T0), ladder_steps_done=(0,))
    outcome = note_row(old, row("1", 9, T0 + timedelta(hours=1), entry="101"), T0 + timedelta(hours=2),
                       closed_between=True)
    assert outcome.change == "new_position" and outcome.state.ladder_steps_done == ()
    assert outcome.state.opened_at == T0 + timedelta(hours=2)


def test_an_older_read_of_the_row_is_ignored():
    state = opened(version=5)
    assert note_row(state, row("3", 4, T0 - S), T0 + S).change == "old_row"


def test_an_add_follows_the_new_entry_and_keeps_the_peak():
    state = fold_price(opened(), D(120), T0)
    added = note_row(state, row("2", 2, T0 + S, entry="110"), T0 + S).state
    assert (added.entry_price, added.extreme_price, added.opened_at) == (D(110), D(120), T0)


def test_entry_of_a_websocket_reopen_comes_from_the_fill_path():
    """CONTRACTS §3.5: a reopen via the websocket path keeps the stale average_entry_price."""
    stale = row("1", 7, T0 + S, entry="100", closed_at=T0)
    state = note_row(None, stale, T0 + S, fill_entry=D("93.5")).state
    assert (state.entry_price, state.entry_source) == (D("93.5"), "fill_path")
    agreeing = note_row(None, stale, T0 + S, fill_entry=D(100)).state
    assert agreeing.entry_source == "positions_table"
    fill_path_row = note_row(None, row("1", 7, T0 + S, entry="100"), T0 + S, fill_entry=D("93.5")).state
    assert fill_path_row.entry_source == "positions_table", "a row reopened on the fill path is right"


def test_flat_row_closes_the_position():
    assert note_row(opened(), row("0", 2, T0 + S), T0 + S).state is None


def test_state_upgraded_from_format_1_keeps_its_peak_unless_the_row_says_otherwise():
    upgraded = ExitState(PositionKey("ETHUSDT", Side.LONG, "p1"), T0, "upgrade", D(100), None, D(130), D(30))
    kept = note_row(upgraded, row("1", 3, T0 + S), T0 + S)
    assert kept.change == "confirmed" and kept.state.extreme_price == D(130)
    flipped = note_row(upgraded, row("-1", 3, T0 + S), T0 + S)
    assert flipped.change == "new_position" and flipped.state.extreme_price == D(100)


# --- round trip -----------------------------------------------------------------------------------

FULL = ExitState(
    key=PositionKey("BTCUSDT", Side.SHORT, "abc-1"),
    opened_at=datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
    opened_by="event",
    entry_price=D("64250.50"),
    entry_source="fill_path",
    extreme_price=D("63000.125"),
    highest_pnl_pct=D("1.945548011921898816415000"),
    ladder_steps_done=(0, 2),
    ladder_base_size=D("0.004"),
    stop_moved_to_breakeven=True,
    last_exit_at=datetime(2024, 3, 1, 13, 0, tzinfo=timezone.utc),
    in_flight=(InFlight("sig-1", ExitReason.TAKE_PROFIT_STEP, D("0.002"), 4, D("0.004"),
                        T0, T0 + S, {"ladder_steps_done": [0]}, "partially_filled", D("0.001")),),
    row=RowFacts("abc-1", "BTCUSDT", D("-0.004"), D("64250.5"), D("63010"), 4, T0, T0 - S),
    below_minimum_warned=True,
)


@pytest.mark.parametrize("state", [FULL, opened(), ExitState(PositionKey("ETHUSDT", Side.LONG, "p2"), T0, "upgrade")])
def test_exit_state_dict_round_trip_through_json(state):
    data = json.loads(json.dumps(state.to_dict()))
    assert ExitState.from_dict(data) == state


@pytest.mark.parametrize("field, value", [
    ("version", 1), ("entry_price", "-5"), ("opened_at", "yesterday"), ("ladder_steps_done", [-1]),
    ("stop_moved_to_breakeven", "yes"), ("side", "up"), ("in_flight", "x"), ("last_exit_reason", "panic"),
])
def test_exit_state_from_damaged_dict_names_the_field(field, value):
    data = FULL.to_dict()
    data[field] = value
    with pytest.raises(InvalidPositionData) as err:
        ExitState.from_dict(data)
    assert err.value.field.endswith(field if field != "in_flight" else "in_flight")


@pytest.mark.parametrize("text, side", [("Buy", Side.LONG), ("sell", Side.SHORT), (" LONG ", Side.LONG)])
def test_side_parse(text, side):
    assert Side.parse(text) is side
