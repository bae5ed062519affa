"""msd-sim's regimes through `msd backtest` (issue 12): one simulated day of the sim market's own
1-minute bars as candles, msd's warm-up, labels, trainings and the shipped gate. The learnable
regime gets a model promoted whose calls then pay more often than the best constant side on
the same decisions; the noise regime never gets one promoted, nor does the learnable day with
its outcomes shuffled in time (the report's control run).

Candles carry no order book (the candle feature profile: imbalance 0, a fixed spread), so the
edge must be in the returns. With the sim's default parameters (drift 0.0008 over noise 0.0003
per minute) the last minute's return alone gives the drift away: on this setup (seeds 1-3, 21
trainings) the naive rule (its sign) scored 0.86-0.96 on every validation window of 200+
decisions, models up to 0.97, and the gate rightly refused every one for not beating the naive
rule by its margin. With drift 0.0005 over noise 0.0006 per minute (the numbers of BOOK_EDGE in
tests/integration/test_learning_sim.py) one minute is a noisy read of the drift (the naive rule
scores about 0.75) while the 5- and 15-minute returns read it well (a logistic model on them
scored 0.88 against the naive rule's 0.75 over 12 simulated days of the same process), so there
is something to learn beyond the naive rule. Three independent assets: one strategy deciding on
each every minute gives about 4,000 labelled decisions in the day, so the gate sees 200+
validation decisions by mid-morning and a promoted model has hours of calls left to be judged on.

Everything else is as shipped: the backtest's default costs (0.055 % taker, 0.02 % maker, 10 bps
spread, 200 ms latency), TrainingParams' gate and label (15-minute horizon, 0.2 % round-trip
cost floor), trainer.data_threshold 500. One stated change: the warm-up exposure cap is lifted,
because a cap drops the calls that would add to a position, so the emitted calls of a model
that is right about a long trend are mostly its wrong ones (measured on a two-asset day with
the 200 USDT cap: a promoted model's 30 calls, all "buy", while every outcome was "sell pays").

Seed 1 is tested; seeds 1-6 all pass (README, "msd-sim's regimes"). Runtime on the shared 2-core
machine: 5-15 s to generate the day (the sim's trade prints), 8-20 s per backtest.
"""
import argparse
from collections import Counter
from dataclasses import replace

import pytest

from msd.backtest.command import add_arguments, options_from
from msd.backtest.replay import Replay
from msd.backtest.summary import summarise
from msd.ml.features import BUY, SELL
from msd.ml.params import TrainingParams
from tests.backtest_helpers import T0, strategy, write_config
from tests.sim_replay import sim_series

ASSETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DAY = 1440                      # candles: one simulated day, the 61 start-up candles included
RETURNS_EDGE = {"drift_per_minute": 0.0005, "volatility_per_minute": 0.0006}
SHIPPED = TrainingParams()
SID = "sim_explorer"


def day_of(regime: str, seed: int):
    """One day of the regime (the noise regime has no drift; its noise is the learnable's)."""
    return sim_series(regime, DAY, seed=seed, assets=ASSETS, start=T0, **RETURNS_EDGE)


@pytest.fixture(scope="module")
def learnable_day():
    return day_of("learnable", seed=1)


def backtest(tmp_path, series, *, shuffled_labels: bool = False):
    explorer = {**strategy(SID, ASSETS[0], heuristic="random", randomness=1.0, seed=7,
                           max_exposure_usdt=10_000_000), "assets": list(ASSETS)}
    gate = {key: getattr(SHIPPED, key) for key in ("min_new_rows", "min_samples", "min_emitted_calls")}
    _, config = write_config(tmp_path, [explorer], trainer=gate, data_threshold=500)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = replace(options_from(parser.parse_args([])), shuffled_labels=shuffled_labels)
    replay = Replay(config, series, options).run()
    return replay, summarise(replay)["strategies"][SID]


def gate_figures(report) -> list:
    return [(v["version"], v["trained_at"][11:16], v["promoted"], v["recorded_validation"]) for v in report["versions"]]


def test_learnable_regime_promotes_a_model_whose_calls_beat_the_base_rate(tmp_path, learnable_day):
    replay, report = backtest(tmp_path, learnable_day)
    assert report["gate_passes"] >= 1, gate_figures(report)
    learning = replay.slots[0].learning
    versions = {f"v{v.number}": v for v in learning.versions}
    calls = [row for row in learning.labelled if row.decision.mode == "model"]
    # Out of sample by construction: every call comes after its version was trained and served.
    assert all(row.decision.decided_at >= versions[row.decision.model_version].active_from for row in calls)
    outcomes = Counter(row.label for row in calls)
    base_rate = max(outcomes[BUY], outcomes[SELL]) / len(calls)
    pay_rate = report["model_calls"]["pay_rate"]
    assert report["model_calls"]["calls"] == len(calls) >= 200, report["model_calls"]
    # Beats the best constant side in hindsight on the very decisions the models called.
    assert pay_rate > base_rate, (pay_rate, base_rate, outcomes, gate_figures(report))


def assert_judged_and_refused(report) -> None:
    # The gate judged full windows (not only trainings refused for too few decisions) ...
    assert any(v["recorded_validation"]["n"] >= SHIPPED.min_samples for v in report["versions"]), gate_figures(report)
    # ... and passed none of them.
    assert report["gate_passes"] == 0, gate_figures(report)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noise_regime_never_promotes(tmp_path, seed):
    _, report = backtest(tmp_path, day_of("noise", seed))
    assert_judged_and_refused(report)


def test_learnable_day_with_outcomes_shuffled_in_time_never_promotes(tmp_path, learnable_day):
    """The same trending market, where most moves clear the cost (on the noise days most do
    not), but each training sees another decision's outcome: nothing in the features predicts it."""
    _, report = backtest(tmp_path, learnable_day, shuffled_labels=True)
    assert_judged_and_refused(report)
