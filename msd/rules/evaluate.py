"""The one exit decision function, shared by the live exits role and by replays.

`decide(state, price, rules, instrument, now, signal_id)` is pure: it reads no clock and does no
I/O. It returns a `Verdict` that carries everything the caller needs: the decision (or None),
the state to keep if nothing is sent, and the state to keep once the decision is recorded for
sending. Nobody re-runs anything to learn what happened. Order of work:

1. The price is folded into the peak/trough (ticks were folded as they arrived; this one too).
2. Every enabled rule is evaluated; the priority among those that fired is `rules.priority`, a
   permutation of all reasons, so two candidates never tie.
3. Pacing: while an exit is in flight (sent, effect not seen in the positions row yet) nothing
   else is decided, except a stop loss or breakeven stop for the size a take-profit slice in
   flight leaves; within `rules.cooldown` of the last exit nothing is decided either, except
   those protective stops after a take-profit slice.
4. Sizing (`msd.rules.exit_amount`): the quantity is chosen against the size the row shows and
   the instrument's step and minimums, then encoded as an exact USDT amount.
5. Only the sent state marks ladder steps done, moves the stop to breakeven, starts the cooldown
   and records the exit in flight.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable

from msd.rules.config import ExitRules
from msd.rules.exit_amount import check_amount, encode_amount, size_exit
from msd.rules.state import fold_price, pnl_pct, start_flight
from msd.rules.types import (
    PROTECTIVE, ExitDecision, ExitReason, ExitState, InFlight, Instrument, InvalidPositionData, Side, check_aware,
    to_decimal,
)

_ONE = Decimal(1)
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Verdict:
    """What one evaluation of one position came to.

    `state`: keep it when nothing is sent (the price is folded in, nothing is committed).
    `sent_state`: keep it once `decision` is recorded for sending (ladder, cooldown, in flight).
    `held`: a rule fired but gave no decision, and why: in_flight, cooldown, rejection_backoff,
    below_min_order_value, slice_overlaps_in_flight, not_ready.
    """

    decision: ExitDecision | None
    state: ExitState
    sent_state: ExitState | None = None
    held: str | None = None
    fired: tuple[ExitReason, ...] = ()


@dataclass(frozen=True)
class _Inputs:
    """What every rule looks at, computed once per evaluation."""

    side: Side
    entry: Decimal
    price: Decimal
    pnl: Decimal
    size: Decimal
    state: ExitState
    now: datetime


@dataclass(frozen=True)
class _Candidate:
    reason: ExitReason
    wanted: Decimal                                  # base units to close
    params: dict[str, object] = field(default_factory=dict)
    steps_done: tuple[int, ...] | None = None        # the ladder's done-set after this exit, if it is a step
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
    return _Candidate(ExitReason.STOP_LOSS, x.size,
                      {"stop_loss_pct": str(rules.stop_loss_pct), "threshold_price": str(level)})


def _breakeven_stop(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    # Both must hold: the state remembers the move, the current config decides if it still applies.
    if not (rules.breakeven_after_first_step and x.state.stop_moved_to_breakeven):
        return None
    level = _level(x.entry, x.side, rules.breakeven_fee_pct)
    if not _adverse(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.BREAKEVEN_STOP, x.size,
                      {"breakeven_fee_pct": str(rules.breakeven_fee_pct), "threshold_price": str(level)})


def _trailing_stop(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    trailing = rules.trailing
    if trailing is None or x.state.highest_pnl_pct < trailing.activation_pct:
        return None
    # The level hangs off the extreme, which only ever improves, so the stop never loosens.
    level = _level(x.state.extreme_price, x.side, -trailing.distance_pct)
    if not _adverse(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.TRAILING_STOP, x.size, {
        "activation_pct": str(trailing.activation_pct), "distance_pct": str(trailing.distance_pct),
        "extreme_price": str(x.state.extreme_price), "highest_pnl_pct": str(x.state.highest_pnl_pct),
        "threshold_price": str(level),
    })


def _take_profit(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    tp = rules.take_profit
    if tp is None or tp.pct is None:
        return None
    level = _level(x.entry, x.side, tp.pct)
    if not _favourable(x.side, x.price, level):
        return None
    return _Candidate(ExitReason.TAKE_PROFIT, x.size, {"take_profit_pct": str(tp.pct), "threshold_price": str(level)})


def _take_profit_step(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    """Fire the highest ladder step reached that is not done yet.

    Thresholds increase, so reaching step k means every earlier step is reached too: a price that
    jumps past several steps fires once, with the highest step's cumulative close. `close` is
    cumulative over the size when the ladder started (`ladder_base_size`); the step closes what the
    row shows above base x (1 - close), so a slice that filled only partly is made good, never doubled.
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
    base = x.state.ladder_base_size or x.size
    keep = base * (_ONE - steps[top].close)
    return _Candidate(
        ExitReason.TAKE_PROFIT_STEP, x.size - keep,
        {"step": top, "steps_fired": list(range(last_done + 1, top + 1)), "at_pct": str(steps[top].at_pct),
         "close_cumulative": str(steps[top].close), "ladder_base_size": str(base), "keep_size": str(keep),
         "threshold_price": str(_level(x.entry, x.side, steps[top].at_pct))},
        steps_done=tuple(sorted(set(x.state.ladder_steps_done) | set(range(top + 1)))),
        moves_breakeven=rules.breakeven_after_first_step,
    )


