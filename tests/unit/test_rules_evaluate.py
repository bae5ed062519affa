"""decide(): every rule for longs and shorts, priority, pacing, exits in flight, sizing, bad input.

Positions are built the way the role builds them: from a `positions` row through `note_row`, and
an exit's effect is a newer row with a smaller size (`filled`).
"""
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import (
    ORDER_MANAGER_DEFAULTS, ExitAmountError, ExitReason, ExitRules, Instrument, InvalidPositionData, LadderStep,
    RowFacts, Side, TakeProfit, TimeExit, Trailing, check_amount, decide, note_order, note_published, note_row, note_stalls,
    order_manager_quantity,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
ENTRY = D("100")
SIDES = [Side.LONG, Side.SHORT]
STEP = timedelta(seconds=61)        # longer than the default cooldown
LOT = Instrument(D("0.001"), D("0.001"), D("5"))


def at(side: Side, pnl_pct) -> D:
    """The price at which a position of `side` entered at ENTRY shows `pnl_pct` percent PnL."""
    return ENTRY * (1 + side.sign * D(str(pnl_pct)) / 100)


def row(side=Side.LONG, size="2", version=1, when=T0, entry=ENTRY, closed_at=None, pid="p1", asset="BTCUSDT"):
    return RowFacts(pid, asset, D(size) * side.sign, entry, None, version, when, closed_at)


def position(side=Side.LONG, size="2", opened=T0, **kw):
    return note_row(None, row(side, size, **kw), opened).state


def filled(state, quantity, when):
    """position-manager writes the exit's fill: a newer row, smaller by `quantity`."""
    new_size = state.size - quantity
    newer = row(state.side, str(new_size), state.row.version + 1, when, state.entry_price)
    return note_row(state, newer, when).state


def run(state, rules, pnls, start=T0, step=STEP, fill=True, instrument=LOT):
    """Feed prices at the given PnLs, one per `step`; each decision is sent and (by default) filled."""
    decisions = []
    for i, pnl in enumerate(pnls):
        if state is None:               # closed by a full exit
            decisions.append(None)
            continue
        now = start + (i + 1) * step
        verdict = decide(state, at(state.side, pnl), rules, instrument, now, f"s{i}")
        decisions.append(verdict.decision)
        if verdict.decision is None:
            state = verdict.state
        else:
            state = verdict.sent_state
            if fill:
                state = filled(state, verdict.decision.quantity, now + timedelta(seconds=1))
    return decisions, state


def reasons(decisions):
    return [d.reason if d else None for d in decisions]


LADDER = TakeProfit(steps=(LadderStep(D(3), D("0.5")), LadderStep(D(5), D("1.0"))))
LADDER3 = TakeProfit(steps=(LadderStep(D(2), D("0.3")), LadderStep(D(4), D("0.6")), LadderStep(D(6), D("0.9"))))


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("pnl, fires", [("2.99", False), ("3", True), ("7", True), ("-3", False)])
def test_single_take_profit(side, pnl, fires):
    (decision,), _ = run(position(side), ExitRules(take_profit=TakeProfit(pct=D(3))), [pnl])
    assert (decision is not None) == fires
    if fires:
        assert decision.reason is ExitReason.TAKE_PROFIT and decision.full_close
        assert decision.quantity == 2 and decision.amount == 2 * at(side, pnl)
        assert decision.side_to_send == ("sell" if side is Side.LONG else "buy")
        assert decision.pnl_pct == D(pnl)
        assert decision.rule_params["threshold_price"] == str(at(side, 3))


@pytest.mark.parametrize("side", SIDES)
def test_ladder_steps_fire_once_each_and_in_order(side):
    rules = ExitRules(take_profit=LADDER)
    decisions, state = run(position(side), rules, [1, 3, "3.5", 3, 4, 5, 6, 5])
    assert reasons(decisions) == [None, ExitReason.TAKE_PROFIT_STEP, None, None, None,
                                  ExitReason.TAKE_PROFIT_STEP, None, None]
    first, second = decisions[1], decisions[5]
    assert (first.rule_params["step"], first.quantity, first.full_close) == (0, D(1), False)
    # Step 2 closes the cumulative 1.0 of the size the ladder started from: all that is left.
    assert (second.rule_params["step"], second.quantity, second.full_close) == (1, D(1), True)
    assert state is None        # the second step closed it: the row is flat


@pytest.mark.parametrize("side", SIDES)
def test_ladder_jump_over_two_steps_fires_highest_cumulative_once(side):
    decisions, state = run(position(side, size="10"), ExitRules(take_profit=LADDER3), [5, 7])
    assert reasons(decisions) == [ExitReason.TAKE_PROFIT_STEP] * 2
    assert decisions[0].rule_params["steps_fired"] == [0, 1] and decisions[0].quantity == 6
    assert decisions[1].rule_params["steps_fired"] == [2] and decisions[1].quantity == 3
    assert state.ladder_steps_done == (0, 1, 2) and state.size == 1


@pytest.mark.parametrize("side", SIDES)
def test_ladder_against_a_partially_filled_exit_sizes_the_next_step_against_the_row(side):
    """Regression (issue 8): step 2 closed "the rest" assuming step 1 had filled; with the first
    slice only partly filled it must close what the row shows above the step's target."""
    rules = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(3), D("0.5")), LadderStep(D(5), D("0.8")))))
    state = position(side, size="10")
    first = decide(state, at(side, 3), rules, LOT, T0 + STEP, "s1")
    assert first.decision.quantity == 5
    state = filled(first.sent_state, D(2), T0 + STEP + timedelta(seconds=1))     # only 2 of the 5 filled
    assert state.in_flight and state.size == 8       # still in flight: the slice has not all filled
    state, _ = note_order(state, "s1", "cancelled", D(2), T0)
    state = filled(state, D(0), T0 + STEP + timedelta(seconds=2))                 # newer row, same size
    assert not state.in_flight
    second = decide(state, at(side, 5), rules, LOT, T0 + 3 * STEP, "s2")
    # Target 10 x (1 - 0.8) = 2 kept: 8 - 2 = 6 closed, not 5 x (0.8 - 0.5) / 0.5 of the original.
    assert (second.decision.quantity, second.decision.rule_params["keep_size"]) == (D(6), "2.0")


