"""The exit role's decisions for one position, shared by the daemon's exits role and the backtest.

`step(state, event, now) -> Stepped(state, effects)` is pure: the position's `ExitState` (None:
none open) goes in with one event and `now`, the caller's clock (the wall clock in the daemon,
event time in a backtest; nothing here reads a clock or the database); the new state comes out
with the effects the caller acts on. The events:

- `RowRead`: a read of the position's `positions` row (msd.rules.note_row: opens, replaces and
  closes positions, releases exits in flight whose effect the row shows). What needs the
  database (the fill path's entry, a zero crossing between two reads) is read by the caller
  and passed in.
- `PriceSeen` / `BarClosed`: a market price or a closed bar folded into the peak as it arrives
  (`price_event` turns a market update into one).
- `Evaluate`: decide at the freshest quote (the market's, or the row's mark): the exit rules
  (msd.rules.decide: ladder steps, breakeven, cooldown, in-flight pacing, sizing) and the
  per-asset rate (exits.asset_rate, the asset's token bucket: checked and taken here). A
  decision is `SendExit`: an urgent, hence Market, signal for exactly its quantity; the
  returned state is the one the sent exit commits (in flight, ladder, cooldown),
  `SendExit.unsent` the one to keep if it cannot be recorded, `SendExit.bucket` the asset's
  bucket once the exit is recorded (its token taken).
- `OrderSeen`, `Published`, `StallCheck`, `Forget`: what became of exits in flight (their
  orders, the broker's confirm, the in-flight timeout, an expiry or void before sending).

Every effect says what happened for the caller to log, count, persist or send; the caller keeps
the state (the daemon in its book and the store, the backtest per asset). When an `Evaluate` is
due after prices and rows arrive is the debounce (exits.debounce_s, debounce_max_delay_s), made
by `debouncer` for both callers: msd.rules.Debouncer with `now` passed in (the wall clock in the
daemon, event time in a backtest). What stays with the daemon's role is scheduling and I/O: its
turns and verification passes, the table reads, the outbox and the store. The module lives in
the domain, beside the signaller's step (msd.strategies.step), because the backtest may not
import a role.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Union

from msd.market.quotes import PriceQuote, freshest, table_quote
from msd.market.state import MarketState, mid_price
from msd.rules import (
    Debouncer, ExitDecision, ExitReason, ExitRules, ExitState, InFlight, Instrument, RowFacts, decide, fold_bar,
    fold_price, forget_exits, note_order, note_published, note_row, note_stalls,
)
from msd.values.bucket import BucketState, TokenBucket, full_bucket, take
from msd.values.messages import BookTop, Kline, TickerUpdate, Trade

# What an exit signal asks order-manager for: urgency, hence a market order (a resting limit
# exit may never fill), for exactly the decision's quantity (msd.strategies.emit.exit_signal).
EXIT_ORDER_TYPE = "Market"
# The exits role evaluates every open position this often besides the debounced evaluations
# (its verification pass); the backtest looks again on the same grid (`look_again`).
VERIFY_EVERY_S = 5.0
# Holds that end with time alone, at a moment the state does not record (the asset's token).
TIME_BOUND_HOLDS = frozenset({"asset_rate"})


# --- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowRead:
    row: RowFacts | None                 # None: the table has no such row any more
    closed_between: bool = False         # the fills crossed zero since the previous read
    fill_entry: Decimal | None = None    # the fill path's entry (a websocket reopen, or no entry)
    seen_by: str = "table"               # what made the caller read it: "event" or "table"


@dataclass(frozen=True)
class PriceSeen:
    price: Decimal
    at: datetime                         # when it was traded or quoted


@dataclass(frozen=True)
class BarClosed:
    high: Decimal
    low: Decimal
    start: datetime


@dataclass(frozen=True)
class Evaluate:
    quotes: tuple[PriceQuote, ...]       # the market's prices of the asset
    rules: ExitRules
    instrument: Instrument
    signal_id: str                       # the id a decision would be sent under
    table_price: bool = True             # the row's mark is a candidate quote too
    rate: TokenBucket | None = None      # exit signals per asset (None: not limited)
    bucket: BucketState | None = None    # the asset's bucket (None: full)


@dataclass(frozen=True)
class OrderSeen:
    signal_id: str
    status: str
    filled: Decimal


@dataclass(frozen=True)
class Published:
    signal_ids: frozenset[str]           # the broker confirmed these exits' outbox rows


@dataclass(frozen=True)
class StallCheck:
    timeout: timedelta


@dataclass(frozen=True)
class Forget:
    signal_ids: frozenset[str]           # decided, never sent: expired or voided in the outbox


Event = Union[RowRead, PriceSeen, BarClosed, Evaluate, OrderSeen, Published, StallCheck, Forget]


# --- effects --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowNoted:
    """The row was applied: msd.rules.RowOutcome's change ("gone" for no row) and released exits."""
    change: str
    released: tuple[InFlight, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """The position cannot be evaluated yet (incomplete_position, no_price)."""
    reason: str
    detail: str


@dataclass(frozen=True)
class Evaluated:
    """The rules ran. `held`: a rule fired and nothing goes out, and why (msd.rules.Verdict.held,
    or asset_rate); None ends a hold. `newly_below_minimum`: said once per position."""
    held: str | None
    fired: tuple[ExitReason, ...]
    quote: PriceQuote
    newly_below_minimum: bool = False


@dataclass(frozen=True)
class SendExit:
    """An exit to send under `signal_id`; the stepped state is the one it commits once recorded."""
    decision: ExitDecision
    signal_id: str
    quote: PriceQuote                    # the price it was decided at, and its source
    unsent: ExitState                    # keep this one if the signal cannot be recorded
    bucket: BucketState | None = None    # the asset's bucket once it is recorded (None: not limited)
    order_type: str = EXIT_ORDER_TYPE

    @property
    def quantity(self) -> Decimal:
        return self.decision.quantity

    @property
    def level(self) -> Decimal | None:
        """The price level the rule named (a time exit has none)."""
        level = self.decision.rule_params.get("threshold_price")
        return None if level is None else Decimal(level)


@dataclass(frozen=True)
class Unfilled:
    """An exit's order ended with nothing filled: undone (and counted towards the backoff)."""
    flight: InFlight
    status: str


@dataclass(frozen=True)
class Stalled:
    flight: InFlight


@dataclass(frozen=True)
class Forgotten:
    flights: tuple[InFlight, ...]        # oldest first


Effect = Union[RowNoted, Skipped, Evaluated, SendExit, Unfilled, Stalled, Forgotten]


@dataclass(frozen=True)
class Stepped:
    state: ExitState | None
    effects: tuple[Effect, ...] = ()

    def first(self, kind: type) -> Any:
        return next((e for e in self.effects if isinstance(e, kind)), None)


# --- the step -------------------------------------------------------------------------------------

def step(state: ExitState | None, event: Event, now: datetime) -> Stepped:
    """The position's next state and the effects of one event at `now` (module doc)."""
    if isinstance(event, RowRead):
        return _row(state, event, now)
    if state is None:
        return Stepped(None)
    if isinstance(event, PriceSeen):
        return Stepped(fold_price(state, event.price, event.at))
    if isinstance(event, BarClosed):
        return Stepped(fold_bar(state, event.high, event.low, event.start))
    if isinstance(event, Evaluate):
        return _evaluate(state, event, now)
    return _flight_event(state, event, now)


def _row(state: ExitState | None, event: RowRead, now: datetime) -> Stepped:
    if event.row is None:
        return Stepped(None, (RowNoted("gone"),))
    outcome = note_row(state, event.row, now, closed_between=event.closed_between, fill_entry=event.fill_entry,
                       seen_by=event.seen_by)
    return Stepped(outcome.state, (RowNoted(outcome.change, outcome.released),))


def judged_quote(state: ExitState, quotes: tuple[PriceQuote, ...], table_price: bool = True
                 ) -> PriceQuote | Skipped | None:
    """The quote the position is judged at, or why it cannot be judged (None: nothing to say,
    e.g. the row not read yet)."""
    if not state.ready:
        if state.row is not None and state.entry_price is None:
            return Skipped("incomplete_position", f"positions row of {state.key.position_id} has no "
                                                  "average_entry_price (nor does the fill path)")
        return None
    quote = freshest([*quotes, table_quote(state.row) if table_price else None])
    if quote is None:
        return Skipped("no_price", "neither the market nor the positions table has a price")
    return quote


def _evaluate(state: ExitState, event: Evaluate, now: datetime) -> Stepped:
    quote = judged_quote(state, event.quotes, event.table_price)
    if not isinstance(quote, PriceQuote):
        return Stepped(state, () if quote is None else (quote,))
    # The row's mark is this position's price by construction (the row shows it open); a
    # market price counts for the peak only if it was traded or quoted after the open.
    price_at = now if quote.source == "positions_table" else quote.at
    verdict = decide(state, quote.price, event.rules, event.instrument, now, event.signal_id, price_at=price_at)
    bucket = None
    if verdict.decision is not None and event.rate is not None:
        allowed, bucket = take(event.rate, event.bucket or full_bucket(event.rate), now)
        bucket = bucket if allowed else None
    rate_limited = verdict.decision is not None and event.rate is not None and bucket is None
    held = "asset_rate" if rate_limited else verdict.held if verdict.held != "not_ready" else None
    said = Evaluated(held, verdict.fired, quote,
                     held == "below_min_order_value" and not state.below_minimum_warned)
    if verdict.decision is None or rate_limited:
        return Stepped(verdict.state, (said,))
    return Stepped(verdict.sent_state, (said, SendExit(verdict.decision, event.signal_id, quote, verdict.state,
                                                       bucket)))


def look_again(state: ExitState | None, rules: ExitRules, held: str | None, now: datetime) -> datetime | None:
    """The first moment after `now` at which an evaluation at an unchanged price may decide
    otherwise than the one just made at `now` (which was held for `held`, or not): a time exit
    coming due, a cooldown or a rejection backoff ending, the asset's token coming back (known
    only as "later": the next moment after `now`). None: only a new price or row can. The daemon
    evaluates at every verification pass anyway; a backtest evaluates at the first pass at or
    after this moment and skips the passes that would repeat the evaluation before it."""
    if state is None or not state.ready:
        return None
    moments = [state.last_exit_at + rules.cooldown if state.last_exit_at is not None else None, state.retry_at]
    if rules.time_exit is not None:
        moments.append(state.opened_at + rules.time_exit.max_hold)
    later = [m for m in moments if m is not None and m > now]
    if held in TIME_BOUND_HOLDS:
        later.append(now + timedelta(microseconds=1))
    return min(later, default=None)


def debouncer(config) -> Debouncer:
    """The evaluations' debounce from the exits section (msd.roles.exits.config.ExitsConfig): a
    burst of prices and row reads for one position is decided once, `debounce_s` after its
    last item, and at least every `debounce_max_delay_s` while it lasts."""
    return Debouncer(timedelta(seconds=config.debounce_s), timedelta(seconds=config.debounce_max_delay_s))


def _flight_event(state: ExitState, event: Event, now: datetime) -> Stepped:
    if isinstance(event, OrderSeen):
        state, released = note_order(state, event.signal_id, event.status, event.filled, now)
        return Stepped(state, () if released is None else (Unfilled(released, event.status),))
    if isinstance(event, Published):
        return Stepped(note_published(state, event.signal_ids))
    if isinstance(event, StallCheck):
        state, stalled = note_stalls(state, now, event.timeout)
        return Stepped(state, tuple(Stalled(flight) for flight in stalled))
    if isinstance(event, Forget):
        state, forgotten = forget_exits(state, event.signal_ids)
        return Stepped(state, (Forgotten(forgotten),) if forgotten else ())
    raise TypeError(f"event: {type(event).__name__} is not an exit step event")


def price_event(update: Any, market: MarketState) -> PriceSeen | BarClosed | None:
    """What one market update tells the positions of its asset, or None: each traded price and
    book mid as it arrives, and a closed 1-minute bar's high and low (what a dropped tick would
    have held). `market` has already taken the update."""
    if isinstance(update, Kline):
        return BarClosed(update.high, update.low, update.start) if update.confirmed else None
    if isinstance(update, Trade):
        price = update.price
    elif isinstance(update, (TickerUpdate, BookTop)):
        price = update.last_price if isinstance(update, TickerUpdate) else None
        book = market.asset_state(update.asset)
        if price is None and book is not None and book.bid and book.ask:
            price = mid_price(book.bid, book.ask)
    else:
        return None
    if price is None or price <= 0:
        return None
    return PriceSeen(price, update.timestamp)