def _time_exit(x: _Inputs, rules: ExitRules) -> _Candidate | None:
    te = rules.time_exit
    held = x.now - x.state.opened_at
    if te is None or held < te.max_hold or x.pnl < te.min_profit_pct:
        return None
    return _Candidate(ExitReason.TIME_EXIT, x.size, {
        "max_hold_seconds": str(te.max_hold.total_seconds()), "min_profit_pct": str(te.min_profit_pct),
        "held_seconds": str(held.total_seconds()), "opened_at": x.state.opened_at.isoformat(),
        "opened_by": x.state.opened_by,
    })


_RULES: dict[ExitReason, Callable[[_Inputs, ExitRules], _Candidate | None]] = {
    ExitReason.STOP_LOSS: _stop_loss,
    ExitReason.BREAKEVEN_STOP: _breakeven_stop,
    ExitReason.TRAILING_STOP: _trailing_stop,
    ExitReason.TAKE_PROFIT: _take_profit,
    ExitReason.TAKE_PROFIT_STEP: _take_profit_step,
    ExitReason.TIME_EXIT: _time_exit,
}


def decide(state: ExitState, price: Decimal, rules: ExitRules, instrument: Instrument, now: datetime,
           signal_id: str, *, price_at: datetime | None = None) -> Verdict:
    """Decide whether to exit the position `state` describes at `price` (module doc).

    `price_at` is when the price was traded or quoted (default `now`): a price from before the
    position opened is still the latest known and is judged, but never folded into the peak.

    Raises InvalidPositionData (a ValueError naming the field) for a missing, NaN or non-positive
    price or a naive `now`; ExitAmountError if an amount would exceed the held size (a bug).
    """
    if not isinstance(state, ExitState):
        raise InvalidPositionData("state", state, "an ExitState")
    price = to_decimal("price", price, positive=True)
    check_aware("now", now)
    state = fold_price(state, price, now if price_at is None else price_at)
    if not state.ready:
        return Verdict(None, state, held="not_ready")
    x = _Inputs(state.side, state.entry_price, price, pnl_pct(state.side, state.entry_price, price),
                state.size, state, now)
    fired = [c for c in (_RULES[r](x, rules) for r in rules.priority) if c is not None]
    reasons = tuple(c.reason for c in fired)
    if not fired:
        return Verdict(None, state)
    allowed, cap, pacing = _allowed(state, rules, now)
    usable = [c for c in fired if c.reason in allowed]
    if not usable:
        return Verdict(None, state, held=pacing, fired=reasons)
    winner = usable[0]
    if winner.wanted <= 0:
        # The row already shows this step's size (an earlier slice closed more): nothing to send.
        return Verdict(None, _commit(state, winner, now, sent=False), fired=reasons)
    sizing = size_exit(winner.wanted, state.size, price, instrument, cap=cap)
    if sizing.held is not None:
        flagged = replace(state, below_minimum_warned=True) if sizing.held == "below_min_order_value" else state
        return Verdict(None, flagged, held=sizing.held, fired=reasons)
    amount = encode_amount(sizing.quantity, price, instrument)
    check_amount(amount, state.size, price)
    decision = ExitDecision(
        key=state.key, reason=winner.reason, quantity=sizing.quantity, full_close=sizing.full_close,
        amount=amount, trigger_price=price, entry_price=state.entry_price, entry_source=state.entry_source,
        pnl_pct=x.pnl, row_size=state.size, decided_version=state.row.version, decided_at=now,
        opened_at=state.opened_at, rule_params=winner.params, sizing=sizing.notes,
        also_triggered=tuple(c.reason for c in fired if c is not winner))
    flight = InFlight(signal_id, winner.reason, sizing.quantity, state.row.version, state.size,
                      state.row.last_updated, now)
    return Verdict(decision, state, start_flight(state, flight, _commit(state, winner, now, sent=True)),
                   fired=reasons)


def _allowed(state: ExitState, rules: ExitRules, now: datetime) -> tuple[frozenset[ExitReason], Decimal | None, str]:
    """Which reasons may decide now, the most a decision may close, and what holds the others."""
    everything = frozenset(ExitReason)
    flights = state.in_flight
    if any(f.reason is not ExitReason.TAKE_PROFIT_STEP for f in flights):
        return frozenset(), None, "in_flight"
    if state.retry_at is not None and now < state.retry_at:
        return frozenset(), None, "rejection_backoff"       # refused more than once in a row
    allowed, cap, pacing = everything, None, "in_flight"
    if flights:
        # The slices may fill: a stop closes only what they leave, as the row showed it then.
        allowed = PROTECTIVE
        cap = min(f.decided_size - f.quantity for f in flights)
    if state.last_exit_at is not None and now < state.last_exit_at + rules.cooldown:
        pacing = "cooldown" if not flights else pacing
        allowed = allowed & PROTECTIVE if state.last_exit_reason is ExitReason.TAKE_PROFIT_STEP else frozenset()
    return allowed, cap, pacing


def _commit(state: ExitState, winner: _Candidate, now: datetime, *, sent: bool) -> ExitState:
    """The state after `winner`: ladder steps done (with the base size they count from), the stop
    moved to breakeven, and, for an exit that is sent, the cooldown start."""
    if winner.steps_done is not None:
        state = replace(state, ladder_steps_done=winner.steps_done,
                        ladder_base_size=state.ladder_base_size or state.size,
                        stop_moved_to_breakeven=state.stop_moved_to_breakeven or winner.moves_breakeven)
    if sent:
        state = replace(state, last_exit_at=now, last_exit_reason=winner.reason)
    return state
