"""A position's life as msd sees it: identity, prices folded in, and exits in flight (pure).

Facts arrive from three places and each has its function here; `msd.rules.evaluate.decide` then
reads the state they built:

- `note_event`: a `position_updated` event. Events are older than the row or out of order
  (CONTRACTS §3.5), so an event never sets the size: it only remembers that a close, a flip or
  a reopen was seen (and when), for the next newer row to confirm. A row whose `version` did not
  move cannot confirm anything: a bogus or stale event then changes nothing.
- `note_row`: a read of the `positions` row, the source of truth for size and entry. A newer row
  after a seen close, a side change, a `closed_at` later than the previous row (websocket path),
  or a zero crossing in the fills while msd was away (`closed_between`) starts a new position.
- `fold_price` / `fold_bar`: every tick and every closed 1-minute bar moves the extreme when it
  arrives, so the trailing stop hangs off the true peak, not the price at decision time.
- `note_order` / `note_stalls`: the outcome of an exit's own order and the in-flight timeout.
- `forget_exits`: exits decided but never sent (they expired in the outbox) are undone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
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


def pnl_pct(side: Side, entry_price: Decimal, price: Decimal) -> Decimal:
    """Unrealised PnL in percent of entry, positive in profit: long (p - e) / e * 100, short (e - p) / e * 100."""
    return (price - entry_price) * side.sign / entry_price * _HUNDRED


def better(side: Side, price: Decimal, than: Decimal | None) -> bool:
    return than is None or (price > than if side is Side.LONG else price < than)


def new_position(key: PositionKey, opened_at: datetime, opened_by: str) -> ExitState:
    """A position msd has just seen open; the row fills in size and entry (`note_row`)."""
    return ExitState(key=key, opened_at=check_aware("opened_at", opened_at), opened_by=opened_by)


def fold_price(state: ExitState, price: Decimal) -> ExitState:
    """Fold one price into the peak (long) or trough (short) and the running highest PnL.

    `highest_pnl_pct` is a running maximum, so a trailing stop once armed stays armed even if the
    exchange later reports a different average entry.
    """
    price = to_decimal("price", price, positive=True)
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
    return fold_price(state, high if state.side is Side.LONG else low)


# --- events ---------------------------------------------------------------------------------------

def note_event(state: ExitState | None, asset: str, position_id: str, size: Decimal, event_at: datetime,
               now: datetime) -> ExitState | None:
    """What one `position_updated` event says about the position's identity (module doc)."""
    size = to_decimal("size", size)
    check_aware("event timestamp", event_at)
    side = Side.of(size)
    if state is None:
        if side is None:
            return None
        return replace(new_position(PositionKey(asset, side, position_id), now, "event"), last_event_at=event_at)
    if _stale(state, event_at):
        return state
    if state.row is None and state.opened_by == "event":   # seen by events only: the newest says which side
        if side is None:
            return None
        return replace(state, key=replace(state.key, side=side), last_event_at=event_at)
    closed_seen, next_side, next_seen = state.closed_seen_at, state.next_side, state.next_seen_at
    if side is None or side is not state.side or closed_seen is not None:
        closed_seen = closed_seen or now
        if side is None:
            next_side, next_seen = None, None
        elif side is not next_side:         # the first sighting of what is open now
            next_side, next_seen = side, now
    return replace(state, last_event_at=event_at, closed_seen_at=closed_seen, next_side=next_side,
                   next_seen_at=next_seen)


