"""The learning lifecycle step (msd.learning.lifecycle) as tables: a sequence of (minute, event)
in, the effects out, in order. The daemon's learning loop and the backtest both run it."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from msd.learning import lifecycle as lc
from msd.learning.monitoring import WarmupSpend
from msd.learning.outcomes import Decision, Labelled
from msd.ml.features import BUY, SELL

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
RULES = lc.Rules(data_threshold=100, quality=lc.QualityRule(threshold=0.6, hysteresis=0.05, min_samples=10),
                 warmup={"w": lc.WarmupRule(Decimal(50), 3600.0)})


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def calls(paid: int, missed: int, version: int = 2) -> list[Labelled]:
    """`paid` calls whose side paid and `missed` that did not, of model version `version`."""
    rows = []
    for i in range(paid + missed):
        decision = Decision(f"s-{i}", "m", "BTCUSDT", "buy", at(-60 + i), {"price": 100.0}, 10.0, "model",
                            f"v{version}", 0.7, None, 1, 10.0)
        rows.append(Labelled(decision, 0.01 if i < paid else -0.01, 0.002, BUY if i < paid else SELL))
    return rows


def spend(usdt: float, elapsed_s: float = 60.0, stalled: bool = False) -> WarmupSpend:
    return WarmupSpend(usdt, 3, T0, elapsed_s, unlabelled=2 if stalled else 0, labels_stalled=stalled)


def counts(n: int, trained: float | None = None) -> lc.LabelledCounts:
    return lc.LabelledCounts({"m": n}, {} if trained is None else {"m": at(trained)})


def summary(effect) -> tuple:
    """What a row of the table names: the effect's kind and its deciding fields."""
    if isinstance(effect, lc.RequestTraining):
        return ("train", effect.trigger, effect.strategy, effect.repeat)
    if isinstance(effect, lc.QualityJudged):
        return ("judged", effect.strategy, effect.version, effect.degraded)
    if isinstance(effect, lc.Degraded):
        return ("fall back", effect.strategy, effect.version)
    if isinstance(effect, lc.QualityRecovered):
        return ("recovered", effect.strategy, effect.changed)
    if isinstance(effect, lc.PauseWarmup):
        return ("pause", effect.strategy, effect.cause)
    if isinstance(effect, lc.LabelsStalled):
        return ("labels stalled", effect.strategy)
    return ("labels back", effect.strategy)


def replay(events: list[tuple[float, lc.Event]], rules: lc.Rules = RULES) -> list[tuple]:
    state, out = lc.LearningState(), []
    for minute, event in events:
        state, effects = lc.step(state, event, at(minute), rules)
        out += [(minute, *summary(e)) for e in effects]
    return out


@pytest.mark.parametrize("events, expected", [
    pytest.param([(0, lc.ScheduleChecked()), (1, lc.ScheduleChecked(missed=True))],
                 [(0, "train", "schedule", None, False), (1, "train", "schedule", None, False)], id="schedule"),
    pytest.param([(0, counts(99)), (1, counts(100)), (2, counts(150)), (6, counts(160))],
                 [(1, "train", "data_threshold", "m", False), (6, "train", "data_threshold", "m", True)],
                 id="threshold: once, again after request_again_after_s while it holds"),
    pytest.param([(10, counts(100)), (11, counts(120)), (2, counts(130))],
                 [(10, "train", "data_threshold", "m", False), (2, "train", "data_threshold", "m", True)],
                 id="threshold: a clock stepped back asks again"),
    pytest.param([(0, counts(100)), (1, counts(120, trained=0.5))],
                 [(0, "train", "data_threshold", "m", False), (1, "train", "data_threshold", "m", False)],
                 id="threshold: a crossing after a training attempt is a new ask"),
    pytest.param([(0, counts(100)), (1, counts(10)), (2, counts(100))],
                 [(0, "train", "data_threshold", "m", False), (2, "train", "data_threshold", "m", False)],
                 id="threshold: falling below forgets the ask"),
    pytest.param([(0, lc.Retirements({"m": at(-1)})), (1, lc.Retirements({"m": at(-1)})),
                  (6, lc.Retirements({"m": at(-1)})), (7, lc.Retirements({"m": at(-1)}, {"m": at(6.5)}))],
                 [(0, "train", "quality_degradation", "m", True), (6, "train", "quality_degradation", "m", True)],
                 id="retired and not trained since: asks again until a training attempt"),
])
def test_triggers(events, expected):
    assert replay(events) == expected


