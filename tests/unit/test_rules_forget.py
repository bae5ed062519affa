"""forget_exits(): an exit that expired in the outbox (never sent) is forgotten as if never decided.

The states are built the way the role builds them: a position from its row (`note_row`), exits
from `decide` (its `sent_state` is what the role keeps once the signal is recorded).
"""
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import (
    ExitReason, ExitRules, Instrument, LadderStep, RowFacts, Side, TakeProfit, decide, forget_exits, note_order,
    note_row,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
LOT = Instrument(D("0.001"), D("0.001"), D("5"))
LADDER = TakeProfit(steps=(LadderStep(D(3), D("0.5")), LadderStep(D(5), D(1))))
RULES = ExitRules(take_profit=LADDER, breakeven_after_first_step=True, stop_loss_pct=D(2),
                  cooldown=timedelta(seconds=60))
# What an exit marks, and so what forgetting it must give back.
MARKS = ("ladder_steps_done", "ladder_base_size", "stop_moved_to_breakeven", "last_exit_at", "last_exit_reason",
         "in_flight")


def at(side, pnl_pct):
    return D(100) * (1 + side.sign * D(str(pnl_pct)) / 100)


def position(side, size="2"):
    return note_row(None, RowFacts("p1", "BTCUSDT", D(size) * side.sign, D(100), None, 1, T0), T0).state


def marks(state):
    return {name: getattr(state, name) for name in MARKS}


def sent(state, pnl, seconds, signal_id, reason):
    verdict = decide(state, at(state.side, pnl), RULES, LOT, T0 + timedelta(seconds=seconds), signal_id)
    assert verdict.decision is not None and verdict.decision.reason is reason, verdict
    return verdict.sent_state


def scenario(side, name):
    """(state before any exit, state with the exits in flight) for one named history."""
    before = position(side)
    if name == "take_profit_step":
        return before, sent(before, 3, 1, "tp", ExitReason.TAKE_PROFIT_STEP)
    if name == "stop_loss":
        return before, sent(before, -3, 1, "sl", ExitReason.STOP_LOSS)
    if name == "step_then_protective_stop":     # a stop for what the slice in flight leaves (issue 8)
        step = sent(before, 3, 1, "tp", ExitReason.TAKE_PROFIT_STEP)
        return before, sent(step, -3, 2, "sl", ExitReason.STOP_LOSS)
    raise ValueError(name)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
@pytest.mark.parametrize("name, forget, kept", [
    ("take_profit_step", {"tp"}, ()),
    ("stop_loss", {"sl"}, ()),
    ("step_then_protective_stop", {"tp", "sl"}, ()),
    ("step_then_protective_stop", {"sl"}, ("tp",)),
    ("step_then_protective_stop", {"tp"}, ("sl",)),
    ("take_profit_step", {"unknown"}, ("tp",)),
    ("take_profit_step", set(), ("tp",)),
])
def test_forgotten_exits_leave_the_flight_and_give_back_what_they_marked(side, name, forget, kept):
    before, flying = scenario(side, name)
    state, forgotten = forget_exits(flying, forget)
    assert [f.signal_id for f in state.in_flight] == list(kept)
    assert [f.signal_id for f in forgotten] == [f.signal_id for f in flying.in_flight if f.signal_id in forget]
    assert state.extreme_price == flying.extreme_price          # prices seen stay seen
    if not kept:
        assert marks(state) == marks(before)
    if "tp" in forget:
        assert state.ladder_steps_done == () and state.ladder_base_size is None
        assert not state.stop_moved_to_breakeven
    if not forget & {"tp", "sl"}:
        assert state == flying


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_forgetting_in_any_order_comes_to_the_same_state(side):
    before, flying = scenario(side, "step_then_protective_stop")
    together, _ = forget_exits(flying, {"tp", "sl"})
    step_first, _ = forget_exits(forget_exits(flying, {"tp"})[0], {"sl"})
    stop_first, _ = forget_exits(forget_exits(flying, {"sl"})[0], {"tp"})
    assert together == step_first == stop_first
    assert marks(together) == marks(before)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_a_kept_stop_rejected_after_its_step_was_forgotten_gives_back_the_state_before_both(side):
    """The stop was decided after the step: what it gives back on a rejection included the step."""
    before, flying = scenario(side, "step_then_protective_stop")
    state, _ = forget_exits(flying, {"tp"})
    rejected, released = note_order(state, "sl", "rejected", D(0), T0 + timedelta(seconds=90))
    assert released.signal_id == "sl"
    assert marks(rejected) == marks(before)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_a_forgotten_step_is_decided_again_at_the_same_price_and_not_at_a_price_that_moved_back(side):
    before, flying = scenario(side, "take_profit_step")
    state, _ = forget_exits(flying, {"tp"})
    again = decide(state, at(side, 3), RULES, LOT, T0 + timedelta(seconds=70), "tp2")
    assert again.decision.reason is ExitReason.TAKE_PROFIT_STEP and again.decision.quantity == 1
    moved_back = decide(state, at(side, 1), RULES, LOT, T0 + timedelta(seconds=70), "none")
    assert moved_back.decision is None
    # Not forgotten, the unsent step would still have moved the stop to breakeven, which fires here.
    stale = decide(flying, at(side, "0.05"), RULES, LOT, T0 + timedelta(seconds=70), "x")
    assert stale.decision.reason is ExitReason.BREAKEVEN_STOP
    assert decide(state, at(side, "0.05"), RULES, LOT, T0 + timedelta(seconds=70), "y").decision is None