@pytest.mark.parametrize("side", SIDES)
def test_breakeven_move_then_back_to_entry_exits_with_breakeven_stop(side):
    rules = ExitRules(take_profit=LADDER, breakeven_after_first_step=True, breakeven_fee_pct=D("0.1"))
    decisions, state = run(position(side), rules, [3, "0.5", "0.1"])
    assert reasons(decisions) == [ExitReason.TAKE_PROFIT_STEP, None, ExitReason.BREAKEVEN_STOP]
    assert decisions[2].rule_params["threshold_price"] == str(at(side, "0.1"))
    assert decisions[2].quantity == 1 and decisions[2].full_close


@pytest.mark.parametrize("side", SIDES)
def test_no_breakeven_stop_before_first_step_or_when_disabled(side):
    with_move = ExitRules(take_profit=LADDER, breakeven_after_first_step=True)
    assert reasons(run(position(side), with_move, ["0.05"])[0]) == [None]
    without = ExitRules(take_profit=LADDER)
    assert reasons(run(position(side), without, [3, "0.05"])[0]) == [ExitReason.TAKE_PROFIT_STEP, None]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("pnl, fires", [("-1.99", False), ("-2", True), ("-5", True), ("1", False)])
def test_stop_loss(side, pnl, fires):
    (decision,), _ = run(position(side), ExitRules(stop_loss_pct=D(2)), [pnl])
    assert (decision is not None) == fires
    if fires:
        assert decision.reason is ExitReason.STOP_LOSS and decision.quantity == 2


@pytest.mark.parametrize("side", SIDES)
def test_trailing_not_armed_below_activation(side):
    rules = ExitRules(trailing=Trailing(D("1.5"), D("0.8")))
    assert reasons(run(position(side), rules, ["1.4", "0.2", "-1"])[0]) == [None, None, None]


@pytest.mark.parametrize("side", SIDES)
def test_trailing_activation_then_trigger(side):
    rules = ExitRules(trailing=Trailing(D("1.5"), D("0.8")))
    decisions, state = run(position(side), rules, [1, 2, "1.5", "1.1"])
    assert reasons(decisions) == [None, None, None, ExitReason.TRAILING_STOP]
    peak = at(side, 2)
    assert D(decisions[3].rule_params["extreme_price"]) == peak
    assert decisions[3].rule_params["threshold_price"] == str(peak * (1 - side.sign * D("0.008")))


