"""Hypothesis strategies and invariants for fuzzing the exit evaluation (msd.rules), from the
CONTRACTS.md examples.

Shared by the property test (tests/unit/test_exit_fuzz.py: a few thousand cases, fixed seed)
and benchmarks/fuzz.py (100,000 cases with a report). A case is one position's history as the
exit role sees it: the `position_updated` examples of CONTRACTS §3.4 (as the codec parses them)
give the asset and position id; exit rules are generated within config validation (built by
`ExitRules.from_mapping`, as `exits.rules` is); an instrument within `instrument_info`'s domain;
then a sequence of what happens: `positions` rows as position-manager writes them (DECIMAL(20,8),
fills of the exits in flight, adds, flips, closes, websocket reopens, old and repeated reads),
events with any size, prices at and around the rules' levels, decisions (sent or not), order
outcomes, stalls and expiries. `run_case` replays it through the same pure functions the role
uses and checks, at every step:

- nothing raises, and every row the table's columns allow is usable (a row the role had to
  skip would leave its position without exits);
- an exit never asks for more than |size| x price x (1 + AMOUNT_PADDING), order-manager's
  arithmetic gives back exactly its quantity (CONTRACTS §3.6), and its signal passes the test
  suite's own reading of order-manager's rules;
- no second exit while one is in flight, except a stop loss / breakeven stop for what a
  take-profit slice leaves (issue 8), and none within the cooldown except those stops after a slice;
- every reason is an `ExitReason`, every `held` a documented one;
- decisions and transitions are deterministic, also from a state saved and restored as jsonb.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any

from hypothesis import assume, strategies as st

from msd.bus.codecs import parse_position_update
from msd.bus.signal_format import encode_signal
from msd.market.quotes import PriceQuote
from msd.roles.exits.tables import row_facts
from msd.rules import (
    AMOUNT_PADDING, ExitReason, ExitRules, ExitState, Instrument, InvalidPositionData, RowFacts, RuleConfigError,
    decide, fold_price, forget_exits, note_order, note_published, note_row, note_stalls, order_manager_quantity,
)
from msd.rules.state import better
from msd.rules.types import PROTECTIVE
from msd.store.neighbours import PositionRow
from msd.strategies.emit import exit_signal
from tests import examples
from tests.contract.order_manager_rules import problems

T0 = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
UPDATES = [parse_position_update(body, None, now=T0) for body in examples.POSITION_UPDATES]
HELD = {None, "in_flight", "cooldown", "below_min_order_value", "slice_overlaps_in_flight", "not_ready"}
ORDER_STATUSES = ("pending", "partially_filled", "filled", "cancelled", "rejected", "dry_run")
EIGHT = Decimal("1e-8")
DECIMAL_20_8 = 10 ** 20 - 1          # the largest DECIMAL(20,8), in units of 1e-8
TABLE_LIMIT = Decimal(10) ** 12      # DECIMAL(20,8) holds less than this
SPECIAL = (EIGHT, Decimal("0.001"), Decimal(1), Decimal("97123.4"), Decimal("1e10"))


class InvariantViolation(AssertionError):
    """An exit evaluation broke one of the invariants above."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantViolation(what)


# --- generated inputs -----------------------------------------------------------------------------

