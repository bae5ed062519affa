"""The exit step (msd.strategies.exit_step), the one the exits role and the backtest call: a table of
event sequences and the effects each event has, for a long of 2 BTC entered at 100.

Each row is a list of (seconds after T0, event) and the effects expected of each event, summed
up as tuples (`said`). `now` is the row's own clock: the step reads none.
"""
import ast
import inspect
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.market.quotes import PriceQuote
from msd.strategies import exit_step as step_module
from msd.strategies.exit_step import (
    BarClosed, Evaluate, Evaluated, Forget, Forgotten, OrderSeen, PriceSeen, Published, RowNoted, RowRead,
    SendExit, Skipped, StallCheck, Stalled, Unfilled, step,
)
from msd.rules import ExitRules, Instrument, RowFacts
from msd.values.bucket import BucketState, TokenBucket

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
LOT = Instrument(D("0.001"), D("0.001"), D("5"))
RULES = ExitRules.from_mapping({
    "stop_loss_pct": 2, "cooldown_seconds": 1, "trailing": {"activation_pct": 1.5, "distance_pct": 0.5},
    "take_profit": {"steps": [{"at_pct": 1, "close": 0.5}, {"at_pct": 3, "close": 1.0}],
                    "breakeven_after_first_step": True}})
EMPTY = BucketState(D(0), T0)
RATE = TokenBucket(D("0.001"), 1)
TRAILING = ExitRules.from_mapping({"trailing": {"activation_pct": 1.5, "distance_pct": 0.5}})


def row(size="2", version=1, entry="100", mark=None, at=0):
    return RowRead(RowFacts("p1", "BTCUSDT", D(size), None if entry is None else D(entry),
                            None if mark is None else D(mark), version, T0 + timedelta(seconds=at), None))


def price(value, sid, at, *, table=True, rate=None, bucket=None, rules=RULES):
    quotes = () if value is None else (PriceQuote(D(value), T0 + timedelta(seconds=at), "market_last_price"),)
    return Evaluate(quotes, rules, LOT, sid, table_price=table, rate=rate, bucket=bucket)


def said(effect):
    if isinstance(effect, RowNoted):
        return ("row", effect.change, *(f.signal_id for f in effect.released))
    if isinstance(effect, Skipped):
        return ("skipped", effect.reason)
    if isinstance(effect, Evaluated):
        return ("held", effect.held) if effect.held else ("evaluated",)
    if isinstance(effect, SendExit):
        return ("send", effect.decision.reason.value, str(effect.quantity), str(effect.level), effect.signal_id,
                effect.order_type, effect.quote.source)
    if isinstance(effect, Unfilled):
        return ("unfilled", effect.flight.signal_id, effect.status)
    if isinstance(effect, Stalled):
        return ("stalled", effect.flight.signal_id)
    if isinstance(effect, Forgotten):
        return ("forgotten", *(f.signal_id for f in effect.flights))
    raise AssertionError(effect)


OPEN = (0, row())
OPENED = [("row", "opened")]
STOP = ("send", "stop_loss", "2", "98.00", "s1", "Market", "market_last_price")
STEP1 = ("send", "take_profit_step", "1.0", "101.00", "s1", "Market", "market_last_price")

