"""The learning lifecycle of one strategy inside a backtest, in event time, in-process.

The same pure pieces the daemon runs: decisions are labelled by msd.learning.outcomes when the
bar closing their horizon is known (never earlier), against the cost msd.learning.costs
estimates from the strategy's fills before the decision (the live quality watch and the warm-up
budget read these); a training builds the dataset of the rows the store holds
(msd.learning.records, the same reads as the daemon's PostgreSQL) with
msd.learning.dataset, fits and scores with msd.ml.training, rescores the incumbent on the
validation decisions it never learned and asks msd.ml.gate; a run with fewer than
training.min_new_rows new rows is a data drought, as in msd.learning.job. A promoted version
serves from its simulated training time plus `train_seconds`: training runs synchronously, so
the result never depends on the machine's speed.
What to do when is the daemon's own step, msd.learning.lifecycle, fed here from memory at the
candle's close when msd.learning.cadence says a check is due (`check`; the warm-up spend only on
the checks that read it, as the daemon's): the triggers (schedule, data threshold, quality
degradation, a retired version not yet followed by a training), the live quality of the served
version's calls since it was activated (a degraded one is retired; the last good one, else
warm-up with a new budget, serves), and the warm-up pause when its budget or duration is spent.
A warm-up budget starts when msd.learning.cadence.budget_start says, as in the daemon's signaller: when the
strategy is first served (`serve`, the replay's first decision round), and again back in
warm-up from a model.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any


from msd.learning import lifecycle
from msd.learning.cadence import budget_start
from msd.learning.costs import CostFill, RollingCost
from msd.learning.dataset import build_dataset
from msd.learning.monitoring import WarmupSpend, warmup_spend
from msd.learning.outcomes import Decision, label_decision
from msd.learning.promotion import IncumbentScore
from msd.ml.gate import promotion_decision
from msd.ml.params import TrainingParams
from msd.ml.training import NotTrainable, fit_and_evaluate, score


@dataclass
class Version:
    number: int
    trained_at: datetime
    active_from: datetime | None          # None: not promoted
    reasons: tuple[str, ...]
    figures: dict[str, Any]
    learned_until: float
    labelled_rows: int
    model: Any = None
    retired_at: datetime | None = None


@dataclass
class Quality:
    threshold: float
    hysteresis: float
    min_samples: int
    window: int


@dataclass
class StrategyLearning:
    sid: str
    params: TrainingParams
    quality: Quality
    budget_usdt: Any
    max_duration_s: float
    unlabelled_loss: float
    train_seconds: float
    pending: deque = field(default_factory=deque)          # Decisions waiting for their horizon bar
    fills: dict = field(default_factory=dict)               # signal_id -> [count, notional]
    labelled: list = field(default_factory=list)            # Labelled rows, decision-time order
    overdue: list = field(default_factory=list)
    cost_fills: list = field(default_factory=list)
    cost_ptr: int = 0
    costs: RollingCost | None = None
    versions: list = field(default_factory=list)
    active: Version | None = None
    waiting: list = field(default_factory=list)            # promoted, not serving yet
    trainings: int = 0
    droughts: int = 0
    active_since: datetime | None = None                   # when the served version's stint began
    last_attempt: datetime | None = None                   # the latest training attempt
    budget_start: datetime | None = None
    paused: str | None = None
    timeline: list = field(default_factory=list)           # (at, mode text)
    spend_from: datetime | None = None                     # the budget the running spend belongs to
    spend_rows: int = 0
    spend_overdue: int = 0
    spent: float = 0.0
    spent_calls: int = 0
    spent_unlabelled: int = 0
    shuffle: Any = None                                    # a random.Random: the shuffled-label control
    state: lifecycle.LearningState = field(default_factory=lifecycle.LearningState)
    rules: lifecycle.Rules | None = None

    def __post_init__(self) -> None:
        self.costs = RollingCost(self.params.round_trip_fee, self.params.cost_window_s, self.params.cost_min_fills)
        q = self.quality
        self.rules = lifecycle.Rules(None, lifecycle.QualityRule(q.threshold, q.hysteresis, q.min_samples),
                                     {self.sid: lifecycle.WarmupRule(self.budget_usdt, self.max_duration_s)})

    # ----- what the signaller asks ------------------------------------------------------
    @property
    def mode(self) -> str:
        if self.active is not None:
            return "model"
        return "paused" if self.paused else "warmup"

    def note_mode(self, at: datetime) -> None:
        text = f"model v{self.active.number}" if self.active else ("paused" if self.paused else "warm-up")
        if not self.timeline or self.timeline[-1][1] != text:
            self.timeline.append((at, text))

    def serve(self, now: datetime) -> None:
        """The strategy is served from `now` (the daemon's signaller starting): its first budget."""
        self._start_budget(None, now)

    def _start_budget(self, before_mode: str | None, now: datetime) -> None:
        start = budget_start(before_mode, self.mode)
        if start is not None and (start.restart or self.budget_start is None):
            self.budget_start = now

    def decided(self, decision: Decision) -> None:
        self.pending.append(decision)
        self.fills[decision.signal_id] = [0, 0.0]

    def filled(self, signal_id: str, fill: CostFill) -> None:
        if signal_id in self.fills:
            self.fills[signal_id][0] += 1
            self.fills[signal_id][1] += fill.quantity * fill.price
            self.cost_fills.append(fill)

    # ----- each candle ------------------------------------------------------------------
    def advance(self, now: datetime, bar_close) -> list[Version]:
        """Activate what is due, label what can be labelled by `now` (`bar_close(end, now)`: the close
        of the bar ending at `end` if known by `now`, else None; or "never" when it cannot come)."""
        for version in list(self.waiting):
            if version.active_from <= now:
                self.waiting.remove(version)
                self.active, self.paused, self.active_since = version, None, now
        self._label(now, bar_close)
        return self.versions

    def _label(self, now: datetime, bar_close) -> None:
        horizon = timedelta(seconds=self.params.horizon_s)
        while self.pending:
            decision = self.pending[0]
            close = bar_close(decision.asset, decision.decided_at + horizon, now)
            if close is None:
                return
            self.pending.popleft()
            count, notional = self.fills.pop(decision.signal_id, (0, 0.0))
            decision = replace(decision, fills=count, filled_notional=notional or None)
            if close == "never":
                self.overdue.append(decision)
                continue
            while self.cost_ptr < len(self.cost_fills) and self.cost_fills[self.cost_ptr].executed_at < decision.decided_at:
                self.costs.add(self.cost_fills[self.cost_ptr])
                self.cost_ptr += 1
            decision = replace(decision, horizon_close=float(close))
            row = label_decision(decision, self.costs.at(decision.decided_at))
            if row is not None:
                self.labelled.append(row)

    # ----- the lifecycle step ---------------------------------------------------------------
    def check(self, now: datetime, data_threshold: int | None, labelled: int,
              schedule: lifecycle.ScheduleChecked | None = None, *, slow: bool = True) -> list[lifecycle.Effect]:
        """msd.learning.lifecycle over what this strategy gathered at `now`, in the daemon's
        order; retirements and pauses are carried out here, training requests returned. The
        warm-up spend is read only on a `slow` check (msd.learning.cadence)."""
        rules = replace(self.rules, data_threshold=data_threshold)
        attempts = {self.sid: self.last_attempt} if self.last_attempt else {}
        retired = [v.retired_at for v in self.versions if v.retired_at is not None]
        events: list = [schedule] if schedule is not None else []
        events += [lifecycle.LabelledCounts({self.sid: labelled}, attempts),
                   lifecycle.Retirements({self.sid: max(retired)} if retired else {}, attempts)]
        if self.active is not None:
            events.append(lifecycle.LiveCalls(self.sid, self.active.number, self._live_calls()))
        elif slow and self.budget_start is not None and not self.paused:
            events.append(lifecycle.WarmupSpent(self.sid, self._spend(now)))
        self.state, effects = lifecycle.run(self.state, events, now, rules)
        for effect in effects:
            if isinstance(effect, lifecycle.Degraded):
                self._fall_back(now)
            elif isinstance(effect, lifecycle.PauseWarmup):
                self.paused = f"{effect.cause} at {now.isoformat()}: {effect.reason}"
        self.note_mode(now)
        return effects

    def _live_calls(self) -> list:
        """The served version's labelled calls since its stint began, the newest quality window."""
        tag = f"v{self.active.number}"
        calls = [r for r in self.labelled[-4 * self.quality.window:]
                 if r.decision.model_version == tag and r.decision.decided_at >= self.active_since]
        return calls[-self.quality.window:]

    def _fall_back(self, now: datetime) -> None:
        """Retire the served version; the newest promoted one not retired serves, else warm-up."""
        self.active.retired_at = now
        self.active = next((v for v in reversed(self.versions) if v.active_from and v.active_from <= now
                            and v.retired_at is None), None)
        self.active_since = now
        self._start_budget("model", now)    # back in warm-up (none left to serve): a new budget

    def _spend(self, now: datetime) -> WarmupSpend:
        """msd.learning.monitoring.warmup_spend over the rows labelled since the last check, added
        to the running totals: the spend is a sum over calls, so the figure is the same as one
        call over every row, without reading them all again each minute."""
        if self.spend_from != self.budget_start:
            self.spend_from, self.spend_rows, self.spend_overdue = self.budget_start, 0, 0
            self.spent, self.spent_calls, self.spent_unlabelled = 0.0, 0, 0
        part = warmup_spend(self.labelled[self.spend_rows:], self.budget_start, now,
                            self.overdue[self.spend_overdue:], self.unlabelled_loss)
        self.spend_rows, self.spend_overdue = len(self.labelled), len(self.overdue)
        self.spent += part.spend_usdt
        self.spent_calls += part.calls
        self.spent_unlabelled += part.unlabelled
        return WarmupSpend(self.spent, self.spent_calls, self.budget_start, part.elapsed_s,
                           self.spent_unlabelled, labels_stalled=self._labels_stalled())

    def _labels_stalled(self) -> bool:
        """As msd.learning.monitoring.warmup_spend says it over every row since the budget began."""
        newest_label = _newest(self.labelled, self.budget_start, lambda row: row.decision)
        newest_late = _newest(self.overdue, self.budget_start, lambda decision: decision)
        return newest_late is not None and (newest_label is None or newest_late > newest_label)

    # ----- training ---------------------------------------------------------------------
    def train(self, now: datetime, decisions: list[Decision], fills: list[CostFill]) -> Version | None:
        """One training at simulated time `now` on the store's rows (msd.learning.records), as
        msd.learning.job.train_strategy decides."""
        self.last_attempt = now
        if self.shuffle is not None:
            decisions = shuffled_outcomes(decisions, self.shuffle)
        dataset = build_dataset(decisions, self.params, fills)
        previous = self.versions[-1].labelled_rows if self.versions else 0
        if dataset.n - previous < self.params.min_new_rows:
            self.droughts += 1
            return None
        self.trainings += 1
        try:
            candidate = fit_and_evaluate(dataset, self.params)
        except NotTrainable:
            self.droughts += 1
            return None
        incumbent = self._incumbent(dataset, candidate)
        verdict = promotion_decision(candidate.validation, candidate.baselines, incumbent.metrics,
                                     candidate.validation.n, self.params.gate(),
                                     candidate_vs_active=incumbent.candidate)
        promote = verdict.promote and not incumbent.blocking
        v = candidate.validation
        figures = {"n": v.n, "accuracy": v.accuracy, "base_rate": v.base_rate,
                   "balanced_accuracy": v.balanced_accuracy, "n_calls": v.n_calls, "precision": v.precision,
                   "net_return_mean": v.net_return_mean, "net_return_lower": v.net_return_lower}
        version = Version(len(self.versions) + 1, now,
                          now + timedelta(seconds=self.train_seconds) if promote else None,
                          verdict.reasons + ((incumbent.note,) if incumbent.note else ()), figures,
                          float(dataset.timestamps[candidate.train_idx].max()), dataset.n,
                          candidate.model if promote else None)
        self.versions.append(version)
        if promote:
            self.waiting.append(version)
        return version

    def _incumbent(self, dataset, candidate) -> IncumbentScore:
        """msd.learning.promotion.score_active on the in-memory version."""
        if self.active is None:
            return IncumbentScore()
        rows = candidate.val_idx[dataset.timestamps[candidate.val_idx] >= self.active.learned_until]
        if rows.size < self.params.min_samples:
            return IncumbentScore(note=f"active v{self.active.number} learned the window: {rows.size} unseen "
                                       f"validation decisions, minimum {self.params.min_samples}", blocking=True)
        return IncumbentScore(score(self.active.model, dataset, rows, self.params),
                              score(candidate.model, dataset, rows, self.params))


def _newest(rows: list, since: datetime, decision_of) -> datetime | None:
    """When the newest warm-up decision at or after `since` was taken (`rows` are in decision
    order, so the walk back stops at the first one: no pass over every row each candle)."""
    for row in reversed(rows):
        decision = decision_of(row)
        if decision.decided_at < since:
            return None
        if decision.mode == "warmup":
            return decision.decided_at
    return None


def shuffled_outcomes(decisions: list[Decision], rng) -> list[Decision]:
    """The control: each decision gets another decision's outcome (its relative move to the
    horizon), shuffled in time, so nothing in the features can predict it."""
    moves = [d.horizon_close / d.price for d in decisions]
    rng.shuffle(moves)
    return [replace(d, horizon_close=d.price * m) for d, m in zip(decisions, moves)]
