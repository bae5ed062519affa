"""Exit fills on hand-built candles, one row per exit reason (msd.backtest.exiting, fills):
the path is open -> adverse extreme -> favourable extreme -> close; a rule fired inside the
candle fills at its level, at the open on a gap, half the spread worse. The exits role's
pacing applies in event time: the debounce (msd.strategies.exit_step.debouncer) and the
per-asset token bucket, one row per rule."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.backtest.candles import Candle
from msd.backtest.exiting import AssetExits, candle_path
from msd.backtest.fills import PathPoint
from msd.exchange.positions import apply_fill
from msd.rules import Debouncer, ExitRules, Instrument
from msd.values.bucket import TokenBucket
from tests.backtest_helpers import walk_exits

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
INSTRUMENT = Instrument(Decimal("0.001"), Decimal("0.001"), Decimal(5), "test")
HALF = Decimal("0.001")          # 20 bps spread


# exits.debounce_s and debounce_max_delay_s as shipped (etc/model-service.yaml's defaults)
SHIPPED_DEBOUNCE = (timedelta(seconds=0.05), timedelta(seconds=0.25))


def asset_exits(rules: dict, debounce=SHIPPED_DEBOUNCE, rate: TokenBucket | None = None) -> AssetExits:
    ids = iter(range(1000))
    return AssetExits("BTCUSDT", ExitRules.from_mapping(rules), INSTRUMENT, Debouncer(*debounce), rate,
                      lambda: f"x{next(ids)}")


def opened(side: str, price: str = "100", size: str = "10"):
    return apply_fill(None, "BTCUSDT", side, Decimal(size), Decimal(price), Decimal(0), T0)


def candle(minute: int, o, h, l, c) -> Candle:
    return Candle(T0 + minute * MINUTE, *(Decimal(str(x)) for x in (o, h, l, c)), Decimal(1))


def exits_on(side: str, candles, rules, **pacing) -> list:
    return walk_exits(asset_exits(rules, **pacing), opened(side),
                      [candle_path(side == "Buy", c, MINUTE) for c in candles], HALF)


def first_exit(side, candles, rules):
    fills = exits_on(side, candles, rules)
    return fills[0] if fills else None


@pytest.mark.parametrize("name, side, rules, candles, reason, base_price, quantity", [
    ("stop inside the candle fills at its level", "Buy", {"stop_loss_pct": 2},
     [(1, 100, 101, 97, 99)], "stop_loss", "98", "10"),
    ("stop on a gap fills at the open, worse than the level", "Buy", {"stop_loss_pct": 2},
     [(1, 96, 97, 95, 96.5)], "stop_loss", "96", "10"),
    ("stop and take-profit in one candle: the stop first", "Buy", {"stop_loss_pct": 2, "take_profit": {"pct": 3}},
     [(1, 100, 104, 97, 103)], "stop_loss", "98", "10"),
    ("take-profit inside the candle fills at its level", "Buy", {"take_profit": {"pct": 3}},
     [(1, 100, 104, 99.5, 103.5)], "take_profit", "103", "10"),
    ("take-profit on a gap up fills at the open", "Buy", {"take_profit": {"pct": 3}},
     [(1, 105, 106, 104, 105)], "take_profit", "105", "10"),
    ("short stop above the entry", "SELL", {"stop_loss_pct": 2},
     [(1, 100, 103, 99, 101)], "stop_loss", "102", "10"),
    ("trailing stop hangs off the peak folded earlier", "Buy",
     {"trailing": {"activation_pct": 1.5, "distance_pct": 0.8}},
     [(1, 100, 102, 100, 102), (2, 101.9, 102, 101, 101.5)], "trailing_stop", "101.184", "10"),
    ("ladder step closes its share at its level", "Buy",
     {"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 6, "close": 1.0}]}},
     [(1, 100, 103.5, 99.8, 103)], "take_profit_step", "103", "5"),
    ("time exit at the first path point after the hold (pessimistically the adverse extreme)", "Buy",
     {"time_exit": {"max_hold_seconds": 130, "min_profit_pct": 0}},
     [(1, 100, 100.2, 99.9, 100.1), (2, 100.3, 100.4, 100.2, 100.3)], "time_exit", "100.2", "10"),
])
def test_exit_fill_per_reason(name, side, rules, candles, reason, base_price, quantity):
    fired = first_exit(side, [candle(*c) for c in candles], rules)
    assert fired is not None, name
    closing = "SELL" if side == "Buy" else "Buy"
    expected = Decimal(base_price) * (1 - HALF if closing == "SELL" else 1 + HALF)
    assert fired.decision.reason.value == reason, name
    assert fired.price == pytest.approx(expected, rel=Decimal("1e-12")), name
    assert fired.decision.quantity == Decimal(quantity), name


def test_no_exit_while_the_path_stays_inside_the_levels():
    assert first_exit("Buy", [candle(1, 100, 102.5, 98.5, 101)],
                      {"stop_loss_pct": 2, "take_profit": {"pct": 3}}) is None


def test_breakeven_stop_after_the_first_ladder_step():
    """The ladder's first step closes half at its level and moves the stop to entry + fee; a later
    dip fills the rest at that breakeven level."""
    rules = {"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 6, "close": 1.0}],
                             "breakeven_after_first_step": True, "breakeven_fee_pct": 0.1}}
    fills = exits_on("Buy", [candle(1, 100, 103.5, 99.8, 103), candle(3, 101, 101.2, 99.5, 99.8)], rules)
    assert [(f.decision.reason.value, f.decision.quantity) for f in fills] == [("take_profit_step", 5),
                                                                              ("breakeven_stop", 5)]
    assert fills[1].price == pytest.approx(Decimal("100.1") * (1 - HALF), rel=Decimal("1e-12"))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ticks(*prices_at) -> list[tuple[PathPoint, ...]]:
    """Hand-built prices: (seconds after T0, price) each."""
    return [tuple(PathPoint("tick", Decimal(str(p)), at(s)) for s, p in prices_at)]


STOP = {"stop_loss_pct": 2}
LADDER = {"take_profit": {"steps": [{"at_pct": 1, "close": 0.5}, {"at_pct": 2, "close": 1.0}]}, "stop_loss_pct": 2,
          "cooldown_seconds": 1}
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize("name, rules, debounce, rate, prices, expected", [
    ("no debounce: decided at the price's own time", STOP, (timedelta(0), timedelta(0)), None,
     [(10, 97.9)], [("stop_loss", 10, "97.9")]),
    ("decided debounce_s after the last price", STOP, (SECOND, 3 * SECOND), None,
     [(10, 97.9)], [("stop_loss", 11, "97.9")]),
    ("a burst is decided once, at its newest price: a dip the next price recovers goes unseen", STOP,
     (SECOND, 3 * SECOND), None, [(10, 97.9), (10.5, 99)], []),
    ("a burst longer than debounce_max_delay_s is decided at the max delay, at the newest price then", STOP,
     (SECOND, 2 * SECOND), None, [(10, 99), (10.8, 99.5), (11.6, 97.9), (12.4, 99)], [("stop_loss", 12, "97.9")]),
    ("the asset's token bucket holds an exit past its cooldown until a price comes after its token", LADDER,
     (timedelta(0), timedelta(0)), TokenBucket(Decimal("0.5"), 1), [(10, 101), (11.5, 102), (12.5, 102.1)],
     [("take_profit_step", 10, "101"), ("take_profit_step", 12.5, "102.1")]),
    ("a bucket with a token left lets the second step out once its cooldown is over", LADDER,
     (timedelta(0), timedelta(0)), TokenBucket(Decimal("0.5"), 2), [(10, 101), (11.5, 102), (12.5, 102.1)],
     [("take_profit_step", 10, "101"), ("take_profit_step", 11.5, "102")]),
])
def test_pacing_in_event_time(name, rules, debounce, rate, prices, expected):
    """Each exit: (reason, decided at seconds after the open, the price it was judged at)."""
    fills = walk_exits(asset_exits(rules, debounce, rate), opened("Buy"), ticks(*prices) + ticks((60, 100.5)), HALF)
    got = [(f.decision.reason.value, (f.at - T0).total_seconds(), str(f.decision.trigger_price)) for f in fills]
    assert got[:len(expected)] == expected, name
    assert all(r != "stop_loss" for r, *_ in got[len(expected):]), name


TIMED = {"time_exit": {"max_hold_seconds": 12, "min_profit_pct": 0}}


@pytest.mark.parametrize("name, rules, rate, verify_from, prices, expected", [
    ("a time exit with no new price: at the first verification pass after the hold", TIMED, None, T0,
     [(1, 100.2)], [("time_exit", 15, "100.2")]),
    ("the passes are on the grid from the role's start", TIMED, None, T0 - timedelta(seconds=2),
     [(1, 100.2)], [("time_exit", 13, "100.2")]),
    ("without passes it waits for the next price", TIMED, None, None,
     [(1, 100.2)], [("time_exit", 60, "100.5")]),
    ("an exit held by the asset's token goes out at the first pass after the token is back", LADDER,
     TokenBucket(Decimal("0.5"), 1), T0, [(10, 101), (11.5, 102)],
     [("take_profit_step", 10, "101"), ("take_profit_step", 15, "102")]),
])
def test_verification_passes_in_event_time(name, rules, rate, verify_from, prices, expected):
    """The exits role's verification pass (every 5 s from its start) decides what only time
    changed (msd.strategies.exit_step.look_again): each exit (reason, decided at, price)."""
    ids = iter(range(1000))
    exits = AssetExits("BTCUSDT", ExitRules.from_mapping(rules), INSTRUMENT, Debouncer(timedelta(0), timedelta(0)),
                       rate, lambda: f"x{next(ids)}", started_at=verify_from)
    fills = walk_exits(exits, opened("Buy"), ticks(*prices) + ticks((60, 100.5)), HALF)
    got = [(f.decision.reason.value, (f.at - T0).total_seconds(), str(f.decision.trigger_price)) for f in fills]
    assert got == expected, name
