"""Retraining triggers, checked by the signaller (FR-019 … FR-022).

Every `trainer.check_interval_s`: fills reconciled from the shared `orders` table, the schedule (next run persisted, a missed run runs once),
the data threshold (executions labelled since the strategy's last training) and the live
quality of model-mode strategies (labelled outcomes of their own signals, prequentially). A
trigger becomes a `train_request` event to the supervisor, where the newest request wins.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from msd import metrics
from msd.config import Config
from msd.errors import DatabaseUnavailable, MsdError
from msd.learning.quality import live_accuracy
from msd.learning.triggers import data_threshold_reached, schedule_decision
from msd.ml.gate import degradation_check
from msd.roles.models import ModelBook
from msd.roles.online import OnlineTracker
from msd.roles.runtime import RoleContext
from msd.store.datasets import (LabelWindow, labelled_since_last_training, recent_model_outcomes,
                                reconcile_executions)
from msd.store.db import Database
from msd.store.schedule import next_run_at, set_next_run
from msd.store.versions import deactivate, last_good, latest_training_outcomes, rollback

log = logging.getLogger("msd.learning")
SCHEDULE_NAME = "training"
REQUEST_AGAIN_AFTER_S = 300.0    # a data-threshold request that produced no training is repeated


class LearningLoop:
    def __init__(self, ctx: RoleContext, db: Database, book: ModelBook):
        self.ctx, self.db, self.book = ctx, db, book
        self.next_check = 0.0
        self.degraded: dict[tuple[str, int | None], bool] = {}
        self.requested_at: dict[str, float] = {}
        self.view: dict[str, Any] = {}
        self.reconciled = 0
        self.online: OnlineTracker | None = None

    def maybe_check(self, config: Config, now: datetime) -> None:
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + config.trainer.check_interval_s
        self._reconcile()
        try:
            with self.db.transaction() as conn:
                self._check_schedule(conn, config, now)
                counts = labelled_since_last_training(conn, config.trainer.training.horizon_s)
                self.view["last_training"] = latest_training_outcomes(conn)
                window = LabelWindow(config.trainer.training.horizon_s, config.trainer.training.max_bar_lag_s)
                outcomes = {sid: recent_model_outcomes(conn, sid, f"v{self.book.version(sid)}", window,
                                                       config.trainer.quality.window)
                            for sid in self.book.models}
        except DatabaseUnavailable as exc:
            log.warning("retraining triggers not checked: %s", exc)
            return
        self._check_data(config, counts)
        self._check_quality(config, outcomes)
        self.view["labelled_since_training"] = counts

    def _reconcile(self) -> None:
        """Fills a competing consumer took from our queue are read back from `orders` (the
        README's promise): every check, not only when a training run happens to start."""
        try:
            with self.db.transaction() as conn:
                added = reconcile_executions(conn)
        except (DatabaseUnavailable, MsdError) as exc:
            self.view["reconcile"] = f"not possible: {exc}"
            return
        self.view["reconcile"] = "ok"
        self.reconciled += added
        self.view["reconciled_fills"] = self.reconciled

    def _check_schedule(self, conn, config: Config, now: datetime) -> None:
        schedule = config.trainer.schedule
        if schedule is None:
            self.view.pop("next_scheduled_training", None)
            return
        decision = schedule_decision(schedule, next_run_at(conn, SCHEDULE_NAME), now)
        set_next_run(conn, SCHEDULE_NAME, decision.next_run_at, ran_at=now if decision.due else None)
        self.view["next_scheduled_training"] = decision.next_run_at.isoformat()
        if decision.due:
            self.request("schedule", "scheduled retraining" + (" (missed while msd was down)" if decision.missed else ""))

    def _check_data(self, config: Config, counts: dict[str, int]) -> None:
        for sid, count in sorted(counts.items()):
            if not data_threshold_reached(count, config.trainer.data_threshold):
                continue
            if time.monotonic() - self.requested_at.get(sid, -1e9) < REQUEST_AGAIN_AFTER_S:
                continue
            self.requested_at[sid] = time.monotonic()
            self.request("data_threshold", f"data threshold: {count} new labelled executions "
                                           f"(threshold {config.trainer.data_threshold})", sid)

    def _check_quality(self, config: Config, outcomes: dict) -> None:
        quality, fee = config.trainer.quality, config.trainer.training.round_trip_fee
        live = {}
        if self.online is None or self.online.models_dir != config.trainer.training.models_dir:
            self.online = OnlineTracker(config.trainer.training.models_dir)
        for sid, rows in outcomes.items():
            try:
                self.online.update(sid, rows, fee)
            except OSError as exc:
                log.error("online learner of %s not saved: %s", sid, exc)
            accuracy, samples = live_accuracy(rows, fee)
            # Quality is judged per version: a new or rolled-back version starts with a clean record.
            was = self.degraded.get((sid, self.book.version(sid)), False)
            now_degraded = degradation_check(accuracy, samples, quality.threshold, quality.hysteresis,
                                             min_samples=quality.min_samples, was_degraded=was)
            self.degraded[(sid, self.book.version(sid))] = now_degraded
            live[sid] = {"accuracy": accuracy, "samples": samples, "degraded": now_degraded,
                         "version": self.book.version(sid), "online": self.online.record(sid).view()}
            if accuracy is not None:
                metrics.MODEL_LIVE_ACCURACY.labels(sid).set(accuracy)
            if now_degraded != was:
                self._quality_changed(sid, now_degraded, accuracy, samples, quality.threshold)
            elif not now_degraded and samples >= quality.min_samples:
                self.ctx.recover(f"model quality {sid}")    # e.g. the version served after a fall-back
        self.view["live_quality"] = live

    def _quality_changed(self, sid: str, degraded: bool, accuracy, samples: int, threshold: float) -> None:
        metrics.MODEL_QUALITY_DEGRADED.labels(sid).set(1 if degraded else 0)
        component = f"model quality {sid}"
        if degraded:
            why = f"live accuracy {accuracy:.3f} over {samples} calls is below {threshold}"
            log.error("ALERT: strategy %s model v%s quality degraded: %s; retraining", sid,
                      self.book.version(sid), why, extra={"strategy": sid, "alert": "model_quality_degraded"})
            self.ctx.degrade(component, why)
            self.fall_back(sid, why)
            self.request("quality_degradation", f"quality degradation: {why}", sid)
        else:
            log.info("strategy %s model quality recovered (live accuracy %.3f)", sid, accuracy)
            self.ctx.recover(component)

    def fall_back(self, sid: str, why: str) -> None:
        """Stop serving a degraded version: the last good one if there is one, else warm-up."""
        bad = self.book.version(sid)
        try:
            with self.db.transaction() as conn:
                target = last_good(conn, sid)
                if target is not None and target != bad:
                    rollback(conn, sid, target, reason=f"v{bad} degraded: {why}")
                else:
                    deactivate(conn, sid, reason=f"v{bad} degraded: {why}", evidence={"live": why})
            self.book.reload([sid])
        except (DatabaseUnavailable, MsdError) as exc:
            log.error("strategy %s: could not stop serving degraded v%s: %s", sid, bad, exc)
            return
        now_serving = f"v{self.book.version(sid)}" if self.book.version(sid) else "warm-up"
        log.error("strategy %s: degraded v%s replaced by %s", sid, bad, now_serving, extra={"strategy": sid})

    def request(self, trigger: str, reason: str, strategy: str | None = None) -> None:
        metrics.TRAINING_TRIGGERS.labels(trigger).inc()
        log.info("training trigger %s: %s", trigger, reason, extra={"strategy": strategy, "trigger": trigger})
        self.ctx.event("train_request", reason=reason, strategy=strategy)
