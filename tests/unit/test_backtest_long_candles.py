"""Candles longer than a minute replay as paths over their length (msd.backtest.replay, fills,
exiting): exits on the 5-minute path in the pessimistic order, decisions at the candle close,
Market fills at the next candle's open, labels read at the first close at or after the horizon,
24-hour volume over a day of candles; mixed lengths in one run are refused."""
from datetime import timedelta
from decimal import Decimal

import pytest

from msd.backtest.candles import Candle, CandleError, grid_start, load_series
from msd.backtest.exiting import AssetExits, candle_path
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from msd.exchange.positions import apply_fill
from msd.rules import Debouncer, ExitRules, Instrument
from tests.backtest_helpers import T0, random_walk, strategy, walk_exits, write_candles, write_config

FIVE = timedelta(minutes=5)
HALF = Decimal("0.001")
INSTRUMENT = Instrument(Decimal("0.001"), Decimal("0.001"), Decimal(5), "test")
# A 4 bps spread: below order-manager's 0.1 % threshold, so entries go out as Market orders (CONTRACTS 1.2).
TIGHT = Decimal("0.0002")
COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), TIGHT, timedelta(milliseconds=200), timedelta(seconds=900))


def candle(index: int, o, h, l, c) -> Candle:
    return Candle(T0 + index * FIVE, *(Decimal(str(x)) for x in (o, h, l, c)), Decimal(1))


DEBOUNCE = timedelta(seconds=0.05)     # exits.debounce_s as shipped: decisions this long after a price


def first_exit(side: str, rules: dict, candles: list[tuple]):
    position = apply_fill(None, "BTCUSDT", side, Decimal(10), Decimal(100), Decimal(0), T0)
    ids = iter(range(1000))
    exits = AssetExits("BTCUSDT", ExitRules.from_mapping(rules), INSTRUMENT, Debouncer(DEBOUNCE, 5 * DEBOUNCE), None,
                       lambda: f"x{next(ids)}")
    fills = walk_exits(exits, position, [candle_path(side == "Buy", candle(*row), FIVE) for row in candles], HALF)
    return fills[0] if fills else None


@pytest.mark.parametrize("name, side, rules, candles, reason, base, at", [
    ("stop inside a 5-minute candle, at its level, a third into it", "Buy", {"stop_loss_pct": 2},
     [(1, 100, 101, 97, 99)], "stop_loss", "98", T0 + FIVE + FIVE / 3),
    ("stop and take-profit in one 5-minute candle: the stop first", "Buy",
     {"stop_loss_pct": 2, "take_profit": {"pct": 3}}, [(1, 100, 104, 97, 103)], "stop_loss", "98",
     T0 + FIVE + FIVE / 3),
    ("short: take-profit below, stop above in one candle: the stop first", "SELL",
     {"stop_loss_pct": 2, "take_profit": {"pct": 3}}, [(1, 100, 103, 96, 97)], "stop_loss", "102",
     T0 + FIVE + FIVE / 3),
    ("stop on a gap at the 5-minute open", "Buy", {"stop_loss_pct": 2},
     [(1, 96, 97, 95, 96.5)], "stop_loss", "96", T0 + FIVE),
    ("take-profit inside the candle", "Buy", {"take_profit": {"pct": 3}},
     [(1, 100, 104, 99.5, 103.5)], "take_profit", "103", T0 + FIVE + 2 * FIVE / 3),
    ("time exit on the path of the candle where the hold ends, not earlier", "Buy",
     {"time_exit": {"max_hold_seconds": 400, "min_profit_pct": 0}},
     [(0, 100, 100.2, 99.9, 100.1), (1, 100.1, 100.4, 100.0, 100.3)], "time_exit", "100", T0 + FIVE + FIVE / 3),
])
def test_exits_on_a_five_minute_path(name, side, rules, candles, reason, base, at):
    fired = first_exit(side, rules, candles)
    assert fired is not None, name
    assert (fired.decision.reason.value, fired.base, fired.point.at) == (reason, Decimal(base), at), name
    assert fired.at == at + DEBOUNCE, name
    expected = fired.base * (1 - HALF) if side == "Buy" else fired.base * (1 + HALF)
    assert fired.price == expected


def test_candle_grid_alignment():
    assert grid_start(T0 + timedelta(minutes=7), T0, FIVE) == T0 + timedelta(minutes=10)
    assert grid_start(T0 + timedelta(minutes=10), T0, FIVE) == T0 + timedelta(minutes=10)


def five_minute_replay(tmp_path, n=400):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1)],
                             trainer={"min_new_rows": 50, "min_samples": 20}, data_threshold=100)
    series = load_series(write_candles(tmp_path, random_walk(n, 4, step=0.006, minutes=5)), "BTCUSDT")
    assert series.length == FIVE
    return series, Replay(config, [series], Options(costs=COSTS, seed=1)).run()


def test_decisions_at_five_minute_closes_and_market_fills_at_the_next_open(tmp_path):
    series, replay = five_minute_replay(tmp_path)
    opens = {c.open_time: c for c in series.candles}
    decisions = [e for e in replay.events if e[1] == "decision"]
    assert len(decisions) >= 50
    assert all((e[0] - T0) % FIVE == timedelta(0) for e in decisions)      # only at candle closes
    market = 0
    for fill in replay.account.fills:
        info = replay.decisions[fill.signal_id]
        if info["mode"] == "exit":
            continue
        assert fill.at > info["decided_at"]
        if fill.order_type == "Market":
            market += 1
            traded_on = opens[info["decided_at"]]           # the candle that opens at the decision's close
            assert fill.at == info["decided_at"] + COSTS.latency
            side_worse = 1 + TIGHT if fill.side == "Buy" else 1 - TIGHT
            assert fill.price == traded_on.open * side_worse
    assert market >= 10


def test_labels_and_volume_use_the_candle_length(tmp_path):
    series, replay = five_minute_replay(tmp_path, n=300)
    day = timedelta(days=1) // FIVE
    assert replay.volume["BTCUSDT"].maxlen == day
    last = series.candles[-1]
    end_inside = last.open_time + timedelta(minutes=2)        # a horizon ending inside the last candle
    assert replay._bar_close("BTCUSDT", end_inside, last.open_time + FIVE) == last.close
    assert replay._bar_close("BTCUSDT", end_inside, last.open_time + FIVE - timedelta(seconds=1)) is None


def test_mixed_candle_lengths_are_refused(tmp_path):
    _, config = write_config(tmp_path, [strategy("a", "BTCUSDT"), strategy("b", "ETHUSDT")])
    five = load_series(write_candles(tmp_path, random_walk(100, 1, minutes=5), "a.json"), "BTCUSDT")
    one = load_series(write_candles(tmp_path, random_walk(100, 2), "b.json"), "ETHUSDT")
    with pytest.raises(CandleError, match="share one candle length"):
        Replay(config, [five, one], Options(costs=COSTS))


def test_the_report_states_the_candle_length_and_its_feature_profile(tmp_path):
    from msd.backtest.command import assumptions
    five = load_series(write_candles(tmp_path, random_walk(20, 1, minutes=5), "a.json"), "BTCUSDT")
    one = load_series(write_candles(tmp_path, random_walk(20, 1), "b.json"), "BTCUSDT")
    stated = " ".join(assumptions(Options(costs=COSTS), [five]))
    assert "Candle length: 5 minute(s)" in stated and "/ sqrt(candle minutes)" in stated
    stated = " ".join(assumptions(Options(costs=COSTS), [one]))
    assert "Candle length: 1 minute(s)" in stated and "sqrt(candle minutes)" not in stated
