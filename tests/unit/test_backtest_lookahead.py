"""No look-ahead, proven by poisoning the future (msd.backtest.lookahead): one simulated day,
two strategies trading every minute, exits and trainings before the cut."""
from datetime import timedelta
from decimal import Decimal

from msd.backtest.candles import load_series
from msd.backtest.fills import CostModel
from msd.backtest.lookahead import check, poison
from msd.backtest.replay import Options
from tests.backtest_helpers import T0, random_walk, strategy, write_candles, write_config

COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(milliseconds=200),
                  timedelta(seconds=300))


def test_nothing_before_the_cut_depends_on_what_comes_after(tmp_path):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1),
                                        strategy("momentum", "BTCUSDT", "momentum", 0.2, seed=2)],
                             trainer={"min_new_rows": 100, "min_samples": 30}, data_threshold=400)
    series = load_series(write_candles(tmp_path, random_walk(1440, 5, step=0.003)), "BTCUSDT")
    result = check(config, [series], Options(costs=COSTS, seed=3), cut=T0 + timedelta(minutes=600))
    assert result.identical_before, result.first_difference
    assert result.decisions_before >= 50 and result.exits_before >= 1 and result.trainings_before >= 1, result
    assert result.differs_after


def test_the_check_sees_a_replay_that_peeks(tmp_path, monkeypatch):
    """A planted look-ahead (each candle carrying the close five candles ahead) is caught.

    Five, not one: a one-candle peek shows before the cut only through a fill or an exit inside
    the last candle before it (decisions at its close are at the cut), which a run need not have
    (it stopped showing once a newer signal cancelled the resting Limit orders there)."""
    from msd.backtest import replay as replay_module
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1),
                                        strategy("momentum", "BTCUSDT", "momentum", 0.2, seed=2)])
    series = load_series(write_candles(tmp_path, random_walk(300, 6, step=0.003)), "BTCUSDT")
    original = replay_module.Replay.run

    def peeking_run(self):
        candles = self.series["BTCUSDT"].candles
        self.series["BTCUSDT"] = self.series["BTCUSDT"].__class__(
            "BTCUSDT", "x", tuple(c.__class__(c.open_time, c.open, max(c.high, n.close), min(c.low, n.close), n.close,
                                              c.volume) for c, n in zip(candles, candles[5:])), timedelta(minutes=1))
        return original(self)
    monkeypatch.setattr(replay_module.Replay, "run", peeking_run)
    result = check(config, [series], Options(costs=COSTS, seed=3), cut=T0 + timedelta(minutes=200))
    assert not result.identical_before


def test_poison_keeps_the_past_and_changes_the_future(tmp_path):
    series = load_series(write_candles(tmp_path, random_walk(100, 1)), "BTCUSDT")
    cut = T0 + timedelta(minutes=60)
    for kind in ("noise", "trend"):
        poisoned = poison(series, cut, kind, 0)
        assert poisoned.candles[:60] == series.candles[:60]
        assert all(a != b for a, b in zip(poisoned.candles[61:], series.candles[61:]))
    inside = poison(series, cut, "inside", 0)
    assert inside.candles[60].open == series.candles[60].open and inside.candles[60] != series.candles[60]
    assert inside.candles[61:] == series.candles[61:]


def test_the_shuffled_control_moves_outcomes_between_decisions():
    import random
    from datetime import datetime, timezone
    from msd.backtest.learner import shuffled_outcomes
    from msd.learning.outcomes import Decision
    decisions = [Decision(f"s{i}", "a", "BTCUSDT", "buy", datetime(2024, 1, 1, 0, i, tzinfo=timezone.utc),
                          {"price": 100.0 + i}, 10.0, "warmup", None, 0.5, (100.0 + i) * (1 + i / 1000))
                 for i in range(50)]
    shuffled = shuffled_outcomes(decisions, random.Random(1))
    moves = sorted(round(d.horizon_close / d.price, 9) for d in decisions)
    assert sorted(round(d.horizon_close / d.price, 9) for d in shuffled) == moves
    assert [d.horizon_close / d.price for d in shuffled] != [d.horizon_close / d.price for d in decisions]
    assert [d.snapshot for d in shuffled] == [d.snapshot for d in decisions]


def test_nothing_before_the_cut_depends_on_what_comes_after_with_five_minute_candles(tmp_path):
    """The same proof on 5-minute candles: the path over the candle's length and the decision at
    its close must not see the candle after it (nor the inside of the candle holding the cut)."""
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1),
                                        strategy("momentum", "BTCUSDT", "momentum", 0.2, seed=2)],
                             trainer={"min_new_rows": 60, "min_samples": 20}, data_threshold=120)
    series = load_series(write_candles(tmp_path, random_walk(600, 5, step=0.007, minutes=5)), "BTCUSDT")
    assert series.length == timedelta(minutes=5)
    result = check(config, [series], Options(costs=COSTS, seed=3), cut=T0 + timedelta(minutes=5 * 400),
                   after=timedelta(hours=10))
    assert result.identical_before, result.first_difference
    assert result.decisions_before >= 50 and result.exits_before >= 1 and result.trainings_before >= 1, result
    assert result.differs_after
