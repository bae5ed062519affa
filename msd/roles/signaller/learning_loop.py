"""The learning lifecycle as the signaller runs it (FR-004, FR-019 … FR-022): wiring only.

Every `trainer.check_interval_s` a worker thread reads, on its own connection: fills
reconciled from the shared `orders` table, the schedule, the data-threshold counts, the active
versions and pauses in the database, the labelled outcomes of each model-mode strategy (live
quality and the online challenger) and, once a minute, each warm-up strategy's spend and the
dataset sizes (the cadence is msd.learning.cadence's, which the backtest follows too). The signaller's main loop then switches its model book when the database's
active versions differ from it (whatever the trainer's exit), hands what was read to the one
lifecycle step (msd.learning.lifecycle, which the backtest calls too) at the loop's `now`, and
carries out its effects: requests training (the newest request wins in the supervisor;
repeated asks never cancel a run that covers them), retires and replaces a degraded version,
pauses a warm-up strategy whose budget is spent, raises and clears alerts. The online
challenger (msd.roles.signaller.online) is promoted here as well.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from msd import metrics
from msd.config import Config
from msd.errors import DatabaseUnavailable, MsdError
from msd.learning import lifecycle
from msd.learning.cadence import Cadence, check_due
from msd.learning.dataset import label_all
from msd.learning.monitoring import warmup_spend
from msd.learning.triggers import schedule_decision
from msd.roles.signaller.online import OnlineChallengers
from msd.roles.signaller.model_book import ModelBook
from msd.roles.runtime.edges import open_database
from msd.roles.runtime.process import RoleContext
from msd.store.datasets import (LabelWindow, dataset_sizes, labelled_since_last_training,
                                load_cost_fills, reconcile_executions, recent_decisions,
                                warmup_budget_decisions)
from msd.store.db import Database
from msd.store.pauses import budget_starts, pause, pauses
from msd.store.schedule import next_run_at, set_next_run
from msd.learning.versions import fallback_version
from msd.store.versions import (active_versions, deactivate, get_version, latest_retirements,
                                latest_training_outcomes, retire, rollback)
from msd.values.parsing import aware_time

log = logging.getLogger("msd.learning")
SCHEDULE_NAME = "training"


@dataclass
class Gathered:
    """What the worker read for one check; the main loop acts on it."""
    versions: dict[str, int]                    # served versions when the read started
    schedule_due: bool = False
    schedule_missed: bool = False
    next_scheduled: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    last_training: dict[str, dict] = field(default_factory=dict)
    db_versions: dict[str, int] = field(default_factory=dict)
    db_paused: set[str] = field(default_factory=set)
    retired: dict[str, datetime] = field(default_factory=dict)
    quality: dict[str, list] = field(default_factory=dict)       # sid -> labelled model calls
    recent: dict[str, list] = field(default_factory=dict)        # sid -> labelled decisions
    spend: dict[str, Any] = field(default_factory=dict)          # sid -> WarmupSpend
    reconcile: str = "ok"
    reconciled: int = 0
    sizes: dict[str, dict] | None = None


def _labelled(conn, sid: str, decisions: list, config: Config) -> list:
    """Decisions labelled by the one outcome function, costs from the strategy's own fills."""
    if not decisions:
        return []
    training = config.trainer.training
    fills = load_cost_fills(conn, sid, since=decisions[0].decided_at - timedelta(seconds=training.cost_window_s),
                            until=decisions[-1].decided_at)
    return label_all(decisions, fills, training)


