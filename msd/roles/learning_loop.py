"""Retraining triggers, checked by the signaller (FR-019 … FR-022).

Every `trainer.check_interval_s`: fills reconciled from the shared `orders` table, the schedule (next run persisted, a missed run runs once),
the data threshold (executions labelled since the strategy's last training) and the live
quality of model-mode strategies (labelled outcomes of their own signals, prequentially). A
trigger becomes a `train_request` event to the supervisor, where the newest request wins.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
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
from msd.store.datasets import (LabelWindow, dataset_sizes, labelled_since_last_training,
                                recent_model_outcomes, reconcile_executions)
from msd.store.db import Database
from msd.store.schedule import next_run_at, set_next_run
from msd.store.versions import deactivate, last_good, latest_training_outcomes, rollback

log = logging.getLogger("msd.learning")
SCHEDULE_NAME = "training"
REQUEST_AGAIN_AFTER_S = 300.0    # a data-threshold request that produced no training is repeated
SIZES_EVERY_S = 60.0             # full dataset sizes (one bar lookup per executed signal) this often


@dataclass(frozen=True)
class Gathered:
    """What the worker read for one check; the main loop acts on it."""
    versions: dict[str, str]                    # strategy -> version the outcomes belong to
    schedule_due: bool
    schedule_missed: bool
    next_scheduled: str | None
    counts: dict[str, int]
    last_training: dict[str, dict]
    outcomes: dict[str, list]
    reconcile: str
    reconciled: int
    sizes: dict[str, dict] | None


class LearningLoop:
    """Reading is done by a worker thread on its own connection (dataset sizes take seconds on
    a large history, and the signaller's turn must not wait for them); deciding, requesting
    and switching models stay on the signaller's main loop."""

    def __init__(self, ctx: RoleContext, db: Database, book: ModelBook):
        self.ctx, self.db, self.book = ctx, db, book
        cfg = ctx.config.database
        self.worker_db = Database(cfg.url, connect_timeout=cfg.connect_timeout_s, application_name="msd-learning")
        self.next_check = 0.0
        self.next_sizes = 0.0
        self.degraded: dict[tuple[str, int | None], bool] = {}
        self.requested_at: dict[str, float] = {}
        self.view: dict[str, Any] = {}
        self.reconciled = 0
        self.online: OnlineTracker | None = None
        self._worker: threading.Thread | None = None
        self._gathered: Gathered | None = None

    def maybe_check(self, config: Config, now: datetime) -> None:
        if self._worker is not None:
            if self._worker.is_alive():
                return
            self._worker, gathered, self._gathered = None, self._gathered, None
            if gathered is not None:
                self._apply(config, gathered)
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + config.trainer.check_interval_s
        with_sizes = time.monotonic() >= self.next_sizes
        if with_sizes:
            self.next_sizes = time.monotonic() + SIZES_EVERY_S
        versions = {sid: f"v{self.book.version(sid)}" for sid in self.book.models}
        self._worker = threading.Thread(target=self._gather_safely, args=(config, now, versions, with_sizes),
                                        name="learning", daemon=True)
        self._worker.start()

    def _gather_safely(self, config: Config, now: datetime, versions: dict[str, str], with_sizes: bool) -> None:
        try:
            self._gathered = self._gather(config, now, versions, with_sizes)
        except DatabaseUnavailable as exc:
            log.warning("retraining triggers not checked: %s", exc)
        except Exception:
            log.exception("retraining triggers not checked")

    def _gather(self, config: Config, now: datetime, versions: dict[str, str], with_sizes: bool) -> Gathered:
        """Worker thread: only self.worker_db is used here."""
        reconcile, added = self._reconcile()
        training = config.trainer.training
        window = LabelWindow(training.horizon_s, training.max_bar_lag_s)
        with self.worker_db.transaction() as conn:
            due, missed, next_run = self._schedule(conn, config, now)
            counts = labelled_since_last_training(conn, training.horizon_s)
            last = latest_training_outcomes(conn)
            outcomes = {sid: recent_model_outcomes(conn, sid, version, window, config.trainer.quality.window)
                        for sid, version in versions.items()}
            sizes = dataset_sizes(conn, window) if with_sizes else None
        return Gathered(versions, due, missed, next_run, counts, last, outcomes, reconcile, added, sizes)

    def _apply(self, config: Config, g: Gathered) -> None:
        """Main loop: act on what the worker read."""
        self.reconciled += g.reconciled
        self.view.update(reconcile=g.reconcile, reconciled_fills=self.reconciled, last_training=g.last_training,
                         labelled_since_training=g.counts)
        if g.next_scheduled:
            self.view["next_scheduled_training"] = g.next_scheduled
        if g.sizes is not None:
            self.view["datasets"] = g.sizes
        if g.schedule_due:
            self.request("schedule", "scheduled retraining" + (" (missed while msd was down)" if g.schedule_missed else ""))
        self._check_data(config, g.counts)
        # a rollback or promotion since the read makes those outcomes another version's
        current = {sid: rows for sid, rows in g.outcomes.items()
                   if sid in self.book.models and g.versions.get(sid) == f"v{self.book.version(sid)}"}
        self._check_quality(config, current)

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
        """Live quality per model-mode strategy (main loop: may fall back and request training)."""
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