def _units(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """DECIMAL(20,8) values in [low, high] units of 1e-8."""
    return st.integers(low, high).map(lambda n: Decimal(n).scaleb(-8))


# Mostly sizes and prices a real exchange shows (any order of magnitude from 1e-8 to 1e6, up to 4
# significant digits), sometimes anything the column can hold.
_realistic = st.builds(lambda digits, exponent: Decimal(digits).scaleb(exponent).quantize(EIGHT),
                       st.integers(1, 9999), st.sampled_from(range(-8, 3)))
magnitudes = st.one_of(_realistic, _realistic, _realistic, _units(1, DECIMAL_20_8),
                       st.sampled_from(SPECIAL))
# A coin's price in USDT and a position's worth: mostly what markets show.
_prices = st.builds(lambda digits, exponent: Decimal(digits).scaleb(exponent), st.integers(1, 9999),
                    st.sampled_from(range(-6, 3)))
_worth = st.builds(Decimal, st.sampled_from([1, 5, 6, 20, 100, 1000, 50_000, 10 ** 6]) | st.integers(1, 10 ** 7))
percents = st.decimals(Decimal("0.001"), Decimal("300"), places=3)
closes = st.decimals(Decimal("0.01"), Decimal(1), places=2)


def _as_yaml(value: Decimal) -> st.SearchStrategy[Any]:
    """A number as a YAML file gives it: int, float or (from a quoted value) string."""
    return st.sampled_from([value, str(value), float(value)])


@st.composite
def exit_rules(draw) -> tuple[ExitRules, list[Decimal]]:
    """Exit rules within config validation, and the percent levels they act on."""
    mapping: dict[str, Any] = {}
    levels: list[Decimal] = [Decimal(0)]
    kind = draw(st.sampled_from(["none", "pct", "ladder", "ladder"]))
    if kind == "pct":
        pct = draw(percents)
        mapping["take_profit"], levels = {"pct": draw(_as_yaml(pct))}, levels + [pct]
    elif kind == "ladder":
        n = draw(st.integers(1, 4))
        ats = sorted(draw(st.sets(percents, min_size=n, max_size=n)))
        fracs = sorted(draw(st.sets(closes, min_size=n, max_size=n)))
        mapping["take_profit"] = {"steps": [{"at_pct": draw(_as_yaml(a)), "close": draw(_as_yaml(c))}
                                            for a, c in zip(ats, fracs)],
                                  "breakeven_after_first_step": draw(st.booleans()),
                                  "breakeven_fee_pct": draw(_as_yaml(draw(st.decimals(0, 2, places=3))))}
        levels += ats
    if draw(st.booleans()):
        stop = draw(st.decimals(Decimal("0.001"), Decimal("99.999"), places=3))
        mapping["stop_loss_pct"], levels = draw(_as_yaml(stop)), levels + [-stop]
    if draw(st.booleans()):
        distance = draw(st.decimals(Decimal("0.001"), Decimal("50"), places=3))
        activation = distance + draw(st.decimals(0, 100, places=3))
        mapping["trailing"] = {"activation_pct": draw(_as_yaml(activation)), "distance_pct": draw(_as_yaml(distance))}
        levels += [activation, activation - distance]
    if draw(st.booleans()):
        mapping["time_exit"] = {"max_hold_seconds": draw(st.integers(1, 7 * 86400)),
                                "min_profit_pct": draw(_as_yaml(draw(st.decimals(-50, 50, places=2))))}
    if draw(st.booleans()):
        mapping["priority"] = draw(st.permutations([r.value for r in ExitReason]))
    mapping["cooldown_seconds"] = draw(st.sampled_from([1, 5, 30, 60, 120, 600]) | st.integers(1, 600))
    try:
        rules = ExitRules.from_mapping(mapping, "exits.rules")
    except RuleConfigError:
        assume(False)       # outside config validation (e.g. a float that rounds below the minimum)
    return rules, levels


# instrument_info as order-manager caches it from Bybit (CONTRACTS §3.6), common values and any.
_steps = st.sampled_from([EIGHT, Decimal("0.001"), Decimal("0.01"), Decimal("0.1"), Decimal(1)])
_minimums = st.sampled_from([Decimal(0), Decimal(1), Decimal(5), Decimal(5)])
instruments = st.builds(Instrument, lot_size=st.one_of(_steps, _steps, _steps, magnitudes),
                        min_order_qty=st.one_of(_steps, _steps, _steps, magnitudes),
                        min_order_value=st.one_of(_minimums, _minimums, _minimums, magnitudes))

# One step of a history is one integer; its kind, the seconds that passed before it and its
# parameters are read out of it by `Bits` (one draw per step instead of one per parameter keeps
# generation cheap).
KINDS = ("row",) * 4 + ("published", "price", "price") + ("decide",) * 5 + ("order", "order", "stall", "forget")
ROW_KINDS = ("same", "fill", "fill", "fill", "add", "flip", "flat", "reopen", "any", "old", "again")
PAUSES = (0, 1, 2, 5, 30, 61, 120)
ops = st.integers(0, 2 ** 96 - 1)


class Bits:
    """Parameters read out of one generated integer: each `take(k)` is a number in [0, k)."""

    def __init__(self, n: int):
        self.n = n

    def take(self, k: int) -> int:
        self.n, value = divmod(self.n, k)
        return value

    def pick(self, options: tuple | list) -> Any:
        return options[self.take(len(options))]

    def fraction(self) -> Decimal:
        """1, 1/2, 0 or anything in between (in 1/10,000)."""
        choice = self.take(4)
        return (Decimal(1), Decimal("0.5"), Decimal(0))[choice] if choice < 3 else Decimal(self.take(10001)) / 10000

    def magnitude(self) -> Decimal:
        """Like `magnitudes`: mostly a real exchange's, sometimes anything DECIMAL(20,8) holds."""
        mode = self.take(8)
        if mode < 6:
            return Decimal(self.take(9999) + 1).scaleb(self.take(11) - 8).quantize(EIGHT)
        if mode == 6:
            return Decimal(self.take(DECIMAL_20_8) + 1).scaleb(-8)
        return self.pick(SPECIAL)


@dataclass(frozen=True)
class ExitCase:
    update: Any                     # a CONTRACTS example as the codec parsed it
    rules: ExitRules
    levels: tuple[Decimal, ...]     # percents of entry where the rules act
    instrument: Instrument
    size: Decimal                   # signed size of the first row
    entry: Decimal
    ops: tuple[int, ...]
    price_noise: tuple[Decimal, ...] = (Decimal(0),)   # nudges off the rules' levels


@st.composite
def exit_cases(draw) -> ExitCase:
    rules, levels = draw(exit_rules())
    if draw(st.integers(0, 3)):
        entry = draw(_prices)
        size = max(_q(draw(_worth) / entry), EIGHT)
    else:
        entry, size = draw(magnitudes), draw(magnitudes)
    return ExitCase(draw(st.sampled_from(UPDATES)), rules, tuple(levels), draw(instruments),
                    size * draw(st.sampled_from([1, -1])), entry, tuple(draw(st.lists(ops, min_size=6, max_size=30))),
                    tuple(draw(st.lists(st.decimals(-5, 5, places=4), min_size=1, max_size=4))))


# --- the replay -----------------------------------------------------------------------------------

def _q(value: Decimal) -> Decimal:
    """A price or size as the DECIMAL(20,8) column holds it."""
    with localcontext() as ctx:
        ctx.prec = 40
        return value.quantize(EIGHT)


def round_trip(state: ExitState) -> ExitState:
    """The state as a restart reads it back from the jsonb column."""
    return ExitState.from_dict(json.loads(json.dumps(state.to_dict())))


class Replay:
    def __init__(self, case: ExitCase):
        self.case, self.now = case, T0
        self.asset, self.pid = case.update.asset, case.update.position_id
        self.state: ExitState | None = None
        self.rows: list[RowFacts] = []
        self.signals = 0
        self.outcomes: Counter[str] = Counter()
        self._write(case.size, case.entry, None, case.entry)

    def run(self) -> Counter[str]:
        for n in self.case.ops:
            bits = Bits(n)
            kind, pause = bits.pick(KINDS), bits.take(len(PAUSES) + 1)
            self.now += timedelta(seconds=PAUSES[pause] if pause < len(PAUSES) else bits.take(601))
            getattr(self, "_" + kind)(bits)
            self.outcomes["steps"] += 1
            if self.state is not None:
                check(round_trip(self.state) == self.state, "a saved and restored state differs")
                ids = [f.signal_id for f in self.state.in_flight]
                check(len(ids) == len(set(ids)), f"an exit is twice in flight: {ids}")
        return self.outcomes

    # --- rows and events (position-manager's side) ---------------------------------------------

    def _write(self, size: Decimal, entry: Decimal | None, closed_at: datetime | None, mark: Decimal | None = None,
               *, closed_between: bool = False, fill_entry: Decimal | None = None) -> None:
        """position-manager writes the row (any value its columns allow); the role reads it."""
        size, entry = _q(size), None if entry is None else _q(entry)
        if not (abs(size) < TABLE_LIMIT and (entry is None or 0 < entry < TABLE_LIMIT)
                and (mark is None or abs(mark) < TABLE_LIMIT)):
            return                                  # the table cannot hold it: no such write
        last = self.rows[-1] if self.rows else None
        version = last.version + 1 if last else 1
        written = PositionRow(self.pid, self.asset, size, entry, mark, self.now, T0 - timedelta(days=7), "one-way",
                              version, closed_at)
        try:
            row = row_facts(written)
        except InvalidPositionData as exc:         # the role would skip the position: no exits at all
            raise InvariantViolation(f"a row the table allows is unusable: {exc}") from None
        self.rows.append(row)
        self._read(row, closed_between, fill_entry)

    def _read(self, row: RowFacts, closed_between: bool = False, fill_entry: Decimal | None = None) -> None:
        outcome = note_row(self.state, row, self.now, closed_between=closed_between, fill_entry=fill_entry)
        check(outcome == note_row(self.state, row, self.now, closed_between=closed_between, fill_entry=fill_entry),
              "note_row is not deterministic")
        self.state = outcome.state

    def _row(self, bits: Bits) -> None:
        kind, fraction, magnitude = bits.pick(ROW_KINDS), bits.fraction(), bits.magnitude()
        # (Zero bits, which hypothesis favours, read as the common case everywhere.) The fills
        # crossed zero while msd was away only where the row changed side or reopened.
        by_fill, crossed = bits.take(4) == 3, bits.take(2) == 1
        closed_between = crossed and kind in ("flip", "reopen")
        last = self.rows[-1] if self.rows else None
        if kind in ("old", "again") or last is None:
            if self.rows:
                self._read(self.rows[max(0, len(self.rows) - 2)] if kind == "old" else self.rows[-1])
            return
        size, entry, closed_at = last.size, last.average_entry_price, last.closed_at
        sign = 1 if size >= 0 else -1
        if kind == "fill" and self.state is not None and self.state.in_flight:     # mostly all of it
            size -= sign * (fraction if by_fill else Decimal(1)) * self.state.in_flight[0].quantity
        elif kind == "add":
            entry = _q((entry or magnitude) * (1 + fraction / 10)) or EIGHT
            size += sign * magnitude
        elif kind == "flip":
            size, entry = -sign * magnitude, magnitude
        elif kind == "flat":
            size, entry, closed_at = Decimal(0), None, self.now
        elif kind == "reopen":          # websocket path: closed_at kept, the entry maybe stale or missing
            size, entry = sign * magnitude, entry if by_fill else None
        elif kind == "any":
            size = magnitude * (1 if fraction >= Decimal("0.5") else -1)
        fill_entry = magnitude if (by_fill and size != 0) else None
        # current_price: the mark position-manager last wrote, mostly near the entry; the column
        # has no constraint, so sometimes none, zero or anything.
        mark = bits.pick((None, Decimal(0), -magnitude, magnitude)) if bits.take(4) == 3 else \
            _q((entry or magnitude) * (1 + (fraction - Decimal("0.5")) / 5))
        self._write(size, entry, closed_at, mark, closed_between=closed_between, fill_entry=fill_entry)

    def _published(self, bits: Bits) -> None:
        """The broker confirmed some exits' outbox rows. (A `position_updated` event has no step
        of its own: it only makes the role read the row, which `_row` covers.)"""
        if self.state is None or not self.state.in_flight:
            return
        mask = bits.take(2 ** len(self.state.in_flight))
        ids = {f.signal_id for i, f in enumerate(self.state.in_flight) if mask >> i & 1}
        state = note_published(self.state, ids)
        check([f.signal_id for f in state.in_flight] == [f.signal_id for f in self.state.in_flight],
              "note_published changed which exits are in flight")
        self.state = state

    # --- prices and decisions (the role's side) ------------------------------------------------

    def _price_at(self, pick: int) -> Decimal:
        """A price at one of the rules' levels (exactly, or nudged), or anywhere from -99 % to +300 %."""
        entry = (self.state.entry_price if self.state and self.state.entry_price else None) or self.case.entry
        levels = self.case.levels
        if pick % 3:
            pct = levels[pick % len(levels)] + self.case.price_noise[pick % len(self.case.price_noise)] * (pick % 3 - 1)
        else:
            pct = Decimal(pick % 40000) / 100 - 99
        return max(_q(entry * (1 + pct / 100)), EIGHT)

    def _price(self, bits: Bits) -> None:
        if self.state is None:
            return
        price = self._price_at(bits.take(10 ** 6))
        at = self.now - timedelta(seconds=bits.take(4) * 30)      # sometimes a late tick, maybe from before the open
        folded = fold_price(self.state, price, at)
        if at < self.state.opened_at:
            check(folded == self.state, "a price from before the open moved the position's state")
        if self.state.extreme_price is not None:
            check(folded.extreme_price == self.state.extreme_price
                  or better(self.state.side, folded.extreme_price, self.state.extreme_price),
                  "the peak moved against the position")
        self.state = folded

    def _decide(self, bits: Bits) -> None:
        if self.state is None:
            return
        before, price, send = self.state, self._price_at(bits.take(10 ** 6)), bits.take(4) != 3
        self.signals += 1
        signal_id = str(uuid.UUID(int=self.signals))
        verdict = decide(before, price, self.case.rules, self.case.instrument, self.now, signal_id)
        check(verdict == decide(before, price, self.case.rules, self.case.instrument, self.now, signal_id),
              "decide is not deterministic")
        check(verdict == decide(round_trip(before), price, self.case.rules, self.case.instrument, self.now, signal_id),
              "a restored state decides differently")
        check(verdict.held in HELD, f"unknown held reason {verdict.held!r}")
        check(all(isinstance(r, ExitReason) for r in verdict.fired), f"fired reasons {verdict.fired!r}")
        self.outcomes[f"held:{verdict.held}" if verdict.decision is None else
                      f"exit:{verdict.decision.reason.value}"] += 1
        if verdict.decision is not None:
            check_exit(before, price, verdict, self.case, signal_id)
        self.state = verdict.sent_state if (verdict.decision is not None and send) else verdict.state

    # --- what became of the exits (order-manager's side and the outbox) -----------------------

    def _order(self, bits: Bits) -> None:
        if self.state is None or not self.state.in_flight:
            return
        flight = bits.pick(self.state.in_flight)
        status, fraction = bits.pick(ORDER_STATUSES), bits.fraction()
        state, released = note_order(self.state, flight.signal_id, status, _q(fraction * flight.quantity), self.now)
        if released is not None:
            check(released.signal_id == flight.signal_id and flight not in state.in_flight, "a released exit stays")
        self.state = state

    def _stall(self, bits: Bits) -> None:
        if self.state is not None:
            self.state, _ = note_stalls(self.state, self.now, timedelta(seconds=bits.take(120) + 1))

    def _forget(self, bits: Bits) -> None:
        if self.state is None:
            return
        mask = bits.take(2 ** len(self.state.in_flight))
        ids = {f.signal_id for i, f in enumerate(self.state.in_flight) if mask >> i & 1}
        state, forgotten = forget_exits(self.state, ids)
        check({f.signal_id for f in forgotten} == ids, "forget_exits missed an expired exit")
        check([f.signal_id for f in state.in_flight] == [f.signal_id for f in self.state.in_flight
                                                          if f.signal_id not in ids], "forget_exits lost an exit")
        self.state = state


def check_exit(before: ExitState, price: Decimal, verdict, case: ExitCase, signal_id: str) -> None:
    """What every exit decision must satisfy (module doc)."""
    d, instrument, size = verdict.decision, case.instrument, before.size
    check(isinstance(d.reason, ExitReason) and d.reason in verdict.fired, f"reason {d.reason!r}")
    check(all(isinstance(r, ExitReason) for r in d.also_triggered), f"also_triggered {d.also_triggered!r}")
    check(0 < d.quantity <= size, f"quantity {d.quantity} for a position of {size}")
    with localcontext() as ctx:
        ctx.prec = 60
        ceiling = size * price * (1 + AMOUNT_PADDING)
    check(d.amount <= ceiling, f"amount {d.amount} above |size| {size} x price {price}")
    check(order_manager_quantity(d.amount, price, instrument) == d.quantity,
          f"order-manager would make {order_manager_quantity(d.amount, price, instrument)} of {d.amount}, "
          f"not {d.quantity}")
    flights = before.in_flight
    if flights:
        check(all(f.reason is ExitReason.TAKE_PROFIT_STEP for f in flights) and d.reason in PROTECTIVE,
              f"a {d.reason.value} while {[f.reason.value for f in flights]} in flight")
        check(d.quantity <= min(f.decided_size - f.quantity for f in flights), "a stop over a slice in flight")
    if before.last_exit_at is not None and case.rules.cooldown > verdict.decision.decided_at - before.last_exit_at:
        check(d.reason in PROTECTIVE and before.last_exit_reason is ExitReason.TAKE_PROFIT_STEP,
              f"a {d.reason.value} within the cooldown after {before.last_exit_reason}")
    check([f.signal_id for f in verdict.sent_state.in_flight].count(signal_id) == 1, "the exit is not in flight")
    signal = exit_signal(d, PriceQuote(price, d.decided_at, "positions_table"), None, "exit-engine", None,
                         signal_id, {"trigger": "fuzz"})
    body, _ = encode_signal(signal)
    found = problems(json.loads(body))
    check(not found, f"order-manager would refuse the exit: {found}")
