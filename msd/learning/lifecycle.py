"""The learning lifecycle's decisions (FR-019 … FR-022, DESIGN §6) as one pure step.

`step(state, event, now, rules) -> (state, effects)` is called by the daemon's learning loop
(msd.roles.signaller.learning_loop, which gathers the events from PostgreSQL and carries the
effects out: training requests to the supervisor, retirements, pauses, alerts) and by the
backtest (msd.backtest.learner, which gathers them in memory and trains in-process). `now` is
the caller's clock: the daemon's loop time, the backtest's event time; nothing here reads a
clock or a database.

What it decides: which retraining triggers fire (the schedule, the data threshold, quality
degradation, and a retired version that no training attempt has followed yet), when a served
version's live quality degrades (fall back to the last good version, else warm-up; judged per
version with hysteresis) or recovers, when a warm-up strategy pauses (budget or duration
spent) and when its labels stop or start arriving again. A condition that still holds asks
again every `request_again_after_s`, unless a training attempt happened since the last ask
(then it is a new ask): a request never cancels a run that covers it (the supervisor merges).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Mapping, Sequence, Union

from msd.learning.monitoring import LiveQuality, WarmupSpend, budget_verdict, live_quality
from msd.learning.outcomes import Labelled
from msd.learning.triggers import data_threshold_reached
from msd.ml.gate import degradation_check

REQUEST_AGAIN_AFTER_S = 300.0    # a condition still holding asks again this often (never cancelling)


# ----- rules and state -----------------------------------------------------------------------
@dataclass(frozen=True)
class QualityRule:
    threshold: float
    hysteresis: float
    min_samples: int


@dataclass(frozen=True)
class WarmupRule:
    budget_usdt: Decimal
    max_duration_s: float


@dataclass(frozen=True)
class Rules:
    data_threshold: int | None
    quality: QualityRule
    warmup: Mapping[str, WarmupRule]               # per strategy id
    request_again_after_s: float = REQUEST_AGAIN_AFTER_S

    @classmethod
    def from_config(cls, config) -> "Rules":
        """From msd.config.Config (trainer.* and each strategy's warm-up)."""
        trainer, q = config.trainer, config.trainer.quality
        return cls(trainer.data_threshold, QualityRule(q.threshold, q.hysteresis, q.min_samples),
                   {p.id: WarmupRule(p.warmup.budget_usdt, p.warmup.max_duration_s)
                    for p in config.signaller.strategies})


@dataclass(frozen=True)
class LearningState:
    """What the decisions remember between steps; a step returns a new one."""
    asked: Mapping[tuple[str, str | None], datetime] = field(default_factory=dict)   # (trigger, sid) -> last ask
    degraded: Mapping[tuple[str, int], bool] = field(default_factory=dict)           # (sid, version) -> degraded
    stalled: frozenset[str] = frozenset()           # warm-up strategies whose labels stopped arriving


# ----- events: what the caller gathered ------------------------------------------------------
@dataclass(frozen=True)
class ScheduleChecked:
    """msd.learning.triggers.schedule_decision said the scheduled run is due."""
    missed: bool = False


@dataclass(frozen=True)
class LabelledCounts:
    """Per strategy: labelled decisions since its last training attempt; that attempt's time."""
    counts: Mapping[str, int]
    last_training: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Retirements:
    """Per strategy: its latest retirement for degradation and its latest training attempt."""
    retired: Mapping[str, datetime]
    last_training: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveCalls:
    """The served version's labelled calls since it was (last) activated, newest window."""
    strategy: str
    version: int
    rows: Sequence[Labelled]


@dataclass(frozen=True)
class WarmupSpent:
    """A strategy in warm-up (not paused) and its spend since its budget started."""
    strategy: str
    spend: WarmupSpend


Event = Union[ScheduleChecked, LabelledCounts, Retirements, LiveCalls, WarmupSpent]


# ----- effects: what the caller does ---------------------------------------------------------
@dataclass(frozen=True)
class RequestTraining:
    trigger: str                    # schedule | data_threshold | quality_degradation
    strategy: str | None            # None: every strategy
    reason: str
    repeat: bool = False


@dataclass(frozen=True)
class QualityJudged:
    """The figures behind this step's verdict on a served version (status and metrics)."""
    strategy: str
    version: int
    figures: LiveQuality
    degraded: bool


@dataclass(frozen=True)
class Degraded:
    """Alert, retire `version` and serve the last good version, else warm-up."""
    strategy: str
    version: int
    why: str


@dataclass(frozen=True)
class QualityRecovered:
    """The version's quality is fine: clear its alert (`changed`: it was degraded)."""
    strategy: str
    version: int
    pay_rate: float | None
    changed: bool


@dataclass(frozen=True)
class PauseWarmup:
    strategy: str
    cause: str                      # budget | duration
    reason: str
    spend: WarmupSpend


@dataclass(frozen=True)
class LabelsStalled:
    strategy: str
    why: str


@dataclass(frozen=True)
class LabelsBack:
    strategy: str


Effect = Union[RequestTraining, QualityJudged, Degraded, QualityRecovered, PauseWarmup, LabelsStalled, LabelsBack]


# ----- the step ------------------------------------------------------------------------------
def step(state: LearningState, event: Event, now: datetime, rules: Rules) -> tuple[LearningState, list[Effect]]:
    if isinstance(event, ScheduleChecked):
        why = "scheduled retraining" + (" (missed while msd was down)" if event.missed else "")
        return state, [RequestTraining("schedule", None, why)]
    if isinstance(event, LabelledCounts):
        return _on_counts(state, event, now, rules)
    if isinstance(event, Retirements):
        return _on_retirements(state, event, now, rules)
    if isinstance(event, LiveCalls):
        return _on_live_calls(state, event, now, rules)
    if isinstance(event, WarmupSpent):
        return _on_warmup_spent(state, event, rules)
    raise TypeError(f"event: {type(event).__name__} is not a learning lifecycle event")


def _ask(state: LearningState, trigger: str, sid: str, now: datetime, last_training: datetime | None,
         rules: Rules) -> tuple[bool, bool]:
    """(ask now, it repeats an ask): a first ask, one after a training attempt that followed the
    last ask, or one `request_again_after_s` after the last ask (or before it: a wall clock
    stepped back never silences a trigger)."""
    asked = state.asked.get((trigger, sid))
    if asked is None or (last_training is not None and last_training >= asked):
        return True, False
    elapsed = (now - asked).total_seconds()
    return elapsed < 0 or elapsed >= rules.request_again_after_s, True


def _with_ask(state: LearningState, trigger: str, sid: str | None, at: datetime | None) -> LearningState:
    asked = dict(state.asked)
    if at is None:
        asked.pop((trigger, sid), None)
    else:
        asked[(trigger, sid)] = at
    return replace(state, asked=asked)


def _on_counts(state: LearningState, event: LabelledCounts, now: datetime, rules: Rules):
    effects = []
    for sid, count in sorted(event.counts.items()):
        if not data_threshold_reached(count, rules.data_threshold):
            if ("data_threshold", sid) in state.asked:
                state = _with_ask(state, "data_threshold", sid, None)    # a later crossing is new
            continue
        ask, repeat = _ask(state, "data_threshold", sid, now, event.last_training.get(sid), rules)
        if ask:
            state = _with_ask(state, "data_threshold", sid, now)
            effects.append(RequestTraining("data_threshold", sid, f"data threshold: {count} new labelled "
                                           f"executions (threshold {rules.data_threshold})", repeat))
    return state, effects


def _on_retirements(state: LearningState, event: Retirements, now: datetime, rules: Rules):
    """A strategy whose version was retired for degradation asks again for training until a
    training attempt of it has happened since (FR-021)."""
    effects = []
    for sid, retired_at in sorted(event.retired.items()):
        last = event.last_training.get(sid)
        if last is not None and last >= retired_at:
            continue
        ask, _ = _ask(state, "quality_degradation", sid, now, last, rules)
        if ask:
            state = _with_ask(state, "quality_degradation", sid, now)
            effects.append(RequestTraining("quality_degradation", sid, f"quality degradation: a version was "
                                           f"retired at {retired_at.isoformat()} and no training has run since",
                                           repeat=True))
    return state, effects


def _on_live_calls(state: LearningState, event: LiveCalls, now: datetime, rules: Rules):
    """Judged per version: a new or rolled-back version starts with a clean record."""
    q, sid, version = rules.quality, event.strategy, event.version
    figures = live_quality(event.rows)
    was = state.degraded.get((sid, version), False)
    degraded = degradation_check(figures.pay_rate, figures.n, q.threshold, q.hysteresis,
                                 min_samples=q.min_samples, was_degraded=was)
    state = replace(state, degraded={**state.degraded, (sid, version): degraded})
    effects: list[Effect] = [QualityJudged(sid, version, figures, degraded)]
    if degraded and not was:
        why = (f"live accuracy {figures.pay_rate:.3f} (calls that paid after costs) over {figures.n} calls "
               f"is below {q.threshold}")
        state = _with_ask(state, "quality_degradation", sid, now)
        effects += [Degraded(sid, version, why), RequestTraining("quality_degradation", sid,
                                                                 f"quality degradation: {why}")]
    elif not degraded and (was or figures.n >= q.min_samples):
        effects.append(QualityRecovered(sid, version, figures.pay_rate, changed=was))
    return state, effects


def _on_warmup_spent(state: LearningState, event: WarmupSpent, rules: Rules):
    """Labels stalled (said once, and when they come back), and the pause when the budget or
    the duration is spent without a promoted model."""
    sid, spend, effects = event.strategy, event.spend, []
    rule = rules.warmup.get(sid)
    if rule is None:
        return state, effects
    if spend.labels_stalled and sid not in state.stalled:
        state = replace(state, stalled=state.stalled | {sid})
        effects.append(LabelsStalled(sid, f"{spend.unlabelled} warm-up calls ended without a label (no market "
                                          f"bar recorded at their horizon); each is charged the worst case "
                                          f"to the budget"))
    elif not spend.labels_stalled and sid in state.stalled:
        state = replace(state, stalled=state.stalled - {sid})
        effects.append(LabelsBack(sid))
    verdict = budget_verdict(spend, rule.budget_usdt, rule.max_duration_s)
    if verdict is not None:
        effects.append(PauseWarmup(sid, verdict[0], verdict[1], spend))
    return state, effects


def run(state: LearningState, events: Sequence[Event], now: datetime,
        rules: Rules) -> tuple[LearningState, list[Effect]]:
    """Each event in turn at `now`: the effects in order."""
    effects: list[Effect] = []
    for event in events:
        state, more = step(state, event, now, rules)
        effects.extend(more)
    return state, effects