@pytest.mark.parametrize("side", SIDES)
def test_trailing_never_loosens_when_price_falls_back(side):
    rules = ExitRules(trailing=Trailing(D(2), D(1)))
    decisions, state = run(position(side), rules, [3, "2.5", "2.1"])
    assert reasons(decisions) == [None, None, None]
    assert state.extreme_price == at(side, 3)
    (decision,), _ = run(state, rules, ["1.9"], start=T0 + 4 * STEP)
    assert decision.reason is ExitReason.TRAILING_STOP


@pytest.mark.parametrize("side", SIDES)
def test_trailing_peak_includes_current_price(side):
    rules = ExitRules(trailing=Trailing(D(2), D(1)))
    _, state = run(position(side), rules, [4])
    assert state.extreme_price == at(side, 4)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("held, pnl, min_profit, fires", [
    (timedelta(hours=23), 1, D(0), False),
    (timedelta(hours=24), "0.5", D(0), True),
    (timedelta(hours=24), "-0.5", D(0), False),           # the default: not at a loss
    (timedelta(hours=24), "-0.5", D(-1), True),           # negative: "exit even at this loss"
    (timedelta(hours=25), "0.2", D("0.3"), False),
])
def test_time_exit(side, held, pnl, min_profit, fires):
    rules = ExitRules(time_exit=TimeExit(timedelta(hours=24), min_profit))
    state = position(side)
    verdict = decide(state, at(side, pnl), rules, LOT, T0 + held, "s1")
    assert (verdict.decision is not None) == fires
    if fires:
        assert verdict.decision.rule_params["opened_at"] == T0.isoformat()


@pytest.mark.parametrize("side", SIDES)
def test_time_exit_counts_from_msd_open_time_not_the_rows_created_at(side):
    """Regression (issue 8): the open time came from positions.created_at, which position-manager
    sets once per asset forever; a position reopened days later was time-exited at once."""
    rules = ExitRules(time_exit=TimeExit(timedelta(hours=24)))
    now = T0 + timedelta(days=5)
    state = position(side, opened=now, when=now)        # first seen by msd just now, on an old row
    assert decide(state, at(side, 1), rules, LOT, now + timedelta(minutes=1), "s1").decision is None
    assert decide(state, at(side, 1), rules, LOT, now + timedelta(hours=24), "s1").decision is not None


@pytest.mark.parametrize("side", SIDES)
def test_priority_stop_loss_beats_time_exit(side):
    rules = ExitRules(stop_loss_pct=D(2), time_exit=TimeExit(timedelta(hours=1), D(-10)))
    verdict = decide(position(side), at(side, -3), rules, LOT, T0 + timedelta(hours=2), "s1")
    assert verdict.decision.reason is ExitReason.STOP_LOSS
    assert verdict.decision.also_triggered == (ExitReason.TIME_EXIT,)


@pytest.mark.parametrize("side", SIDES)
def test_priority_is_data(side):
    priority = (ExitReason.TIME_EXIT, ExitReason.STOP_LOSS, ExitReason.BREAKEVEN_STOP, ExitReason.TRAILING_STOP,
                ExitReason.TAKE_PROFIT, ExitReason.TAKE_PROFIT_STEP)
    rules = ExitRules(stop_loss_pct=D(2), time_exit=TimeExit(timedelta(hours=1), D(-10)), priority=priority)
    verdict = decide(position(side), at(side, -3), rules, LOT, T0 + timedelta(hours=2), "s1")
    assert verdict.decision.reason is ExitReason.TIME_EXIT


@pytest.mark.parametrize("side", SIDES)
def test_cooldown_holds_a_second_decision_but_the_extreme_still_moves(side):
    rules = ExitRules(take_profit=LADDER3, cooldown=timedelta(seconds=60))
    state = position(side, size="10")
    first = decide(state, at(side, 2), rules, LOT, T0, "s1")
    state = filled(first.sent_state, first.decision.quantity, T0 + timedelta(seconds=1))
    held = decide(state, at(side, 7), rules, LOT, T0 + timedelta(seconds=30), "s2")
    assert held.decision is None and held.held == "cooldown"
    assert held.state.extreme_price == at(side, 7) and held.state.ladder_steps_done == (0,)
    later = decide(held.state, at(side, 7), rules, LOT, T0 + timedelta(seconds=61), "s3")
    assert later.decision.rule_params["steps_fired"] == [1, 2]


