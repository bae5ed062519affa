"""A position's life as msd sees it: identity, prices folded in, and exits in flight (pure).

Facts arrive from three places and each has its function here; `msd.rules.evaluate.decide` then
reads the state they built:

- `note_row`: a read of the `positions` row, the only source of size, side and entry. Events
  are older than the row, out of order or simply wrong (CONTRACTS §3.5): an event only makes the
  role read the row, it never changes a state itself. A side change, a `closed_at` later than the
  previous row (websocket path), or a zero crossing in the fills between two reads
  (`closed_between`) starts a new position.
- `fold_price` / `fold_bar`: every tick and every closed 1-minute bar moves the extreme when it
  arrives, so the trailing stop hangs off the true peak, not the price at decision time.
- `note_order` / `note_stalls`: the outcome of an exit's own order and the in-flight timeout.
- `forget_exits`: exits decided but never sent (they expired in the outbox) are undone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Collection, Mapping

from msd.rules.types import (
    ExitReason, ExitState, InFlight, PositionKey, RowFacts, Side, check_aware, parse_time, to_decimal,
)

_HUNDRED = Decimal(100)
# An exit whose order ended with nothing filled changed nothing: a new decision may follow at once.
UNFILLED_ENDINGS = frozenset({"rejected", "cancelled", "dry_run"})
ENDED = UNFILLED_ENDINGS | {"filled"}
# order-manager refused it (CONTRACTS §1.3: risk limits, exchange errors; dry-run mode never fills).
# The first refusal is decided again at once; a refusal that repeats would loop, so each further
# one in a row doubles the wait before the next decision, up to REJECTION_BACKOFF_CAP.
REFUSALS = frozenset({"rejected", "dry_run"})
REJECTION_BACKOFF_BASE = timedelta(seconds=5)
REJECTION_BACKOFF_CAP = timedelta(minutes=5)


def rejection_backoff(rejections: int) -> timedelta:
    """The wait after the `rejections`-th refusal in a row: 0, 5 s, 10 s, 20 s ... at most 5 min."""
    if rejections <= 1:
        return timedelta(0)
    return min(REJECTION_BACKOFF_BASE * 2 ** min(rejections - 2, 16), REJECTION_BACKOFF_CAP)


def pnl_pct(side: Side, entry_price: Decimal, price: Decimal) -> Decimal:
    """Unrealised PnL in percent of entry, positive in profit: long (p - e) / e * 100, short (e - p) / e * 100."""
    return (price - entry_price) * side.sign / entry_price * _HUNDRED


def better(side: Side, price: Decimal, than: Decimal | None) -> bool:
    return than is None or (price > than if side is Side.LONG else price < than)


def new_position(key: PositionKey, opened_at: datetime, opened_by: str) -> ExitState:
    """A position msd has just seen open; the row fills in size and entry (`note_row`)."""
    return ExitState(key=key, opened_at=check_aware("opened_at", opened_at), opened_by=opened_by)


def fold_price(state: ExitState, price: Decimal, at: datetime) -> ExitState:
    """Fold one price, traded or quoted at `at`, into the peak (long) or trough (short) and the
    running highest PnL.

    Only prices at or after the position's open count: a tick from before it (a late delivery, a
    quiet market's last trade) is another position's price, and folded in it would arm a trailing
    stop from a peak this position never had. `highest_pnl_pct` is a running maximum, so a
    trailing stop once armed stays armed even if the exchange later reports a different entry.
    """
    price = to_decimal("price", price, positive=True)
    if check_aware("price time", at) < state.opened_at:
        return state
    extreme = price if better(state.side, price, state.extreme_price) else state.extreme_price
    highest = state.highest_pnl_pct
    if state.entry_price is not None:
        highest = max(highest, pnl_pct(state.side, state.entry_price, price))
    if extreme == state.extreme_price and highest == state.highest_pnl_pct:
        return state
    return replace(state, extreme_price=extreme, highest_pnl_pct=highest)


def fold_bar(state: ExitState, high: Decimal, low: Decimal, bar_start: datetime) -> ExitState:
    """A closed 1-minute bar: its high (long) or low (short) is a price the market traded.

    A bar that began before msd saw the position open may hold prices from before it: left out.
    """
    if check_aware("bar_start", bar_start) < state.opened_at:
        return state
    return fold_price(state, high if state.side is Side.LONG else low, bar_start)


# --- rows -----------------------------------------------------------------------------------------

def row_order(row: RowFacts) -> tuple[int, datetime]:
    """Which of two reads of a row is newer: position-manager bumps `version` on every write (and
    sets `last_updated`, which breaks a tie if a writer ever forgot the version)."""
    return row.version, row.last_updated


@dataclass(frozen=True)
class RowOutcome:
    """`state` is None when the row is flat; `change` is one of: opened (first seen from the table),
    confirmed (an event-seen position read for the first time), same, new_position (a close, flip
    or reopen since the previous row), closed, old_row (a read older than one already applied)."""
    state: ExitState | None
    change: str
    released: tuple[InFlight, ...] = ()     # exits in flight whose effect this row shows


def note_row(state: ExitState | None, row: RowFacts, now: datetime, *, closed_between: bool = False,
             fill_entry: Decimal | None = None, seen_by: str = "table") -> RowOutcome:
    """Apply one read of the position's row, the only source of its size, side and entry.

    A new position starts when the row shows the other side (a flip is one write, CONTRACTS
    §3.5), a `closed_at` later than the previous row (a websocket-path close, never reset on
    reopen), or `closed_between`: the fills since the previous row crossed zero (a close and a
    reopen msd did not read in between, one debounce window or a restart apart). A row whose
    version did not move changes nothing, whatever an event said. `fill_entry`: the entry the fill
    path gives for a row reopened on the websocket path (`closed_at` set while open), whose
    `average_entry_price` may be stale, or for a row with no entry at all; it wins when the two
    disagree. `seen_by`: what made msd read the row ("event" or "table"), kept as `opened_by`."""
    check_aware("now", now)
    side = row.side
    if side is None:
        return RowOutcome(None, "closed")
    fresh = partial(_fresh, row, side, now, seen_by, fill_entry)
    if state is None:
        return RowOutcome(fresh(), "opened")
    if state.row is None:
        # A state without row facts: stored by the first format (or seen only by an event then).
        if side is not state.side or closed_between:
            return RowOutcome(fresh(), "new_position")
        return RowOutcome(_confirm(state, row, fill_entry), "confirmed")
    if row_order(row) < row_order(state.row):
        return RowOutcome(state, "old_row")
    if row_order(row) == row_order(state.row):
        return RowOutcome(state, "same")          # nothing was written since
    reopened_on_websocket = row.closed_at is not None and row.closed_at > state.row.last_updated
    if side is not state.side or reopened_on_websocket or closed_between:
        return RowOutcome(fresh(), "new_position")
    kept, released = _settle(state.in_flight, row)
    state = _reopen_rests(replace(state, in_flight=kept), released, row)
    if released and state.rejections:       # an exit took effect: order-manager accepts them again
        state = replace(state, rejections=0, retry_at=None)
    return RowOutcome(_confirm(state, row, fill_entry), "same", released)


def _fresh(row: RowFacts, side: Side, now: datetime, seen_by: str, fill_entry: Decimal | None) -> ExitState:
    """A position first read now: nothing of an earlier position on the same row carries over."""
    return _confirm(new_position(PositionKey(row.asset, side, row.position_id), now, seen_by), row, fill_entry)


def _confirm(state: ExitState, row: RowFacts, fill_entry: Decimal | None) -> ExitState:
    """Take the row's facts; the entry follows the exchange (an add moves it), the extreme then
    includes the entry, which is a real fill of this position."""
    entry, source = row.average_entry_price, "positions_table"
    if fill_entry is not None and fill_entry != entry and (row.closed_at is not None or entry is None):
        entry, source = fill_entry, "fill_path"
    state = replace(state, row=row, entry_price=entry, entry_source=source if entry is not None else None)
    if entry is None:
        return state
    if better(state.side, entry, state.extreme_price):
        state = replace(state, extreme_price=entry)
    return replace(state, highest_pnl_pct=max(state.highest_pnl_pct,
                                              pnl_pct(state.side, entry, state.extreme_price)))


def _settle(flights: tuple[InFlight, ...], row: RowFacts) -> tuple[tuple[InFlight, ...], tuple[InFlight, ...]]:
    """Split exits in flight into those still waiting and those whose effect `row` shows: all of
    the quantity, or, once the order ended (e.g. cancelled after partial fills), all it filled.
    `order_filled` is the order's cumulative filled quantity (CONTRACTS §2.2), so the row must be
    down by that much; a row that lags one of the fills keeps the exit in flight."""
    kept, released = [], []
    size = abs(row.size)
    for flight in flights:
        newer = row_order(row) > (flight.decided_version, flight.decided_row_at)
        full_effect = size <= flight.decided_size - flight.quantity
        ended_and_shown = (flight.order_status in ENDED and flight.order_filled > 0
                           and size <= flight.decided_size - flight.order_filled)
        if newer and (full_effect or ended_and_shown or (flight.stalled and flight.published)):
            released.append(flight)
        else:
            kept.append(flight)
    return tuple(kept), tuple(released)


def _reopen_rests(state: ExitState, released: tuple[InFlight, ...], row: RowFacts) -> ExitState:
    """Exits released with part of their quantity still open (ended after partial fills, or
    stalled): what they marked is given back so the rules decide the rest again, sized against
    the row. A ladder step fires again for what the row shows above its target (its base size is
    kept); the cooldown is as before the exit."""
    for flight in released:
        if abs(row.size) > flight.decided_size - flight.quantity:
            state = _undo(state, flight, keep_base=True)
    return state


# --- exits in flight ------------------------------------------------------------------------------

def start_flight(state: ExitState, flight: InFlight, after: ExitState) -> ExitState:
    """`after` (the state the decision committed) with `flight` added; `flight.undo` is taken from
    `state`, the state before the exit, so a rejected order can give back what it marked."""
    undo = {"ladder_steps_done": list(state.ladder_steps_done),
            "ladder_base_size": None if state.ladder_base_size is None else str(state.ladder_base_size),
            "stop_moved_to_breakeven": state.stop_moved_to_breakeven,
            "last_exit_at": None if state.last_exit_at is None else state.last_exit_at.isoformat(),
            "last_exit_reason": None if state.last_exit_reason is None else state.last_exit_reason.value}
    return replace(after, in_flight=after.in_flight + (replace(flight, undo=undo),))


def note_order(state: ExitState, signal_id: str, status: str, filled: Decimal,
               now: datetime) -> tuple[ExitState, InFlight | None]:
    """The latest status of an exit's own order. Ended with nothing filled: the exit is over and
    undone (the ladder step is open again, the cooldown as before); returns the released flight.
    A refusal also counts towards the rejection backoff (`rejection_backoff`, from `now`).
    Ended with fills (e.g. cancelled after a partial fill): over once the row shows all it filled."""
    filled = to_decimal("filled_quantity", filled, non_negative=True)
    for flight in state.in_flight:
        if flight.signal_id != signal_id:
            continue
        if status in UNFILLED_ENDINGS and filled == 0:
            rest = tuple(f for f in state.in_flight if f is not flight)
            state = _undo(replace(state, in_flight=rest), flight)
            if status in REFUSALS:
                count = state.rejections + 1
                state = replace(state, rejections=count, retry_at=check_aware("now", now) + rejection_backoff(count))
            return state, flight
        updated = replace(flight, order_status=status, order_filled=filled)
        state = replace(state, in_flight=tuple(updated if f is flight else f for f in state.in_flight))
        if state.row is not None:       # a row read before the order ended may already show it
            kept, released = _settle(state.in_flight, state.row)
            state = _reopen_rests(replace(state, in_flight=kept), released, state.row)
        return state, None
    return state, None


def forget_exits(state: ExitState, signal_ids: Collection[str]) -> tuple[ExitState, tuple[InFlight, ...]]:
    """Forget exits that were decided but never sent (they expired in the outbox): each leaves the
    exits in flight and gives back what it marked (ladder step, breakeven stop, cooldown), as if it
    had never been decided; the prices seen meanwhile stay folded in. Later exits still in flight
    forget it too: what they would give back on a rejection no longer includes it. Returns the
    state and the forgotten exits (oldest first); ids not in flight are ignored."""
    forgotten = sorted((f for f in state.in_flight if f.signal_id in signal_ids), key=lambda f: f.sent_at)
    for flight in reversed(forgotten):      # newest first: each undo restores the state before it
        rest = tuple(_without(f, flight) if f.sent_at > flight.sent_at else f
                     for f in state.in_flight if f is not flight)
        state = _undo(replace(state, in_flight=rest), flight)
    return state, tuple(forgotten)


_LADDER_UNDO = ("ladder_steps_done", "ladder_base_size", "stop_moved_to_breakeven")
_COOLDOWN_UNDO = ("last_exit_at", "last_exit_reason")


def _without(later: InFlight, gone: InFlight) -> InFlight:
    """`later`'s undo as if `gone` (decided before it) had never been: the fields `gone` marked
    are what they were before `gone`."""
    if not later.undo or not gone.undo:
        return later
    undo = dict(later.undo)
    if gone.reason is ExitReason.TAKE_PROFIT_STEP:
        undo.update({k: gone.undo.get(k) for k in _LADDER_UNDO})
    last = undo.get("last_exit_at")
    if last is not None and parse_time("undo.last_exit_at", last) == gone.sent_at:
        undo.update({k: gone.undo.get(k) for k in _COOLDOWN_UNDO})
    return replace(later, undo=undo)


def _undo(state: ExitState, flight: InFlight, *, keep_base: bool = False) -> ExitState:
    """Give back what `flight` marked; `keep_base`: part of it filled, so the ladder's base size
    (the size it started from) stays."""
    undo: Mapping[str, Any] = flight.undo
    if not undo:
        return state
    if flight.reason is ExitReason.TAKE_PROFIT_STEP:
        base = undo.get("ladder_base_size")
        base = state.ladder_base_size if keep_base else None if base is None else Decimal(base)
        state = replace(state, ladder_steps_done=tuple(undo.get("ladder_steps_done") or ()),
                        ladder_base_size=base, stop_moved_to_breakeven=bool(undo.get("stop_moved_to_breakeven")))
    if state.last_exit_at == flight.sent_at:        # no later exit since: the cooldown is as before
        last = undo.get("last_exit_at")
        reason = undo.get("last_exit_reason")
        state = replace(state, last_exit_at=None if last is None else parse_time("undo.last_exit_at", last),
                        last_exit_reason=None if reason is None else ExitReason(reason))
    return state


def note_published(state: ExitState, signal_ids: set[str]) -> ExitState:
    """The broker confirmed these exits' outbox rows: a stalled one may now give way to a new
    decision once a newer row comes (before that, its pending row could still go out beside it)."""
    if not any(f.signal_id in signal_ids and not f.published for f in state.in_flight):
        return state
    return replace(state, in_flight=tuple(replace(f, published=True) if f.signal_id in signal_ids else f
                                          for f in state.in_flight))


def note_stalls(state: ExitState, now: datetime, timeout: timedelta) -> tuple[ExitState, tuple[InFlight, ...]]:
    """Mark exits in flight longer than `timeout` as stalled; returns the newly stalled ones."""
    stalled = tuple(f for f in state.in_flight if not f.stalled and now - f.sent_at >= timeout)
    if not stalled:
        return state, ()
    flights = tuple(replace(f, stalled=True) if f in stalled else f for f in state.in_flight)
    return replace(state, in_flight=flights), stalled
