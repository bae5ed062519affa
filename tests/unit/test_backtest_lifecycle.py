"""The backtest trains when msd.learning.lifecycle (the daemon's learning step) asks, and its
report says what the step asked (issue 12: the live code, not a copy)."""
from datetime import timedelta
from decimal import Decimal

from msd.backtest.candles import load_series
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from msd.backtest.summary import summarise
from msd.learning.lifecycle import RequestTraining
from tests.backtest_helpers import random_walk, strategy, write_candles, write_config

COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(milliseconds=200),
                  timedelta(seconds=300))


def test_every_training_of_a_replay_was_asked_for_by_the_lifecycle_step(tmp_path):
    _, config = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=3)], data_threshold=120,
                             trainer={"min_new_rows": 100, "min_samples": 30})
    series = [load_series(write_candles(tmp_path, random_walk(900, 5, step=0.003)), "BTCUSDT")]
    replay = Replay(config, series, Options(costs=COSTS, seed=1)).run()
    line = summarise(replay)["strategies"]["explorer"]
    asked = sorted({at for at, sid, effect in replay.lifecycle_log if isinstance(effect, RequestTraining)})
    trained = [event[0] for event in replay.events if event[1] == "training"]
    assert trained == asked
    assert len(trained) == line["trainings"] + line["droughts"] == sum(line["training_triggers"].values()) >= 2
    assert line["training_triggers"]["data_threshold"] >= 2