@pytest.mark.parametrize("side", SIDES)
def test_stale_size_does_not_refire_an_exit_and_reverse_the_position(side):
    """Regression (issue 8): after an exit was sent, only the cooldown stopped the next one; with
    the positions row not yet changed, every cooldown sent another full exit, and once flat,
    order-manager sent it without reduceOnly and opened the position the other way."""
    rules = ExitRules(stop_loss_pct=D(2), cooldown=timedelta(seconds=1))
    state = position(side)
    first = decide(state, at(side, -3), rules, LOT, T0, "s1")
    state = first.sent_state
    for seconds in (2, 30, 59):                     # the row still says 2: nothing more is sent
        verdict = decide(state, at(side, -3), rules, LOT, T0 + timedelta(seconds=seconds), "s2")
        assert verdict.decision is None and verdict.held == "in_flight"
        state = verdict.state
    mark = note_row(state, row(side, "2", 2, T0 + timedelta(seconds=40)), T0 + timedelta(seconds=40)).state
    assert mark.in_flight, "a newer row with the same size (a mark) does not show the exit"
    assert note_row(mark, row(side, "0", 3, T0 + timedelta(seconds=41)), T0).state is None


@pytest.mark.parametrize("side", SIDES)
def test_stalled_exit_waits_for_a_newer_row_and_is_never_resent_blindly(side):
    rules = ExitRules(stop_loss_pct=D(2), cooldown=timedelta(seconds=1))
    sent = decide(position(side), at(side, -3), rules, LOT, T0, "s1").sent_state
    state, stalled = note_stalls(sent, T0 + timedelta(seconds=59), timedelta(seconds=60))
    assert stalled == ()
    state, stalled = note_stalls(state, T0 + timedelta(seconds=60), timedelta(seconds=60))
    assert [f.signal_id for f in stalled] == ["s1"] and state.in_flight[0].stalled
    assert note_stalls(state, T0 + timedelta(seconds=90), timedelta(seconds=60))[1] == ()   # reported once
    assert decide(state, at(side, -3), rules, LOT, T0 + timedelta(seconds=90), "s2").decision is None
    state = note_published(state, {"s1"})
    newer = note_row(state, row(side, "2", 2, T0 + timedelta(seconds=91)), T0 + timedelta(seconds=91)).state
    assert not newer.in_flight
    assert decide(newer, at(side, -3), rules, LOT, T0 + timedelta(seconds=92), "s3").decision.quantity == 2


@pytest.mark.parametrize("side", SIDES)
def test_stalled_exit_is_never_re_decided_while_its_outbox_row_is_unpublished(side):
    """Regression (exit review 4): a stalled exit gave way to a new decision (a new signal_id) on
    any newer row, even while its own outbox row was still pending (broker down): both would go
    out on recovery and the second would reverse the position. It gives way only once published."""
    rules = ExitRules(stop_loss_pct=D(2), cooldown=timedelta(seconds=1))
    sent = decide(position(side), at(side, -3), rules, LOT, T0, "s1").sent_state
    state, _ = note_stalls(sent, T0 + timedelta(seconds=60), timedelta(seconds=60))
    for version in (2, 3):          # newer rows (marks) while the broker is down
        state = note_row(state, row(side, "2", version, T0 + timedelta(seconds=60 + version)), T0).state
        assert [f.signal_id for f in state.in_flight] == ["s1"]
        assert decide(state, at(side, -3), rules, LOT, T0 + timedelta(seconds=70), "s2").decision is None
    state = note_published(state, {"other", "s1"})
    assert state.in_flight[0].published and note_published(state, {"s1"}) is state
    state = note_row(state, row(side, "2", 4, T0 + timedelta(seconds=80)), T0).state
    assert not state.in_flight
    assert decide(state, at(side, -3), rules, LOT, T0 + timedelta(seconds=81), "s3").decision is not None


