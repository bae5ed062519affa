"""When the learning lifecycle is checked, when the warm-up spend is read with it, and when a
warm-up budget starts (msd.learning.cadence): the daemon's signaller and the backtest ask the
same functions, the backtest at its candle closes in event time."""
from datetime import timedelta
from decimal import Decimal

import pytest
import yaml

from msd.backtest.candles import load_series
from msd.backtest.fills import CostModel
from msd.backtest.replay import Options, Replay
from msd.config import load_config
from msd.learning import lifecycle
from msd.learning.cadence import BudgetStart, Cadence, budget_start, check_due
from tests.backtest_helpers import T0, random_walk, strategy, write_candles, write_config

COSTS = CostModel(Decimal("0.00055"), Decimal("0.0002"), Decimal("0.0005"), timedelta(milliseconds=200),
                  timedelta(seconds=300))


def checks(interval_s: float, moments: list[float]) -> list[str]:
    """What each moment does: '-' nothing, 'c' a check, 'C' a check with the slow reads."""
    cadence, said = Cadence(), []
    for at in moments:
        due = check_due(cadence, at, interval_s)
        cadence = due.cadence
        said.append("C" if due.slow else "c" if due.check else "-")
    return said


@pytest.mark.parametrize("name, interval_s, moments, expected", [
    ("the daemon's default: checks every 10 s, the spend once a minute", 10, [0, 5, 10, 20, 50, 60, 70, 120],
     ["C", "-", "c", "c", "c", "C", "c", "C"]),
    ("checks every second: the spend every 10 checks", 1, [0, 1, 5, 9, 10, 11, 20], ["C", "c", "c", "c", "C", "c", "C"]),
    ("a backtest of 1-minute candles under the default: every close reads the spend", 10, [0, 60, 120, 180],
     ["C", "C", "C", "C"]),
    ("checks every 5 minutes on 1-minute candles: every fifth close", 300, [0, 60, 120, 240, 300, 360, 600],
     ["C", "-", "-", "-", "C", "-", "C"]),
    ("a late check (a slow worker, a gap in the candles) counts from when it ran", 10, [0, 75, 80, 85, 135],
     ["C", "C", "-", "c", "C"]),
])
def test_check_cadence(name, interval_s, moments, expected):
    assert checks(interval_s, moments) == expected, name


@pytest.mark.parametrize("before, mode, expected", [
    (None, "warmup", BudgetStart("first warm-up", restart=False)),
    ("warmup", "warmup", BudgetStart("first warm-up", restart=False)),      # kept: only started if missing
    ("paused", "warmup", BudgetStart("first warm-up", restart=False)),      # a resume starts its own
    ("model", "warmup", BudgetStart("back in warm-up", restart=True)),
    (None, "model", None),
    ("warmup", "paused", None),
])
def test_when_a_warmup_budget_starts(before, mode, expected):
    assert budget_start(before, mode) == expected


def replay(tmp_path, **warmup):
    path, _ = write_config(tmp_path, [strategy("explorer", "BTCUSDT", seed=3, **warmup)])
    data = yaml.safe_load(path.read_text())
    data["trainer"]["check_interval_s"] = 300
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, env={})
    series = [load_series(write_candles(tmp_path, random_walk(150, 5, step=0.003)), "BTCUSDT")]
    return Replay(config, series, Options(costs=COSTS, seed=1, startup_candles=20)).run()


def test_the_backtests_budget_starts_when_msd_starts_serving_and_pauses_at_a_spend_read(tmp_path):
    """The budget starts at the first decision round (the daemon's signaller starting), not at a
    first warm-up call: a strategy that never calls (its stretch never reached) still runs out
    of duration. The pause comes with the first spend read after the duration is over (checks
    every 300 s on 1-minute candles: every fifth close), not at the next close."""
    run = replay(tmp_path, max_duration_s=1000, heuristic="mean_reversion", stretch_z=2.0)
    learning = run.slots[0].learning
    first_round = T0 + 21 * timedelta(minutes=1)          # the close of candle 20, the first to decide on
    assert learning.budget_start == first_round
    assert not [e for e in run.events if e[1] == "decision"]
    pauses = [at for at, sid, effect in run.lifecycle_log if isinstance(effect, lifecycle.PauseWarmup)]
    assert len(pauses) == 1 and "duration" in learning.paused
    checks_at = [T0 + timedelta(minutes=1) + timedelta(minutes=5 * k) for k in range(40)]
    over = first_round + timedelta(seconds=1000)          # 00:37:40
    assert pauses[0] == min(at for at in checks_at if at >= over) == T0 + timedelta(minutes=41)