class LearningLoop:
    def __init__(self, ctx: RoleContext, db: Database, book: ModelBook,
                 on_versions_changed: Callable[[str], None]):
        self.ctx, self.db, self.book = ctx, db, book
        self.on_versions_changed = on_versions_changed
        self.worker_db = open_database(ctx.config, "msd-learning")
        self.cadence = Cadence()                        # when the next check and slow reads are due
        self.state = lifecycle.LearningState()          # what the lifecycle decisions remember
        self.view: dict[str, Any] = {}
        self.reconciled = 0
        self.online = OnlineChallengers(db)
        self._worker: threading.Thread | None = None
        self._gathered: Gathered | None = None

    def maybe_check(self, config: Config, now: datetime) -> None:
        if self._worker is not None:
            if self._worker.is_alive():
                return
            self._worker, gathered, self._gathered = None, self._gathered, None
            if gathered is not None:
                self._apply(config, gathered, now)
        due = check_due(self.cadence, time.monotonic(), config.trainer.check_interval_s)
        if not due.check:
            return
        self.cadence, slow = due.cadence, due.slow
        plan = (dict(self.book.versions()), {p.id for p in config.signaller.strategies if self.book.mode(p.id) == "warmup"})
        self._worker = threading.Thread(target=self._gather_safely, args=(config, now, plan, slow),
                                        name="learning", daemon=True)
        self._worker.start()

    def _gather_safely(self, config: Config, now: datetime, plan, slow: bool) -> None:
        try:
            self._gathered = self._gather(config, now, plan, slow)
        except DatabaseUnavailable as exc:
            log.warning("learning checks not done: %s", exc)
        except Exception:
            log.exception("learning checks not done")

    def _gather(self, config: Config, now: datetime, plan, slow: bool) -> Gathered:
        """Worker thread: only self.worker_db is used here."""
        versions, warming = plan
        g = Gathered(versions)
        g.reconcile, g.reconciled = self._reconcile()
        trainer = config.trainer
        # whether a label may still come (a warm-up call overdue, a live call open) is decided at
        # the loop's `now`, not the database's clock
        window = LabelWindow(trainer.training.horizon_s, trainer.training.max_bar_lag_s, now)
        with self.worker_db.transaction() as conn:
            g.schedule_due, g.schedule_missed, g.next_scheduled = self._schedule(conn, config, now)
            g.counts = labelled_since_last_training(conn, trainer.training.horizon_s, now)
            g.last_training = latest_training_outcomes(conn)
            g.db_versions, g.db_paused = active_versions(conn), set(pauses(conn))
            g.retired = latest_retirements(conn)
            for sid, version in versions.items():
                # A version's record starts when it was last activated: a rolled-back version is
                # judged on its calls since, not on those of an earlier stint (now that unfilled
                # calls are labelled too, those would be many).
                info = get_version(conn, sid, version)
                calls = recent_decisions(conn, sid, window, model_version=f"v{version}", limit=trainer.quality.window,
                                         since=info.activated_at if info is not None else None)
                g.quality[sid] = _labelled(conn, sid, calls, config)
                if trainer.online.enabled:
                    g.recent[sid] = _labelled(conn, sid, recent_decisions(
                        conn, sid, window, since=self._online_since(conn, sid, version, now, config)), config)
            if slow:
                starts = budget_starts(conn)
                loss = {p.id: p.warmup.unlabelled_loss_pct / 100.0 for p in config.signaller.strategies}
                for sid in warming & set(starts) & set(loss):
                    ready, overdue = warmup_budget_decisions(conn, sid, window, since=starts[sid])
                    g.spend[sid] = warmup_spend(_labelled(conn, sid, ready, config), starts[sid], now,
                                                overdue, loss[sid])
                g.sizes = dataset_sizes(conn, window)
        return g

    @staticmethod
    def _online_since(conn, sid: str, version: int, now: datetime, config: Config) -> datetime:
        """The challenger learns decisions the incumbent never saw: those after the last one of
        its own data (and no older than the late-label lookback)."""
        since = now - timedelta(seconds=config.trainer.online.lookback_s)
        info = get_version(conn, sid, version)
        seen_until = info.validation_to if info is not None else None
        return max(since, seen_until + timedelta(microseconds=1)) if seen_until else since

    def _apply(self, config: Config, g: Gathered, now: datetime) -> None:
        """Main loop: act on what the worker read (the decisions are msd.learning.lifecycle's)."""
        configured = {p.id for p in config.signaller.strategies}
        self.reconciled += g.reconciled
        counts = {sid: n for sid, n in g.counts.items() if sid in configured}
        self.view.update(reconcile=g.reconcile, reconciled_fills=self.reconciled,
                         last_training=g.last_training, labelled_since_training=counts)
        if g.next_scheduled:
            self.view["next_scheduled_training"] = g.next_scheduled
        if g.sizes is not None:
            self.view["datasets"] = g.sizes
        served = {sid: v for sid, v in self.book.considered().items() if sid in configured}
        db_served = {sid: v for sid, v in g.db_versions.items() if sid in configured}
        if db_served != served or (g.db_paused & configured) != set(self.book.paused):
            self.on_versions_changed("the database's active versions or pauses differ from the served ones")
        # a rollback or promotion since the read makes those outcomes another version's
        current = [sid for sid in g.quality if self.book.version(sid) == g.versions.get(sid)]
        self.view["live_quality"] = {}
        self._decide(config, now, self._events(g, configured, counts, current))
        self.online.update(config, self.book, {sid: g.recent[sid] for sid in current if sid in g.recent}, now)
        self.view["online"] = self.online.view()
        if self.online.promoted:
            self.online.promoted = False
            self.on_versions_changed("online challenger promoted")
        self._decide(config, now, self._warmup_events(g))
        self._warmup_view()

    @staticmethod
    def _events(g: Gathered, configured: set[str], counts: dict[str, int], current: list[str]) -> list:
        """The gathered reads as lifecycle events, in the order the decisions are taken."""
        trained = {sid: aware_time("last_training.at", row["at"]) for sid, row in g.last_training.items()}
        events: list[lifecycle.Event] = []
        if g.schedule_due:
            events.append(lifecycle.ScheduleChecked(g.schedule_missed))
        events.append(lifecycle.LabelledCounts(counts, trained))
        events.append(lifecycle.Retirements({sid: at for sid, at in g.retired.items() if sid in configured},
                                            trained))
        return events + [lifecycle.LiveCalls(sid, g.versions[sid], g.quality[sid]) for sid in current]

    def _warmup_events(self, g: Gathered) -> list:
        return [lifecycle.WarmupSpent(sid, spend) for sid, spend in sorted(g.spend.items())
                if self.book.mode(sid) == "warmup"]

    def _decide(self, config: Config, now: datetime, events: list[lifecycle.Event]) -> None:
        rules = lifecycle.Rules.from_config(config)
        for event in events:
            self.state, effects = lifecycle.step(self.state, event, now, rules)
            if isinstance(event, lifecycle.WarmupSpent):
                self._spend_seen(config, event.strategy, event.spend)
            for effect in effects:
                self._carry_out(config, effect, now)

    def _carry_out(self, config: Config, effect: lifecycle.Effect, now: datetime) -> None:
        if isinstance(effect, lifecycle.RequestTraining):
            self.request(effect.trigger, effect.reason, effect.strategy, repeat=effect.repeat)
        elif isinstance(effect, lifecycle.QualityJudged):
            self._quality_seen(config, effect)
        elif isinstance(effect, lifecycle.Degraded):
            self._degraded(effect, now)
        elif isinstance(effect, lifecycle.QualityRecovered):
            if effect.changed:
                metrics.MODEL_QUALITY_DEGRADED.labels(effect.strategy).set(0)
                log.info("strategy %s model quality recovered (live accuracy %.3f)", effect.strategy,
                         effect.pay_rate)
            self.ctx.recover(f"model quality {effect.strategy}")   # e.g. the version served after a fall-back
        elif isinstance(effect, lifecycle.PauseWarmup):
            self._pause(effect.strategy, effect.cause, effect.reason, effect.spend, now)
        elif isinstance(effect, lifecycle.LabelsStalled):
            log.error("ALERT: strategy %s: labels stopped arriving: %s", effect.strategy, effect.why,
                      extra={"strategy": effect.strategy, "alert": "warmup_labels_stalled"})
            self.ctx.degrade(f"labels {effect.strategy}", effect.why)
        elif isinstance(effect, lifecycle.LabelsBack):
            log.info("strategy %s: labels arriving again", effect.strategy, extra={"strategy": effect.strategy})
            self.ctx.recover(f"labels {effect.strategy}")

    def _quality_seen(self, config: Config, judged: lifecycle.QualityJudged) -> None:
        """Status and metrics of the verdict on a served version."""
        figures, sid = judged.figures, judged.strategy
        quality = config.trainer.quality
        calibration = figures.calibration_status(quality.min_samples, quality.max_calibration_gap)
        self.view["live_quality"][sid] = {**figures.view(), "accuracy": figures.pay_rate, "samples": figures.n,
                                          "degraded": judged.degraded, "version": judged.version,
                                          "calibration": calibration}
        if figures.pay_rate is not None:
            metrics.MODEL_LIVE_ACCURACY.labels(sid).set(figures.pay_rate)
        if figures.calibration_gap is not None:
            metrics.MODEL_CALIBRATION_GAP.labels(sid).set(figures.calibration_gap)
        metrics.MODEL_MISCALIBRATED.labels(sid).set(1 if calibration == "miscalibrated" else 0)

    def _degraded(self, effect: lifecycle.Degraded, now: datetime) -> None:
        sid = effect.strategy
        metrics.MODEL_QUALITY_DEGRADED.labels(sid).set(1)
        log.error("ALERT: strategy %s model v%s quality degraded: %s; retraining", sid, effect.version,
                  effect.why, extra={"strategy": sid, "alert": "model_quality_degraded"})
        self.ctx.degrade(f"model quality {sid}", effect.why)
        self.fall_back(sid, effect.why, now)

    def _spend_seen(self, config: Config, sid: str, spend) -> None:
        """Status and metrics of a warm-up strategy's spend."""
        params = {p.id: p.warmup for p in config.signaller.strategies}
        if sid not in params:
            return
        warmup = self.view.setdefault("warmup", {})
        warmup[sid] = spend.view(params[sid].budget_usdt, params[sid].max_duration_s)
        metrics.WARMUP_SPEND.labels(sid).set(spend.spend_usdt)
        metrics.WARMUP_UNLABELLED.labels(sid).set(spend.unlabelled)
        metrics.WARMUP_LABELS_STALLED.labels(sid).set(1 if spend.labels_stalled else 0)

    def _warmup_view(self) -> None:
        warmup = self.view.setdefault("warmup", {})
        for sid in list(warmup):
            mode = self.book.mode(sid)
            warmup[sid]["mode"] = mode
            metrics.WARMUP_PAUSED.labels(sid).set(1 if mode == "paused" else 0)

    def _reconcile(self) -> tuple[str, int]:
        """Fills a competing consumer took from our queue are read back from `orders` (the
        README's promise): every check, not only when a training run happens to start."""
        try:
            with self.worker_db.transaction() as conn:
                return "ok", reconcile_executions(conn)
        except (DatabaseUnavailable, MsdError) as exc:
            return f"not possible: {exc}", 0

    def _schedule(self, conn, config: Config, now: datetime) -> tuple[bool, bool, str | None]:
        schedule = config.trainer.schedule
        if schedule is None:
            return False, False, None
        decision = schedule_decision(schedule, next_run_at(conn, SCHEDULE_NAME), now)
        set_next_run(conn, SCHEDULE_NAME, decision.next_run_at, ran_at=now if decision.due else None)
        return decision.due, decision.missed, decision.next_run_at.isoformat()

    def fall_back(self, sid: str, why: str, now: datetime) -> None:
        """Retire the degraded version, then serve the newest good one that loads with today's
        features, format and label definition (never a retired one), or warm-up when none does;
        all stamped at the loop's `now`. Whatever happens here, the book never keeps serving the
        retired version."""
        bad = self.book.version(sid)
        params = self.ctx.config.trainer.training
        try:
            with self.db.transaction() as conn:
                retire(conn, sid, bad, f"live quality degraded: {why}", now=now)
                target, passed_over = fallback_version(conn, sid, params, skip=bad)
                for note in passed_over:
                    log.warning("strategy %s: fall-back passes over %s", sid, note, extra={"strategy": sid})
                if target is not None:
                    rollback(conn, sid, target.version, reason=f"v{bad} degraded: {why}", now=now)
                else:
                    deactivate(conn, sid, reason=f"v{bad} degraded: {why}", now=now,
                               evidence={"live": why, "passed_over": passed_over})
        except (DatabaseUnavailable, MsdError) as exc:
            log.error("strategy %s: could not retire degraded v%s, warm-up serves until the database "
                      "answers: %s", sid, bad, exc)
            self.book.drop(sid, f"v{bad} degraded and could not be retired: {exc}")
            return
        try:
            self.book.reload([sid])
        except (DatabaseUnavailable, MsdError) as exc:
            self.book.drop(sid, f"v{bad} retired; the fall-back could not be loaded: {exc}")
        if self.book.version(sid) == bad:       # never serve a retired version
            self.book.drop(sid, f"v{bad} retired")
        now_serving = f"v{self.book.version(sid)}" if self.book.version(sid) else "warm-up"
        log.error("strategy %s: degraded v%s retired and replaced by %s", sid, bad, now_serving,
                  extra={"strategy": sid})

    def _pause(self, sid: str, cause: str, reason: str, spend, now: datetime) -> None:
        try:
            with self.db.transaction() as conn:
                written = pause(conn, sid, cause, reason, now=now,
                                parameters={"spend_usdt": round(spend.spend_usdt, 6), "calls": spend.calls,
                                            "budget_started_at": spend.started_at.isoformat()})
        except (DatabaseUnavailable, MsdError) as exc:
            log.error("strategy %s: could not pause (%s): %s", sid, reason, exc)
            return
        if written:
            log.error("ALERT: strategy %s paused, no new entries (exits keep protecting positions): %s; "
                      "`msd-ctl resume --strategy %s` starts a new budget", sid, reason, sid,
                      extra={"strategy": sid, "alert": f"warmup_{cause}_spent"})
            self.ctx.degrade(f"warm-up paused {sid}", reason)
        self.on_versions_changed(f"strategy {sid} paused")

    def request(self, trigger: str, reason: str, strategy: str | None = None, *, repeat: bool = False) -> None:
        metrics.TRAINING_TRIGGERS.labels(trigger).inc()
        log.info("training trigger %s: %s", trigger, reason,
                 extra={"strategy": strategy, "trigger": trigger, "repeat": repeat})
        self.ctx.event("train_request", reason=reason, strategy=strategy, repeat=repeat)