@pytest.mark.parametrize("side", SIDES)
def test_rejected_exit_is_undone_and_decided_again_at_once(side):
    rules = ExitRules(take_profit=LADDER, breakeven_after_first_step=True, cooldown=timedelta(seconds=60))
    state = position(side)
    sent = decide(state, at(side, 3), rules, LOT, T0, "s1").sent_state
    assert sent.ladder_steps_done == (0,) and sent.stop_moved_to_breakeven
    undone, released = note_order(sent, "s1", "rejected", D(0), T0)
    assert released.signal_id == "s1" and not undone.in_flight
    assert undone.ladder_steps_done == () and not undone.stop_moved_to_breakeven and undone.last_exit_at is None
    again = decide(undone, at(side, 3), rules, LOT, T0 + timedelta(seconds=1), "s2")
    assert again.decision.reason is ExitReason.TAKE_PROFIT_STEP


@pytest.mark.parametrize("side", SIDES)
def test_permanently_rejected_exit_is_re_decided_with_a_bounded_backoff_not_in_a_loop(side):
    """Regression (exit review 5): every rejection allowed a new decision at once, so an exit
    order-manager always refuses (a risk limit, say) was re-sent as fast as the rate allowed,
    forever. The first is decided again at once; each further refusal in a row doubles the wait
    (5 s, 10 s, ... at most 5 min); an exit that takes effect ends the streak."""
    rules = ExitRules(stop_loss_pct=D(2), cooldown=timedelta(seconds=1))
    state, now, waits = position(side), T0, []
    for n in range(1, 10):
        verdict = decide(state, at(side, -3), rules, LOT, now, f"s{n}")
        assert verdict.decision is not None, f"decision {n}"
        state, _ = note_order(verdict.sent_state, f"s{n}", "rejected", D(0), now)
        waits.append(state.retry_at - now)
        if state.retry_at > now:
            held = decide(state, at(side, -3), rules, LOT, state.retry_at - timedelta(microseconds=1), "x")
            assert (held.decision, held.held) == (None, "rejection_backoff")
        now = state.retry_at
    assert [w.total_seconds() for w in waits] == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    assert state.rejections == 9
    sent = decide(state, at(side, -3), rules, LOT, now, "ok").sent_state
    partly, _ = note_order(sent, "ok", "cancelled", D("1.5"), now)           # accepted, 1.5 filled
    shown = note_row(partly, row(side, "0.5", 2, now + timedelta(seconds=1)), now).state
    assert (shown.rejections, shown.retry_at, shown.in_flight) == (0, None, ())
    cancelled, _ = note_order(decide(position(side), at(side, -3), rules, LOT, T0, "c").sent_state, "c",
                              "cancelled", D(0), T0)
    assert cancelled.rejections == 0, "a cancel (a newer signal replaced it) is not a refusal"


