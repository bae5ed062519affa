"""should_exit: every rule for longs and shorts, priority, cooldown, ladder bookkeeping, bad input."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import (
    ExitReason,
    ExitRules,
    InvalidPositionData,
    LadderStep,
    PositionKey,
    PositionView,
    Side,
    TakeProfit,
    TimeExit,
    Trailing,
    initial_state,
    should_exit,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
ENTRY = D("100")
SIDES = [Side.LONG, Side.SHORT]


def at(side: Side, pnl_pct) -> D:
    """The price at which a position of `side` entered at ENTRY shows `pnl_pct` percent PnL."""
    return ENTRY * (1 + side.sign * D(str(pnl_pct)) / 100)


def position(side: Side, position_id="p1", size=D("2"), opened_at=T0, asset="BTCUSDT") -> PositionView:
    return PositionView(PositionKey(asset, side, position_id), size, ENTRY, opened_at)


def run(pos, rules, pnls, start=T0, step=timedelta(seconds=61), state=None):
    """Feed prices at the given PnLs, one per `step` (longer than the cooldown by default)."""
    decisions = []
    for i, pnl in enumerate(pnls):
        decision, state = should_exit(pos, at(pos.key.side, pnl), state, rules, start + i * step)
        decisions.append(decision)
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
        assert decision.reason is ExitReason.TAKE_PROFIT
        assert decision.fraction == 1
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
    assert (first.rule_params["step"], first.fraction) == (0, D("0.5"))
    # Step 2 closes the cumulative 1.0: all of what is left after step 1 closed half.
    assert (second.rule_params["step"], second.fraction) == (1, D(1))
    assert state.ladder_steps_done == (0, 1)


@pytest.mark.parametrize("side", SIDES)
def test_ladder_jump_over_two_steps_fires_highest_cumulative_once(side):
    rules = ExitRules(take_profit=LADDER3)
    decisions, state = run(position(side), rules, [1, "4.5", 5])
    assert reasons(decisions) == [None, ExitReason.TAKE_PROFIT_STEP, None]
    jump = decisions[1]
    assert jump.rule_params["step"] == 1 and jump.rule_params["steps_fired"] == [0, 1]
    assert jump.fraction == D("0.6")
    assert state.ladder_steps_done == (0, 1)
    # The last step then closes 0.9 - 0.6 of the original, i.e. 0.3 / 0.4 of what remains.
    (last,), state = run(position(side), rules, [6], start=T0 + timedelta(hours=1), state=state)
    assert last.fraction == D("0.75") and state.ladder_steps_done == (0, 1, 2)


@pytest.mark.parametrize("side", SIDES)
def test_breakeven_move_then_back_to_entry_exits_with_breakeven_stop(side):
    rules = ExitRules(take_profit=LADDER, breakeven_after_first_step=True, breakeven_fee_pct=D("0.1"))
    decisions, state = run(position(side), rules, [3, 1, "0.1"])
    assert reasons(decisions) == [ExitReason.TAKE_PROFIT_STEP, None, ExitReason.BREAKEVEN_STOP]
    assert state.stop_moved_to_breakeven
    assert decisions[2].fraction == 1
    assert decisions[2].rule_params["threshold_price"] == str(at(side, "0.1"))


@pytest.mark.parametrize("side", SIDES)
def test_no_breakeven_stop_before_first_step_or_when_disabled(side):
    with_be = ExitRules(take_profit=LADDER, breakeven_after_first_step=True)
    assert reasons(run(position(side), with_be, [1, 0, -1])[0]) == [None, None, None]
    without = ExitRules(take_profit=LADDER)
    assert reasons(run(position(side), without, [3, 0, -1])[0]) == [ExitReason.TAKE_PROFIT_STEP, None, None]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("pnl, fires", [("-1.99", False), ("-2", True), ("-9", True), ("5", False)])
def test_stop_loss(side, pnl, fires):
    (decision,), _ = run(position(side), ExitRules(stop_loss_pct=D(2)), [pnl])
    assert (decision is not None) == fires
    if fires:
        assert (decision.reason, decision.fraction, decision.pnl_pct) == (ExitReason.STOP_LOSS, 1, D(pnl))
        assert decision.side_to_send == side.closing_side


TRAIL = ExitRules(trailing=Trailing(activation_pct=D(2), distance_pct=D(1)))


@pytest.mark.parametrize("side", SIDES)
def test_trailing_not_armed_below_activation(side):
    # Peak at +1.5 % then a 2 % retrace: below activation, so no exit however far it falls back.
    assert reasons(run(position(side), TRAIL, [1, "1.5", "-0.5", -3])[0]) == [None] * 4


@pytest.mark.parametrize("side", SIDES)
def test_trailing_activation_then_trigger(side):
    extreme = at(side, 4)  # 104 for the long, 96 for the short
    trigger = extreme * (1 - side.sign * D("0.01"))  # 1 % back from the extreme
    pos, state = position(side), None
    for price, expected in [(at(side, 2), None), (extreme, None), (trigger + side.sign * D("0.01"), None),
                            (trigger, ExitReason.TRAILING_STOP)]:
        decision, state = should_exit(pos, price, state, TRAIL, T0)
        assert (decision.reason if decision else None) is expected
    assert state.extreme_price == extreme
    assert decision.rule_params["threshold_price"] == str(trigger)


@pytest.mark.parametrize("side", SIDES)
def test_trailing_never_loosens_when_price_falls_back(side):
    """After the peak (long) / trough (short) the stop stays where the extreme put it."""
    pos, state = position(side), None
    for pnl in [3, 6, "5.5", 4, "5.1"]:
        decision, state = should_exit(pos, at(side, pnl), state, TRAIL, T0)
        if decision:
            break
    assert state.extreme_price == at(side, 6)
    # 6 % extreme with a 1 % distance: 104.94 (long) / 95.06 (short); +4 % is beyond it.
    assert decision is not None and decision.trigger_price == at(side, 4)
    assert decision.rule_params["extreme_price"] == str(at(side, 6))


@pytest.mark.parametrize("side", SIDES)
def test_trailing_peak_includes_current_price(side):
    pos = position(side)
    _, state = should_exit(pos, at(side, 3), None, TRAIL, T0)
    assert state.extreme_price == at(side, 3) and state.highest_pnl_pct == 3


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("held, pnl, min_profit, fires", [
    (timedelta(hours=1), "-1", None, True),
    (timedelta(minutes=59), "5", None, False),
    (timedelta(hours=2), "0.4", D("0.5"), False),
    (timedelta(hours=2), "0.5", D("0.5"), True),
    (timedelta(hours=2), "-0.5", D("-1"), True),
])
def test_time_exit(side, held, pnl, min_profit, fires):
    rules = ExitRules(time_exit=TimeExit(max_hold=timedelta(hours=1), min_profit_pct=min_profit))
    decision, _ = should_exit(position(side), at(side, pnl), None, rules, T0 + held)
    assert (decision is not None) == fires
    if fires:
        assert decision.reason is ExitReason.TIME_EXIT and decision.fraction == 1


@pytest.mark.parametrize("side", SIDES)
def test_priority_stop_loss_beats_time_exit(side):
    rules = ExitRules(stop_loss_pct=D(2), time_exit=TimeExit(max_hold=timedelta(hours=1)))
    decision, _ = should_exit(position(side), at(side, -3), None, rules, T0 + timedelta(hours=2))
    assert decision.reason is ExitReason.STOP_LOSS
    assert decision.also_triggered == (ExitReason.TIME_EXIT,)


@pytest.mark.parametrize("side", SIDES)
def test_priority_is_data(side):
    order = (ExitReason.TIME_EXIT,) + tuple(r for r in ExitReason if r is not ExitReason.TIME_EXIT)
    rules = ExitRules(stop_loss_pct=D(2), time_exit=TimeExit(max_hold=timedelta(hours=1)), priority=order)
    decision, _ = should_exit(position(side), at(side, -3), None, rules, T0 + timedelta(hours=2))
    assert decision.reason is ExitReason.TIME_EXIT and decision.also_triggered == (ExitReason.STOP_LOSS,)


@pytest.mark.parametrize("side", SIDES)
def test_trailing_beats_take_profit_step_on_the_same_price(side):
    rules = ExitRules(take_profit=LADDER3, trailing=Trailing(activation_pct=D(1), distance_pct=D(1)))
    # Step 0 fires at +2 %; +8 % arrives inside the cooldown (no exit, extreme moves); then at
    # +5.5 % both the trailing stop (1 % off +8 %) and the pending step 1 (+4 %) are true.
    times = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=70)]
    decisions, state = [], None
    for pnl, now in zip([2, 8, "5.5"], times):
        decision, state = should_exit(position(side), at(side, pnl), state, rules, now)
        decisions.append(decision)
    assert reasons(decisions) == [ExitReason.TAKE_PROFIT_STEP, None, ExitReason.TRAILING_STOP]
    assert decisions[2].also_triggered == (ExitReason.TAKE_PROFIT_STEP,)
    assert state.ladder_steps_done == (0,)  # the losing candidate marks nothing


@pytest.mark.parametrize("side", SIDES)
def test_cooldown_suppresses_second_decision_but_state_still_tracks_extreme(side):
    rules = ExitRules(stop_loss_pct=D(2), cooldown=timedelta(seconds=60))
    pos = position(side)
    first, state = should_exit(pos, at(side, -3), None, rules, T0)
    assert first is not None and state.last_exit_at == T0
    # A best price arrives inside the cooldown: no decision, but the extreme moves.
    again, state = should_exit(pos, at(side, 5), state, rules, T0 + timedelta(seconds=30))
    assert again is None and state.extreme_price == at(side, 5)
    again, state = should_exit(pos, at(side, -3), state, rules, T0 + timedelta(seconds=59))
    assert again is None and state.last_exit_at == T0
    later, state = should_exit(pos, at(side, -3), state, rules, T0 + timedelta(seconds=60))
    assert later is not None and state.last_exit_at == T0 + timedelta(seconds=60)


@pytest.mark.parametrize("side", SIDES)
def test_cooldown_does_not_mark_ladder_steps(side):
    rules = ExitRules(take_profit=LADDER)
    decisions, state = run(position(side), rules, [3, 5], step=timedelta(seconds=10))
    assert reasons(decisions) == [ExitReason.TAKE_PROFIT_STEP, None]
    assert state.ladder_steps_done == (0,)
    (later,), state = run(position(side), rules, [5], start=T0 + timedelta(seconds=70), state=state)
    assert later.rule_params["step"] == 1 and state.ladder_steps_done == (0, 1)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("bad", [D(0), D(-5), D("NaN"), None, float("nan"), "abc", D("Infinity"), True])
def test_invalid_prices_are_rejected_with_field_name(side, bad):
    with pytest.raises(InvalidPositionData) as err:
        should_exit(position(side), bad, None, ExitRules(stop_loss_pct=D(2)), T0)
    assert err.value.field == "price"


@pytest.mark.parametrize("name, kwargs", [
    ("entry_price", {"entry_price": D(0)}),
    ("entry_price", {"entry_price": None}),
    ("entry_price", {"entry_price": D("NaN")}),
    ("size", {"size": D(-1)}),
    ("size", {"size": None}),
    ("opened_at", {"opened_at": datetime(2024, 1, 1)}),
])
def test_invalid_position_fields_are_rejected_with_field_name(name, kwargs):
    fields = {"key": PositionKey("BTCUSDT", Side.LONG, "p1"), "size": D(1), "entry_price": ENTRY, "opened_at": T0}
    with pytest.raises(InvalidPositionData) as err:
        PositionView(**{**fields, **kwargs})
    assert err.value.field == name and isinstance(err.value, ValueError)


def test_naive_now_is_rejected():
    with pytest.raises(InvalidPositionData) as err:
        should_exit(position(Side.LONG), D(100), None, ExitRules(), datetime(2024, 1, 1))
    assert err.value.field == "now"


def test_string_prices_from_the_exchange_are_accepted():
    decision, _ = should_exit(position(Side.LONG), "97.5", None, ExitRules(stop_loss_pct=D(2)), T0)
    assert decision.trigger_price == D("97.5")


@pytest.mark.parametrize("side", SIDES)
def test_new_position_does_not_inherit_old_peak(side):
    """Regression: state keyed by asset let a new position on the same asset inherit the old peak,
    so its trailing stop fired at once. Same asset, new id: fresh extreme, no exit."""
    rules = ExitRules(trailing=Trailing(activation_pct=D(1), distance_pct=D(1)))
    old = position(side, position_id="p1")
    _, old_state = run(old, rules, [1, 10])
    assert old_state.extreme_price == at(side, 10)
    new = position(side, position_id="p2", opened_at=T0 + timedelta(hours=1))
    decision, state = should_exit(new, at(side, 5), old_state, rules, T0 + timedelta(hours=1))
    assert decision is None
    assert state.key == new.key and state.extreme_price == at(side, 5) and state.last_exit_at is None


@pytest.mark.parametrize("change", [
    {"position_id": "p2"},
    {"opened_at": T0 + timedelta(minutes=5)},
])
@pytest.mark.parametrize("side", SIDES)
def test_reset_on_new_identity_clears_ladder_and_cooldown(side, change):
    rules = ExitRules(take_profit=LADDER)
    (first,), state = run(position(side), rules, [3])
    assert state.ladder_steps_done == (0,)
    reopened = position(side, **change)
    again, state = should_exit(reopened, at(side, 3), state, rules, T0 + timedelta(seconds=10))
    assert again is not None and again.rule_params["step"] == 0  # not blocked by the old cooldown


def test_side_flip_resets_state():
    rules = ExitRules(trailing=Trailing(activation_pct=D(1), distance_pct=D(1)))
    _, long_state = run(position(Side.LONG), rules, [10])  # long peak 110
    short = position(Side.SHORT)  # same asset and id, now short
    decision, state = should_exit(short, D(105), long_state, rules, T0 + timedelta(minutes=5))
    assert decision is None
    assert state.key.side is Side.SHORT and state.extreme_price == ENTRY and state.highest_pnl_pct == 0


def test_closed_position_never_exits_and_starts_over():
    rules = ExitRules(stop_loss_pct=D(2))
    _, state = run(position(Side.LONG), rules, [10])
    decision, fresh = should_exit(position(Side.LONG, size=D(0)), D(50), state, rules, T0)
    assert decision is None and fresh.extreme_price == ENTRY and fresh.ladder_steps_done == ()


def test_added_position_follows_new_entry_but_keeps_peak():
    rules = ExitRules(take_profit=TakeProfit(pct=D(10)))
    _, state = run(position(Side.LONG), rules, [5])
    averaged = replace(position(Side.LONG), entry_price=D(90))
    decision, state = should_exit(averaged, D(99), state, rules, T0 + timedelta(minutes=5))
    assert decision.reason is ExitReason.TAKE_PROFIT and decision.entry_price == D(90)
    assert state.entry_price == D(90) and state.extreme_price == D(105)


@pytest.mark.parametrize("side", SIDES)
def test_decision_metadata_and_amount(side):
    (decision,), _ = run(position(side, size=D("0.5")), ExitRules(take_profit=LADDER), [3])
    meta = decision.metadata()
    assert meta["exit_reason"] == "take_profit_step" and meta["position_id"] == "p1"
    assert meta["fraction"] == "0.5" and meta["entry_price"] == "100"
    assert meta["trigger_price"] == str(at(side, 3)) and D(meta["pnl_pct"]) == 3
    # USDT notional of the quarter BTC being closed, not 0.25 (base units).
    assert decision.amount_usdt == (D("0.25") * at(side, 3)).quantize(D("0.01"))


def test_dust_position_gives_no_decision_and_keeps_ladder_open():
    rules = ExitRules(take_profit=LADDER)
    dust = position(Side.LONG, size=D("0.00001"))
    decision, state = should_exit(dust, at(Side.LONG, 3), None, rules, T0)
    assert decision is None and state.ladder_steps_done == () and state.last_exit_at is None


def test_no_rules_no_decision():
    decision, state = should_exit(position(Side.LONG), D(1), initial_state(position(Side.LONG), T0), ExitRules(), T0)
    assert decision is None and state.extreme_price == ENTRY
