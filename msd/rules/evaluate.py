"""The one exit decision function, shared by the live exits role and by replays.

`should_exit(position, price, state, rules, now)` is pure: it reads no clock and does no I/O. Order
of work, each step documented where it happens:

1. `track`: reset the state if it belongs to another position, follow the exchange's entry price,
   and fold the current price into the peak/trough, so a trailing stop sees this very price.
2. Cooldown: within `rules.cooldown` of the last emitted exit nothing is decided, but the tracked
   state is still returned (the peak keeps moving while we wait).
3. Every enabled rule is evaluated; the winner is the first reason in `rules.priority` that fired.
   The priority is a permutation of all reasons and each rule yields at most one candidate under its
   own reason, so two candidates never share a rank: ties are impossible by construction.
4. The winning exit's USDT amount is computed; below 0.01 USDT there is no decision (dust).
5. Only an emitted decision marks ladder steps done, moves the stop to breakeven and sets
   `last_exit_at`.

Composing with pacing: if the caller decides not to send a returned decision (e.g. the per-asset
rate limit refuses it), it must keep `track(...)`'s state instead of the returned one, otherwise a
ladder step would be marked done without ever being sent.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable

from msd.rules.config import ExitRules
from msd.rules.exit_amount import MIN_AMOUNT_USDT, exit_amount_usdt
from msd.rules.state import initial_state, observe_price, pnl_pct, reset_needed
from msd.rules.types import (
    ExitDecision,
    ExitReason,
    ExitState,
    InvalidPositionData,
    PositionView,
    Side,
    check_aware,
    to_decimal,
)

_ONE = Decimal(1)
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class _Inputs:
    """What every rule looks at, computed once per update."""

    side: Side
    entry: Decimal
    price: Decimal
    pnl: Decimal
    state: ExitState
    position: PositionView
    now: datetime


@dataclass(frozen=True)
class _Candidate:
    reason: ExitReason
    fraction: Decimal
    params: dict[str, object] = field(default_factory=dict)
    steps_done: tuple[int, ...] | None = None  # the ladder's done-set after this exit, if it is a step
    moves_breakeven: bool = False


def _level(base: Decimal, side: Side, pct: Decimal) -> Decimal:
    """The price `pct` percent from `base` in the position's favour (negative pct: against it)."""
    return base * (_ONE + side.sign * pct / _HUNDRED)


def _favourable(side: Side, price: Decimal, level: Decimal) -> bool:
    return price >= level if side is Side.LONG else price <= level


def _adverse(side: Side, price: Decimal, level: Decimal) -> bool:
    return price <= level if side is Side.LONG else price >= level


