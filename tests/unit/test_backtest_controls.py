"""The report's control runs (msd.backtest.command.controls): costs scaled x0.5 and x2, and a
run whose trainings see outcomes shuffled in time, which must promote nothing."""
from datetime import timedelta
from decimal import Decimal

from msd.backtest.candles import load_series
from msd.backtest.command import controls
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from msd.backtest.summary import summarise
from tests.backtest_helpers import random_walk, strategy, write_candles, write_config

COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(milliseconds=200),
                  timedelta(seconds=300))


def test_controls_scale_costs_and_the_shuffled_run_promotes_nothing(tmp_path):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=1)],
                             trainer={"min_new_rows": 100, "min_samples": 30, "min_accuracy": 0.5,
                                      "min_balanced_accuracy": 0.5, "min_emitted_calls": 5}, data_threshold=150)
    series = [load_series(write_candles(tmp_path, random_walk(600, 8, step=0.003)), "BTCUSDT")]
    options = Options(costs=COSTS, seed=2)
    report = summarise(Replay(config, series, options).run())
    result = controls(config, series, options, report)
    factors = [row["factor"] for row in result["cost_sensitivity"]]
    assert factors == ["0.5", "1", "2"]
    fees = {row["factor"]: Decimal(row["fees"]) for row in result["cost_sensitivity"]}
    assert fees["2"] > fees["1"] > 0
    shuffled = result["shuffled_labels"]
    assert shuffled["trainings"] >= 1
    assert shuffled["promotions"] == 0, shuffled