def _stale(state: ExitState, event_at: datetime) -> bool:
    """Older than an event already applied, or than the row already read (it was written before)."""
    return ((state.last_event_at is not None and event_at <= state.last_event_at)
            or (state.row is not None and event_at < state.row.last_updated))


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
             fill_entry: Decimal | None = None) -> RowOutcome:
    """Apply one read of the position's row. `closed_between`: the fills since the previous row
    crossed zero (msd was away). `fill_entry`: the entry the fill path gives for a row reopened on
    the websocket path (`closed_at` set while open), whose `average_entry_price` may be stale, or
    for a row with no entry at all; it wins when the two disagree."""
    check_aware("now", now)
    side = row.side
    if side is None:
        return RowOutcome(None, "closed")
    if state is None:
        return RowOutcome(_confirm(new_position(PositionKey(row.asset, side, row.position_id), now, "table"),
                                   row, fill_entry), "opened")
    if state.row is None:
        if state.opened_by != "event" and (side is not state.side or closed_between
                                           or state.closed_seen_at is not None):
            # A state upgraded from format 1 (no row facts): a flip or a close since is a new position.
            fresh = new_position(PositionKey(row.asset, side, row.position_id), now, "table")
            return RowOutcome(_confirm(fresh, row, fill_entry), "new_position")
        opened = replace(state, key=replace(state.key, side=side))
        return RowOutcome(_confirm(opened, row, fill_entry), "confirmed")
    if row_order(row) < row_order(state.row):
        return RowOutcome(state, "old_row")
    if row_order(row) == row_order(state.row):
        # Nothing was written since: whatever an event said about a close did not happen here.
        return RowOutcome(_forget_hints(state), "same")
    reopened_on_websocket = row.closed_at is not None and row.closed_at > state.row.last_updated
    if state.closed_seen_at is not None or side is not state.side or reopened_on_websocket or closed_between:
        seen = state.next_seen_at if state.next_side is side else None
        fresh = new_position(PositionKey(row.asset, side, row.position_id), seen or now,
                             "event" if seen else "table")
        return RowOutcome(_confirm(fresh, row, fill_entry), "new_position")
    current = _forget_hints(state)
    kept, released = _settle(current.in_flight, row)
    return RowOutcome(_confirm(replace(current, in_flight=kept), row, fill_entry), "same", released)


def _forget_hints(state: ExitState) -> ExitState:
    if state.closed_seen_at is None and state.next_side is None and state.next_seen_at is None:
        return state
    return replace(state, closed_seen_at=None, next_side=None, next_seen_at=None)


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
    """Split exits in flight into those still waiting and those whose effect `row` shows."""
    kept, released = [], []
    size = abs(row.size)
    for flight in flights:
        newer = row_order(row) > (flight.decided_version, flight.decided_row_at)
        full_effect = size <= flight.decided_size - flight.quantity
        ended_with_fill = flight.order_status in ENDED and size < flight.decided_size
        if newer and (full_effect or ended_with_fill or flight.stalled):
            released.append(flight)
        else:
            kept.append(flight)
    return tuple(kept), tuple(released)


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


def note_order(state: ExitState, signal_id: str, status: str, filled: Decimal) -> tuple[ExitState, InFlight | None]:
    """The latest status of an exit's own order. Ended with nothing filled: the exit is over and
    undone (the ladder step is open again, the cooldown as before); returns the released flight.
    Ended with fills (e.g. cancelled after a partial fill): over once the row shows a smaller size."""
    filled = to_decimal("filled_quantity", filled, non_negative=True)
    for flight in state.in_flight:
        if flight.signal_id != signal_id:
            continue
        if status in UNFILLED_ENDINGS and filled == 0:
            rest = tuple(f for f in state.in_flight if f is not flight)
            return _undo(replace(state, in_flight=rest), flight), flight
        updated = replace(flight, order_status=status, order_filled=filled)
        flights = tuple(updated if f is flight else f for f in state.in_flight)
        if state.row is not None:       # a row read before the order ended may already show it
            flights = tuple(f for f in flights if f is not updated or not _settle((f,), state.row)[1])
        return replace(state, in_flight=flights), None
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


def _undo(state: ExitState, flight: InFlight) -> ExitState:
    undo: Mapping[str, Any] = flight.undo
    if not undo:
        return state
    if flight.reason is ExitReason.TAKE_PROFIT_STEP:
        base = undo.get("ladder_base_size")
        state = replace(state, ladder_steps_done=tuple(undo.get("ladder_steps_done") or ()),
                        ladder_base_size=None if base is None else Decimal(base),
                        stop_moved_to_breakeven=bool(undo.get("stop_moved_to_breakeven")))
    if state.last_exit_at == flight.sent_at:        # no later exit since: the cooldown is as before
        last = undo.get("last_exit_at")
        reason = undo.get("last_exit_reason")
        state = replace(state, last_exit_at=None if last is None else parse_time("undo.last_exit_at", last),
                        last_exit_reason=None if reason is None else ExitReason(reason))
    return state


def note_stalls(state: ExitState, now: datetime, timeout: timedelta) -> tuple[ExitState, tuple[InFlight, ...]]:
    """Mark exits in flight longer than `timeout` as stalled; returns the newly stalled ones."""
    stalled = tuple(f for f in state.in_flight if not f.stalled and now - f.sent_at >= timeout)
    if not stalled:
        return state, ()
    flights = tuple(replace(f, stalled=True) if f in stalled else f for f in state.in_flight)
    return replace(state, in_flight=flights), stalled