CASES = {
    "no price anywhere: said, nothing decided": (
        [OPEN, (1, price(None, "s1", 1))], [OPENED, [("skipped", "no_price")]]),
    "a row without an entry cannot be judged": (
        [(0, row(entry=None)), (1, price("97", "s1", 1))], [OPENED, [("skipped", "incomplete_position")]]),
    "the row's mark is a quote when the market has none": (
        [(0, row(mark="97.9")), (1, price(None, "s1", 1))],
        [OPENED, [("evaluated",), ("send", "stop_loss", "2", "98.00", "s1", "Market", "positions_table")]]),
    "without the row's mark (the backtest's path) no price is no price": (
        [(0, row(mark="97.9")), (1, price(None, "s1", 1, table=False))], [OPENED, [("skipped", "no_price")]]),
    "stop loss: an urgent Market exit for the whole size at its level": (
        [OPEN, (1, price("99", "s0", 1)), (2, price("97.9", "s1", 2))],
        [OPENED, [("evaluated",)], [("evaluated",), STOP]]),
    "in flight: nothing else until the row shows the exit, then the position is closed": (
        [OPEN, (1, price("97.9", "s1", 1)), (2, price("97", "s2", 2)), (3, row("0", 2, at=3)),
         (4, price("97", "s3", 4))],
        [OPENED, [("evaluated",), STOP], [("held", "in_flight")], [("row", "closed")], []]),
    "ladder: a step, the cooldown, the next step after it": (
        [OPEN, (1, price("101", "s1", 1)), (1.5, row("1.0", 2, at=1.5)), (1.8, price("103", "s2", 1.8)),
         (2.5, price("103", "s3", 2.5))],
        [OPENED, [("evaluated",), STEP1], [("row", "same", "s1")], [("held", "cooldown")],
         [("evaluated",), ("send", "take_profit_step", "1.0", "103.00", "s3", "Market", "market_last_price")]]),
    "after a ladder step the breakeven stop may fire within the cooldown": (
        [OPEN, (1, price("101", "s1", 1)), (1.2, row("1.0", 2, at=1.2)), (1.5, price("99.9", "s2", 1.5))],
        [OPENED, [("evaluated",), STEP1], [("row", "same", "s1")],
         [("evaluated",), ("send", "breakeven_stop", "1.0", "100.100", "s2", "Market", "market_last_price")]]),
    "a refused order undoes the exit: decided again at once": (
        [OPEN, (1, price("97.9", "s1", 1)), (2, OrderSeen("s1", "rejected", D(0))), (3, price("97.9", "s2", 3))],
        [OPENED, [("evaluated",), STOP], [("unfilled", "s1", "rejected")],
         [("evaluated",), ("send", "stop_loss", "2", "98.00", "s2", "Market", "market_last_price")]]),
    "a stall is said once, at the timeout": (
        [OPEN, (1, price("97.9", "s1", 1)), (60, StallCheck(timedelta(seconds=60))),
         (61, StallCheck(timedelta(seconds=60))), (90, StallCheck(timedelta(seconds=60)))],
        [OPENED, [("evaluated",), STOP], [], [("stalled", "s1")], []]),
    "an exit forgotten unsent gives its ladder step back": (
        [OPEN, (1, price("101", "s1", 1)), (2, Forget(frozenset({"s1", "other"}))), (3, price("101", "s2", 3))],
        [OPENED, [("evaluated",), STEP1], [("forgotten", "s1")],
         [("evaluated",), ("send", "take_profit_step", "1.0", "101.00", "s2", "Market", "market_last_price")]]),
    "an empty asset bucket holds the exit, nothing goes in flight": (
        [OPEN, (1, price("97.9", "s1", 1, rate=RATE, bucket=EMPTY)), (2, price("97.9", "s2", 2))],
        [OPENED, [("held", "asset_rate")], [("evaluated",), ("send", "stop_loss", "2", "98.00", "s2", "Market",
                                                             "market_last_price")]]),
    "a tick folds the peak: the trailing stop hangs off it": (
        [OPEN, (1, price("101.4", "s0", 1, rules=TRAILING)), (2, PriceSeen(D("102"), T0 + timedelta(seconds=2))),
         (3, Published(frozenset())), (4, price("101.4", "s1", 4, rules=TRAILING))],
        [OPENED, [("evaluated",)], [], [], [("evaluated",), ("send", "trailing_stop", "2", "101.490", "s1",
                                                               "Market", "market_last_price")]]),
    "a tick from before the open is not folded": (
        [(10, row(at=10)), (11, PriceSeen(D("102"), T0)), (12, price("101.4", "s1", 12, rules=TRAILING))],
        [OPENED, [], [("evaluated",)]]),
    "a bar from before the open is not this position's": (
        [(10, row(at=10)), (11, BarClosed(D("103"), D("99"), T0)), (12, price("100.5", "s1", 12))],
        [OPENED, [], [("evaluated",)]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_event_sequences(name):
    events, expected = CASES[name]
    state, effects = None, []
    for seconds, event in events:
        stepped = step(state, event, T0 + timedelta(seconds=seconds))
        state = stepped.state
        effects.append([said(effect) for effect in stepped.effects])
    assert effects == expected


def test_send_carries_the_states_for_recorded_and_not_recorded():
    state = step(None, row(), T0).state
    stepped = step(state, price("97.9", "s1", 1), T0 + timedelta(seconds=1))
    exit = stepped.first(SendExit)
    assert [f.signal_id for f in stepped.state.in_flight] == ["s1"]      # the state the sent exit commits
    assert exit.unsent.in_flight == () and exit.unsent.last_exit_at is None


def test_a_missing_row_ends_the_position():
    state = step(None, row(), T0).state
    stepped = step(state, RowRead(None), T0 + timedelta(seconds=1))
    assert stepped.state is None and [said(e) for e in stepped.effects] == [("row", "gone")]


def test_the_step_reads_no_clock():
    """Every `now` is passed in: no datetime.now/utcnow/today, no time module in the step."""
    tree = ast.parse(inspect.getsource(step_module))
    calls = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert not calls & {"now", "utcnow", "today", "monotonic", "perf_counter"}
    assert "time" not in imported


FAST = TokenBucket(D("0.5"), 2)     # two exits at once, then one every 2 s


@pytest.mark.parametrize("name, bucket, at, sends, tokens_after", [
    ("a full bucket (None) gives its first token", None, 1, True, "1"),
    ("a bucket with one token gives it, refilled by half a token in 1 s", BucketState(D(1), T0), 1, True, "0.5"),
    ("an empty bucket refills at the rate: one token 2 s later", EMPTY, 2, True, "0"),
    ("an empty bucket holds the exit 1 s later", EMPTY, 1, False, None),
    ("no rate: nothing is taken", "unlimited", 1, True, None),
])
def test_the_step_takes_the_assets_token_for_the_exit_it_sends(name, bucket, at, sends, tokens_after):
    """The per-asset rate is the step's rule: checked and taken at `now`; the caller keeps the
    bucket the sent exit carries once it is recorded (the daemon) or filled (the backtest)."""
    state = step(None, row(), T0).state
    rate = None if bucket == "unlimited" else FAST
    event = price("97.9", "s1", at, rate=rate, bucket=None if bucket == "unlimited" else bucket)
    stepped = step(state, event, T0 + timedelta(seconds=at))
    exit = stepped.first(SendExit)
    assert (exit is not None) == sends, name
    if tokens_after is None:
        assert exit is None or exit.bucket is None, name
    else:
        assert exit.bucket == BucketState(D(tokens_after), T0 + timedelta(seconds=at)), name


@pytest.mark.parametrize("name, debounce_s, max_delay_s, offers, due_at", [
    ("released debounce_s after the only price", 0.05, 0.25, [0], 0.05),
    ("a burst: debounce_s after its last price", 0.05, 0.25, [0, 0.04, 0.08], 0.13),
    ("a burst that never pauses: at the max delay after its first", 0.05, 0.25, [0, 0.04, 0.08, 0.12, 0.16, 0.2],
     0.25),
    ("no debounce: at once", 0, 0, [0], 0),
])
def test_the_debounce_both_callers_use(name, debounce_s, max_delay_s, offers, due_at):
    """msd.strategies.exit_step.debouncer, made from the exits section by the daemon's role and
    by the backtest: when an evaluation is due after prices offered at `offers` seconds."""
    config = type("Exits", (), {"debounce_s": debounce_s, "debounce_max_delay_s": max_delay_s})
    pacing = step_module.debouncer(config)
    for seconds in offers:
        pacing.offer("p1", "p1", T0 + timedelta(seconds=seconds))
    assert pacing.next_due_at() == T0 + timedelta(seconds=due_at), name
    assert pacing.due(T0 + timedelta(seconds=due_at) - timedelta(microseconds=1)) == [], name
    assert pacing.due(T0 + timedelta(seconds=due_at)) == ["p1"], name


TIMED = ExitRules.from_mapping({"stop_loss_pct": 2, "cooldown_seconds": 30,
                                "time_exit": {"max_hold_seconds": 600, "min_profit_pct": 0}})


def opened_at(seconds: float, **changes):
    state = step(None, row(at=seconds), T0 + timedelta(seconds=seconds)).state
    return replace(state, **changes)


@pytest.mark.parametrize("name, state, rules, held, now, expected", [
    ("nothing timed: only a new price or row can change the verdict", lambda: opened_at(0), RULES, None, 10, None),
    ("the time exit's moment", lambda: opened_at(0), TIMED, None, 10, 600),
    ("past the time exit's moment: nothing timed is left", lambda: opened_at(0), TIMED, None, 700, None),
    ("a cooldown ends before the time exit", lambda: opened_at(0, last_exit_at=T0 + timedelta(seconds=5)), TIMED,
     "cooldown", 10, 35),
    ("a rejection backoff ends", lambda: opened_at(0, retry_at=T0 + timedelta(seconds=20)), RULES,
     "rejection_backoff", 10, 20),
    ("the asset's token: any later moment", lambda: opened_at(0), RULES, "asset_rate", 10, 10.000001),
    ("no position", lambda: None, TIMED, None, 10, None),
])
def test_when_an_unchanged_price_may_decide_otherwise(name, state, rules, held, now, expected):
    """look_again: where a backtest's verification pass may decide what the last evaluation did not."""
    moment = step_module.look_again(state(), rules, held, T0 + timedelta(seconds=now))
    assert moment == (None if expected is None else T0 + timedelta(seconds=expected)), name
