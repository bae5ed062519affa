"""The spread from the candles (--spread-from-candles, msd.backtest.spread): Corwin-Schultz on
hand-built candle pairs, --spread-bps as the floor and the fallback, and in the replay the
estimate known at a close prices the next candle's fills (never the candle's own range)."""
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.backtest.candles import Candle, load_series
from msd.backtest.command import assumptions
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from msd.backtest.spread import MAX_HALF_SPREAD, corwin_schultz, half_spread_after
from tests.backtest_helpers import random_walk, strategy, write_candles, write_config

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def candle(minute, o, h, l, c, volume=1) -> Candle:
    return Candle(T0 + timedelta(minutes=minute), *(Decimal(str(x)) for x in (o, h, l, c, volume)))


def test_two_equal_ranges_imply_a_spread_of_the_range():
    """Same range, nothing between: beta = 2x^2, gamma = x^2, so alpha = x and S = 2 tanh(x / 2)."""
    x = math.log(101 / 99)
    a, b = candle(0, 100, 101, 99, 100), candle(1, 100, 101, 99, 100)
    assert corwin_schultz(a, b) == pytest.approx(2 * math.tanh(x / 2))


def test_a_move_between_candles_is_not_spread():
    """The second candle opened 3 above the first's close: shifted back it is the first range again."""
    x = math.log(101 / 99)
    a, b = candle(0, 101, 101, 99, 99), candle(1, 102, 104, 102, 103)
    assert corwin_schultz(a, b) == pytest.approx(2 * math.tanh(x / 2))


def test_a_trend_inside_the_candles_clips_at_zero():
    a, b = candle(0, 100, 100.2, 99.9, 100.2), candle(1, 100.2, 101.5, 100.1, 101.5)
    assert corwin_schultz(a, b) == 0.0


FLOOR = Decimal("0.0005")


@pytest.mark.parametrize("name, previous, current, factor, expected", [
    ("no previous candle: the floor", None, candle(1, 100, 101, 99, 100), 1, FLOOR),
    ("a zero-volume candle: the floor", candle(0, 100, 101, 99, 100, 0), candle(1, 100, 101, 99, 100), 1, FLOOR),
    ("an estimate below the floor: the floor", candle(0, 100, 100.2, 99.9, 100.2), candle(1, 100.2, 101.5, 100.1, 101.5),
     1, FLOOR),
    ("an estimate above the floor: half of it", candle(0, 100, 101, 99, 100), candle(1, 100, 101, 99, 100), 1,
     Decimal(repr(2 * math.tanh(math.log(101 / 99) / 2))).quantize(Decimal("1e-12")) / 2),
    ("scaled by the cost-sensitivity factor", candle(0, 100, 101, 99, 100), candle(1, 100, 101, 99, 100), 2,
     Decimal(repr(2 * math.tanh(math.log(101 / 99) / 2))).quantize(Decimal("1e-12"))),
    ("absurd ranges are capped", candle(0, 100, 400, 25, 100), candle(1, 100, 400, 25, 100), 2, MAX_HALF_SPREAD),
])
def test_half_spread_in_force(name, previous, current, factor, expected):
    assert half_spread_after(previous, current, FLOOR, Decimal(factor)) == expected, name


def test_market_fills_use_the_estimate_known_at_the_previous_close(tmp_path):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1)])
    series = load_series(write_candles(tmp_path, random_walk(300, 7, step=0.0004)), "BTCUSDT")
    costs = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0001"), timedelta(milliseconds=200),
                      timedelta(seconds=300))
    replay = Replay(config, [series], Options(costs=costs, seed=1, spread_from_candles=True)).run()
    halves = replay.half_spreads["BTCUSDT"]
    assert len(halves) == len(series.candles) and len(set(halves)) > 10 and min(halves) == costs.half_spread
    index = {c.open_time: i for i, c in enumerate(series.candles)}
    checked = 0
    for fill in replay.account.fills:
        if fill.order_type != "Market" or replay.decisions[fill.signal_id]["mode"] == "exit":
            continue
        i = index[fill.candle_at]
        side = 1 if fill.side == "Buy" else -1
        assert fill.price == series.candles[i].open * (1 + side * halves[i - 1])
        checked += 1
    assert checked >= 20


def test_the_report_states_the_spread_model():
    costs = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(0), timedelta(seconds=60))
    assert "spread model: fixed" in " ".join(assumptions(Options(costs=costs), []))
    stated = " ".join(assumptions(Options(costs=costs, spread_from_candles=True), []))
    assert "spread model: Corwin-Schultz" in stated and "10 bps (--spread-bps) is the floor" in stated