def test_partly_filled_then_cancelled_exit_ends_when_the_row_already_shows_the_fill():
    sent = decide(position(size="4"), at(Side.LONG, -3), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1").sent_state
    partly = filled(sent, D(1), T0 + timedelta(seconds=1))          # the row: 3 left, the order still working
    assert partly.in_flight
    state, undone = note_order(partly, "s1", "cancelled", D(1), T0)
    assert undone is None and not state.in_flight


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("order_first", [True, False])
def test_ladder_step_ended_with_fills_releases_and_re_decides_the_unfilled_rest(side, order_first):
    """Regression (exit review 6): a step cancelled after a partial fill was released with the
    step marked done, so the unfilled rest of the slice was never closed (until a later step).
    Released once the row shows what the order filled (in either order of order and row), the
    step is open again and closes what the row shows above its target, never more."""
    rules = ExitRules(take_profit=LADDER, cooldown=timedelta(seconds=60))
    sent = decide(position(side, size="10"), at(side, 3), rules, LOT, T0, "s1").sent_state
    assert sent.in_flight[0].quantity == 5
    if order_first:
        state, _ = note_order(sent, "s1", "cancelled", D(2), T0)
        assert state.in_flight, "the row does not show the 2 filled yet"
        state = filled(state, D(2), T0 + timedelta(seconds=2))
    else:
        state = filled(sent, D(2), T0 + timedelta(seconds=2))
        state, _ = note_order(state, "s1", "cancelled", D(2), T0)
    assert not state.in_flight and state.ladder_steps_done == () and state.ladder_base_size == 10
    again = decide(state, at(side, 3), rules, LOT, T0 + timedelta(seconds=3), "s2")
    assert again.decision.reason is ExitReason.TAKE_PROFIT_STEP
    assert (again.decision.quantity, again.decision.rule_params["keep_size"]) == (D(3), "5.0")


@pytest.mark.parametrize("status, filled_qty, row_shows, released", [
    ("cancelled", "2", "2", True),          # the row shows all the order filled
    ("cancelled", "2", "1", False),         # the row lags one of the fills: still in flight
    ("partially_filled", "2", "2", False),  # not ended: more may fill
    ("filled", "5", "5", True),
    ("rejected", "0", "0", True),           # ended with nothing: released by the order alone
])
def test_ended_exit_is_released_when_the_row_shows_its_cumulative_fill(status, filled_qty, row_shows, released):
    """Regression (exit review 6, CONTRACTS §2.2: filled_quantity is cumulative): an ended order
    released its exit as soon as the row showed any decrease, before the row showed all it had
    filled, so the rest was re-decided against a size that still included filled quantity."""
    rules = ExitRules(take_profit=LADDER, cooldown=timedelta(seconds=60))
    sent = decide(position(size="10"), at(Side.LONG, 3), rules, LOT, T0, "s1").sent_state
    state, _ = note_order(sent, "s1", status, D(filled_qty), T0)
    state = filled(state, D(row_shows), T0 + timedelta(seconds=2))
    assert (not state.in_flight) == released


def test_filled_order_keeps_the_exit_in_flight_until_the_row_shows_it():
    sent = decide(position(), at(Side.LONG, -3), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1").sent_state
    state, released = note_order(sent, "s1", "filled", D(2), T0)
    assert released is None and state.in_flight[0].order_status == "filled"
    assert note_order(state, "other", "rejected", D(0), T0) == (state, None)


@pytest.mark.parametrize("side", SIDES)
def test_stop_loss_fires_for_the_remaining_size_while_a_take_profit_slice_is_in_flight(side):
    rules = ExitRules(take_profit=LADDER, stop_loss_pct=D(2), cooldown=timedelta(seconds=60))
    sent = decide(position(side, size="4"), at(side, 3), rules, LOT, T0, "s1").sent_state
    assert sent.in_flight[0].quantity == 2
    trailing_off = decide(sent, at(side, 6), rules, LOT, T0 + timedelta(seconds=5), "s2")
    assert trailing_off.decision is None and trailing_off.held == "in_flight"
    stop = decide(sent, at(side, -2), rules, LOT, T0 + timedelta(seconds=5), "s3")
    assert stop.decision.reason is ExitReason.STOP_LOSS and stop.decision.quantity == 2
    assert len(stop.sent_state.in_flight) == 2
    assert decide(stop.sent_state, at(side, -3), rules, LOT, T0 + timedelta(seconds=6), "s4").decision is None


def test_protective_stop_may_follow_a_take_profit_slice_within_the_cooldown():
    rules = ExitRules(take_profit=LADDER, stop_loss_pct=D(2), cooldown=timedelta(seconds=60))
    first = decide(position(), at(Side.LONG, 3), rules, LOT, T0, "s1")
    state = filled(first.sent_state, D(1), T0 + timedelta(seconds=1))
    assert decide(state, at(Side.LONG, -2), rules, LOT, T0 + timedelta(seconds=10), "s2").decision.quantity == 1


@pytest.mark.parametrize("bad", [D(0), D(-1), D("NaN"), None, "abc", float("inf")])
def test_invalid_prices_are_rejected_with_field_name(bad):
    with pytest.raises(InvalidPositionData) as err:
        decide(position(), bad, ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1")
    assert err.value.field == "price"


def test_naive_now_is_rejected():
    with pytest.raises(InvalidPositionData, match="now"):
        decide(position(), D(100), ExitRules(), LOT, datetime(2024, 1, 1), "s1")


def test_string_prices_from_the_exchange_are_accepted():
    verdict = decide(position(), "97.5", ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1")
    assert verdict.decision.trigger_price == D("97.5")


def test_position_without_row_or_entry_is_not_decided():
    unread = replace(position(), row=None)
    assert decide(unread, D(90), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1").held == "not_ready"
    no_entry = position(entry=None)
    assert decide(no_entry, D(90), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1").held == "not_ready"


@pytest.mark.parametrize("side", SIDES)
def test_decision_metadata(side):
    decision = decide(position(side), at(side, -3), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1").decision
    meta = decision.metadata()
    assert meta["exit_reason"] == "stop_loss" and meta["position_side"] == side.value
    assert (meta["quantity"], meta["position_size"], meta["fraction"], meta["full_close"]) == ("2", "2", "1", True)
    assert (meta["positions_version"], meta["entry_source"]) == (1, "positions_table")
    assert D(meta["amount_usdt"]) == 2 * at(side, -3) and meta["sizing"]["lot_step"] == "0.001"


def test_whole_position_below_the_minimum_order_value_is_not_exited():
    """Regression (issue 8): order-manager raises an order below its minimum order value, which
    for a dust position is more than it holds: the exit would open the reverse side."""
    dust = position(size="0.04")                   # 0.04 x 97 = 3.88 USDT < 5
    verdict = decide(dust, D(97), ExitRules(stop_loss_pct=D(2)), LOT, T0, "s1")
    assert verdict.decision is None and verdict.held == "below_min_order_value"
    assert verdict.state.below_minimum_warned and verdict.fired == (ExitReason.STOP_LOSS,)


def test_ladder_slice_below_the_minimum_is_merged_into_a_full_close():
    """Regression (issue 8): a slice below the minimum order value was raised to it (over-closing)."""
    rules = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(3), D("0.2")), LadderStep(D(5), D(1)))))
    small = position(size="0.2")                   # 20 % of 0.2 = 0.04 x 103 = 4.12 USDT < 5
    decision = decide(small, D(103), rules, LOT, T0, "s1").decision
    assert decision.full_close and decision.quantity == D("0.2")
    assert decision.sizing["merged_into_full_close"] == "slice_below_minimum"


def test_ladder_remainder_below_the_minimum_is_merged_into_a_full_close():
    """Regression (issue 8): the remainder left by a slice could never be closed (dust)."""
    rules = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(3), D("0.9")), LadderStep(D(5), D(1)))))
    decision = decide(position(size="0.4"), D(103), rules, LOT, T0, "s1").decision   # keep 0.04 = 4.12 USDT
    assert decision.full_close and decision.quantity == D("0.4")
    assert decision.sizing["merged_into_full_close"] == "remainder_below_minimum"