def _stop_loss(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    if rules.stop_loss_pct is None:
        return None
    level = _level(x.entry, x.side, -rules.stop_loss_pct)
    if not _adverse(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.STOP_LOSS, _ONE,
                      {"stop_loss_pct": str(rules.stop_loss_pct), "threshold_price": str(level)})


def _breakeven_stop(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    # Both must hold: the state remembers the move, the current config decides if it still applies.
    if not (rules.breakeven_after_first_step and x.state.stop_moved_to_breakeven):
        return None
    level = _level(x.entry, x.side, rules.breakeven_fee_pct)
    if not _adverse(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.BREAKEVEN_STOP, _ONE,
                      {"breakeven_fee_pct": str(rules.breakeven_fee_pct), "threshold_price": str(level)})


def _trailing_stop(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    trailing = rules.trailing
    if trailing is None or x.state.highest_pnl_pct < trailing.activation_pct:
        return None
    # The level hangs off the extreme, which only ever improves, so the stop never loosens.
    level = _level(x.state.extreme_price, x.side, -trailing.distance_pct)
    if not _adverse(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.TRAILING_STOP, _ONE, {
        "activation_pct": str(trailing.activation_pct),
        "distance_pct": str(trailing.distance_pct),
        "extreme_price": str(x.state.extreme_price),
        "highest_pnl_pct": str(x.state.highest_pnl_pct),
        "threshold_price": str(level),
    })


def _take_profit(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    tp = rules.take_profit
    if tp is None or tp.pct is None:
        return None
    level = _level(x.entry, x.side, tp.pct)
    if not _favourable(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.TAKE_PROFIT, _ONE, {"take_profit_pct": str(tp.pct), "threshold_price": str(level)})


def _take_profit_step(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    """Fire the highest ladder step reached that is not done yet.

    Thresholds increase, so reaching step k means every earlier step is reached too. A price that
    jumps past several steps fires once, with the highest step's cumulative close, and marks all of
    them done; sending one order for the combined amount beats a burst the cooldown would block.
    `close` is cumulative over the original position, but the decision's fraction is of the current
    size, assuming earlier steps were filled: (close_k - close_done) / (1 - close_done).
    """
    tp = rules.take_profit
    if tp is None or not tp.is_ladder:
        return None
    steps = tp.steps
    # Indices beyond the ladder can appear after a reload shortened it; they are ignored.
    last_done = max((i for i in x.state.ladder_steps_done if i < len(steps)), default=-1)
    reached = [i for i, s in enumerate(steps) if _favourable(x.side, x.price, _level(x.entry, x.side, s.at_pct))]
    top = max(reached, default=-1)
    if top <= last_done:
        return None
    closed = steps[last_done].close if last_done >= 0 else Decimal(0)
    fraction = min(_ONE, (steps[top].close - closed) / (_ONE - closed))
    fired = list(range(last_done + 1, top + 1))
    return _Candidate(
        ExitReason.TAKE_PROFIT_STEP, fraction,
        {"step": top, "steps_fired": fired, "at_pct": str(steps[top].at_pct),
         "close_cumulative": str(steps[top].close), "threshold_price": str(_level(x.entry, x.side, steps[top].at_pct))},
        steps_done=tuple(sorted(set(x.state.ladder_steps_done) | set(range(top + 1)))),
        moves_breakeven=rules.breakeven_after_first_step,
    )


def _time_exit(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    te = rules.time_exit
    if te is None or x.now - x.position.opened_at < te.max_hold:
        return None
    if te.min_profit_pct is not None and x.pnl < te.min_profit_pct:
        return None
    return _Candidate(ExitReason.TIME_EXIT, _ONE, {
        "max_hold_seconds": str(te.max_hold.total_seconds()),
        "min_profit_pct": None if te.min_profit_pct is None else str(te.min_profit_pct),
        "held_seconds": str((x.now - x.position.opened_at).total_seconds()),
    })


_RULES: dict[ExitReason, Callable[[_Inputs, ExitRules], _Candidate | None]] = {
    ExitReason.STOP_LOSS: _stop_loss,
    ExitReason.BREAKEVEN_STOP: _breakeven_stop,
    ExitReason.TRAILING_STOP: _trailing_stop,
    ExitReason.TAKE_PROFIT: _take_profit,
    ExitReason.TAKE_PROFIT_STEP: _take_profit_step,
    ExitReason.TIME_EXIT: _time_exit,
}


def track(position: PositionView, price: Decimal, state: ExitState | None, now: datetime) -> ExitState:
    """Validate the inputs and return the state with `price` observed, starting over if needed.

    `state=None` means no state yet. When the exchange reports a new average entry for the same
    position (it was added to), thresholds follow it: PnL is what the exchange would realise.
    """
    if not isinstance(position, PositionView):
        raise InvalidPositionData("position", position, "a PositionView")
    price = to_decimal("price", price, positive=True)
    check_aware("now", now)
    if state is None or reset_needed(state, position):
        state = initial_state(position, now)
    if state.entry_price != position.entry_price:
        state = replace(state, entry_price=position.entry_price)
    return observe_price(state, position.key.side, price)


def in_cooldown(state: ExitState, rules: ExitRules, now: datetime) -> bool:
    """True while `now` is before `last_exit_at + cooldown` (a clock stepping back counts as inside)."""
    return state.last_exit_at is not None and now < state.last_exit_at + rules.cooldown


def should_exit(
    position: PositionView, price: Decimal, state: ExitState | None, rules: ExitRules, now: datetime
) -> tuple[ExitDecision | None, ExitState]:
    """Decide whether to exit `position` at `price`; return the decision (or None) and the new state.

    Raises InvalidPositionData (a ValueError naming the field) for a missing, NaN or non-positive
    price, a naive `now`, or a position that is not a PositionView; callers log and skip.
    A closed position (size 0) never exits and gets a fresh state, which the caller may drop.
    """
    price = to_decimal("price", price, positive=True)
    tracked = track(position, price, state, now)
    if position.size == 0 or in_cooldown(tracked, rules, now):
        return None, tracked
    x = _Inputs(position.key.side, position.entry_price, price,
                pnl_pct(position.key.side, position.entry_price, price), tracked, position, now)
    fired = [c for c in (_RULES[r](x, rules) for r in rules.priority) if c is not None]
    if not fired:
        return None, tracked
    winner = fired[0]
    amount = exit_amount_usdt(position.size, price, winner.fraction)
    if amount < MIN_AMOUNT_USDT:
        return None, tracked
    decision = ExitDecision(
        key=position.key, reason=winner.reason, fraction=winner.fraction, trigger_price=price,
        entry_price=position.entry_price, pnl_pct=x.pnl, amount_usdt=amount, decided_at=now,
        rule_params=winner.params, also_triggered=tuple(c.reason for c in fired[1:]),
    )
    return decision, _commit(tracked, winner, now)


def _commit(state: ExitState, winner: _Candidate, now: datetime) -> ExitState:
    """State after an emitted exit: remember it for the cooldown, the ladder and the breakeven move."""
    return replace(
        state,
        last_exit_at=now,
        ladder_steps_done=winner.steps_done if winner.steps_done is not None else state.ladder_steps_done,
        stop_moved_to_breakeven=state.stop_moved_to_breakeven or winner.moves_breakeven,
    )
