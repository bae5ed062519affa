"""Exit fills on hand-built candles, one row per exit reason (msd.backtest.exiting, fills):
the path is open -> adverse extreme -> favourable extreme -> close; a rule fired inside the
candle fills at its level, at the open on a gap, half the spread worse."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.backtest.candles import Candle
from msd.backtest.exiting import candle_path, exit_on_path, read_row
from msd.exchange.positions import apply_fill
from msd.rules import ExitRules, Instrument

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
INSTRUMENT = Instrument(Decimal("0.001"), Decimal("0.001"), Decimal(5), "test")
HALF = Decimal("0.001")          # 20 bps spread


def opened(side: str, price: str = "100", size: str = "10"):
    position = apply_fill(None, "BTCUSDT", side, Decimal(size), Decimal(price), Decimal(0), T0)
    return read_row(None, "BTCUSDT", position, 1, T0)


def candle(minute: int, o, h, l, c) -> Candle:
    return Candle(T0 + minute * MINUTE, *(Decimal(str(x)) for x in (o, h, l, c)), Decimal(1))


def first_exit(state, candles, rules):
    ids = iter(range(1000))
    for c in candles:
        state, fired, _ = exit_on_path(state, candle_path(state.row.size > 0, c, MINUTE), ExitRules.from_mapping(rules),
                                       INSTRUMENT, HALF, lambda: f"x{next(ids)}")
        if fired:
            return fired
    return None


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
     {"time_exit": {"max_hold_seconds": 150, "min_profit_pct": 0}},
     [(1, 100, 100.2, 99.9, 100.1), (2, 100.3, 100.4, 100.2, 100.3)], "time_exit", "100.2", "10"),
])
def test_exit_fill_per_reason(name, side, rules, candles, reason, base_price, quantity):
    fired = first_exit(opened(side), [candle(*c) for c in candles], rules)
    assert fired is not None, name
    closing = "SELL" if side == "Buy" else "Buy"
    expected = Decimal(base_price) * (1 - HALF if closing == "SELL" else 1 + HALF)
    assert fired.decision.reason.value == reason, name
    assert fired.price == pytest.approx(expected, rel=Decimal("1e-12")), name
    assert fired.decision.quantity == Decimal(quantity), name


def test_no_exit_while_the_path_stays_inside_the_levels():
    assert first_exit(opened("Buy"), [candle(1, 100, 102.5, 98.5, 101)],
                      {"stop_loss_pct": 2, "take_profit": {"pct": 3}}) is None


def test_breakeven_stop_after_the_first_ladder_step():
    """The ladder's first step closes half at its level and moves the stop to entry + fee; a later
    dip fills the rest at that breakeven level."""
    rules = ExitRules.from_mapping({"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 6, "close": 1.0}],
                                                    "breakeven_after_first_step": True, "breakeven_fee_pct": 0.1}})
    position = apply_fill(None, "BTCUSDT", "Buy", Decimal(10), Decimal(100), Decimal(0), T0)
    state = read_row(None, "BTCUSDT", position, 1, T0)
    ids = iter(range(100))
    state, fired, _ = exit_on_path(state, candle_path(True, candle(1, 100, 103.5, 99.8, 103), MINUTE), rules,
                                   INSTRUMENT, HALF, lambda: f"x{next(ids)}")
    assert fired.decision.reason.value == "take_profit_step" and fired.decision.quantity == 5
    position = apply_fill(position, "BTCUSDT", "SELL", Decimal(5), fired.price, Decimal(0), fired.point.at)
    state = read_row(state, "BTCUSDT", position, 2, fired.point.at)
    state, fired, _ = exit_on_path(state, candle_path(True, candle(3, 101, 101.2, 99.5, 99.8), MINUTE), rules,
                                   INSTRUMENT, HALF, lambda: f"x{next(ids)}")
    assert fired.decision.reason.value == "breakeven_stop" and fired.decision.quantity == 5
    assert fired.price == pytest.approx(Decimal("100.1") * (1 - HALF), rel=Decimal("1e-12"))