@pytest.mark.parametrize("instrument, size, price, quantity", [
    (Instrument(D("0.001"), D("0.001"), D("5")), "0.003", "97123.4", "0.003"),      # BTC-like
    (Instrument(D("1"), D("1"), D("5")), "1234", "0.16213", "1234"),                 # DOGE-like, full
    (Instrument(D("0.01"), D("0.1"), D("5")), "2.57", "140.11", "2.57"),              # step = min(lot, min qty)
])
def test_full_close_is_exactly_the_size_after_order_manager_rounding(instrument, size, price, quantity):
    """Regression (issue 8): the amount was rounded down to the cent, and order-manager's
    amount / price rounded down made 0.003 BTC at 97,123.4 an order for 0.002."""
    decision = decide(position(size=size, entry=D(price) * 2), D(price), ExitRules(stop_loss_pct=D(2)),
                      instrument, T0, "s1").decision
    assert decision.quantity == D(quantity) and decision.full_close
    assert order_manager_quantity(decision.amount, decision.trigger_price, instrument) == D(size)


def test_doge_like_ladder_slice_is_rounded_down_to_whole_coins():
    doge = Instrument(D("1"), D("1"), D("5"))
    rules = ExitRules(take_profit=TakeProfit(steps=(LadderStep(D(3), D("0.333")), LadderStep(D(5), D(1)))))
    decision = decide(position(size="1000", entry=D("0.16")), D("0.1648"), rules, doge, T0, "s1").decision
    assert decision.quantity == 333 and not decision.full_close
    assert order_manager_quantity(decision.amount, D("0.1648"), doge) == 333


def test_exit_amount_never_exceeds_the_held_size():
    check_amount(D("194"), D(2), D(97))
    with pytest.raises(ExitAmountError):
        check_amount(D("194.01"), D(2), D(97))


def test_default_instrument_is_order_managers():
    assert (ORDER_MANAGER_DEFAULTS.lot_size, ORDER_MANAGER_DEFAULTS.min_order_qty,
            ORDER_MANAGER_DEFAULTS.min_order_value) == (D("0.001"), D("0.001"), D(5))


def test_no_rules_no_decision():
    assert decide(position(), D(50), ExitRules(), LOT, T0, "s1").decision is None