@pytest.mark.parametrize("events, expected", [
    pytest.param([(0, lc.LiveCalls("m", 2, calls(3, 3)))], [(0, "judged", "m", 2, False)],
                 id="too few calls: no verdict"),
    pytest.param([(0, lc.LiveCalls("m", 2, calls(8, 2)))],
                 [(0, "judged", "m", 2, False), (0, "recovered", "m", False)], id="healthy"),
    pytest.param([(0, lc.LiveCalls("m", 2, calls(4, 6))), (1, lc.LiveCalls("m", 2, calls(4, 6)))],
                 [(0, "judged", "m", 2, True), (0, "fall back", "m", 2),
                  (0, "train", "quality_degradation", "m", False), (1, "judged", "m", 2, True)],
                 id="degraded: fall back and retrain once"),
    pytest.param([(0, lc.LiveCalls("m", 2, calls(5, 5))), (1, lc.LiveCalls("m", 2, calls(6, 4))),
                  (2, lc.LiveCalls("m", 2, calls(13, 7))), (3, lc.LiveCalls("m", 2, calls(13, 7)))],
                 [(0, "judged", "m", 2, True), (0, "fall back", "m", 2),
                  (0, "train", "quality_degradation", "m", False),
                  (1, "judged", "m", 2, True),                         # 0.60 < 0.60 + hysteresis
                  (2, "judged", "m", 2, False), (2, "recovered", "m", True),
                  (3, "judged", "m", 2, False), (3, "recovered", "m", False)],
                 id="hysteresis"),
    pytest.param([(0, lc.LiveCalls("m", 2, calls(4, 6))), (1, lc.LiveCalls("m", 1, calls(8, 2, version=1)))],
                 [(0, "judged", "m", 2, True), (0, "fall back", "m", 2),
                  (0, "train", "quality_degradation", "m", False),
                  (1, "judged", "m", 1, False), (1, "recovered", "m", False)],
                 id="the version fallen back to starts with a clean record"),
])
def test_live_quality(events, expected):
    assert replay(events) == expected


@pytest.mark.parametrize("events, expected", [
    pytest.param([(0, lc.WarmupSpent("w", spend(49.9)))], [], id="within budget"),
    pytest.param([(0, lc.WarmupSpent("w", spend(50.0)))], [(0, "pause", "w", "budget")], id="budget spent"),
    pytest.param([(0, lc.WarmupSpent("w", spend(1.0, elapsed_s=3600.0)))], [(0, "pause", "w", "duration")],
                 id="duration spent"),
    pytest.param([(0, lc.WarmupSpent("w", spend(1.0, stalled=True))),
                  (1, lc.WarmupSpent("w", spend(1.0, stalled=True))), (2, lc.WarmupSpent("w", spend(1.0)))],
                 [(0, "labels stalled", "w"), (2, "labels back", "w")], id="labels stalled: said once, and back"),
    pytest.param([(0, lc.WarmupSpent("unknown", spend(100.0)))], [], id="a strategy without warm-up rules"),
])
def test_warmup(events, expected):
    assert replay(events) == expected


def test_the_data_threshold_can_be_off():
    assert replay([(0, counts(10**6))], replace(RULES, data_threshold=None)) == []


def test_a_step_returns_a_new_state_and_leaves_the_old_one_alone():
    before = lc.LearningState()
    after, _ = lc.step(before, counts(100), at(0), RULES)
    assert before.asked == {} and after.asked == {("data_threshold", "m"): at(0)}


def test_an_unknown_event_is_refused_by_name():
    with pytest.raises(TypeError, match="str is not a learning lifecycle event"):
        lc.step(lc.LearningState(), "counts", at(0), RULES)
