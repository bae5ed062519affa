"""The training job (named by `trainer.job`; `msd.roles.trainer_jobs:train_strategies` is an
alias kept for existing configs): reconcile fills, build each strategy's dataset, fit and
evaluate, write the version (artifact + metadata + metrics) and promote it when it passes the
gate (DESIGN §6).

It runs in the killable trainer process, never in a loop that serves signals; SIGTERM raises
TrainingCancelled wherever it is, and every database write happens in a transaction that then
rolls back, so a cancelled run leaves at most an orphan directory that the next run with the
same version number clears. A strategy finished before the cancel stays written: the
supervisor tells the signaller whatever the trainer's exit.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from msd import metrics
from msd.learning.dataset import bulk_dataset
from msd.learning.versions import fallback_version
from msd.learning.promotion import (batch_publication, publish_version, realised_figures,
                                    score_active)
from msd.ml.dataset import Dataset
from msd.ml.features import NUMBER_PATHS, OBJECT_PATHS
from msd.ml.training import NotTrainable, TrainingParams, fit_and_evaluate
from msd.values.clock import Clock, utc_now
from msd.store.artifacts import prune_plan, remove_version_files
from msd.store.datasets import LabelWindow, reconcile_executions, trainable_strategies
from msd.store.training_columns import (cost_fill_columns, decision_columns,
                                        decision_fill_counts)
from msd.store.db import Database
from msd.store.neighbours import SharedSchemaError
from msd.store.training import execution_summary, running_run_of
from msd.values.records import RowCounts
from msd.store.versions import (get_active, last_good, latest_version, lock_strategy,
                                mark_files_pruned, record_training_outcome)

log = logging.getLogger("msd.trainer")


def summarise_executions(ctx: Any, db: Database, request: dict[str, Any]) -> dict[str, Any]:
    """Summarise the executions available for training (counts per asset and side, time range)."""
    with db.transaction() as conn:
        summary = execution_summary(conn)
    ctx.beat()
    return {"request_id": request["id"], "executions": summary}


def training_params(ctx: Any, request: Mapping[str, Any]) -> TrainingParams:
    """`ctx.config.trainer.training` (a TrainingParams or a mapping) when the config has it,
    else the request's `params` mapping, else the defaults of TrainingParams."""
    configured = getattr(getattr(getattr(ctx, "config", None), "trainer", None), "training", None)
    if isinstance(configured, TrainingParams):
        return configured
    if isinstance(configured, Mapping):
        return TrainingParams.from_mapping(configured)
    return TrainingParams.from_mapping(request.get("params") or {})


def requested_scope(request: Mapping[str, Any]) -> list[str] | None:
    """The strategies a request names (merged scopes carry several), None for all."""
    if request.get("strategies"):
        return sorted(set(request["strategies"]))
    return [request["strategy"]] if request.get("strategy") else None


def configured_strategies(ctx: Any) -> set[str] | None:
    strategies = getattr(getattr(getattr(ctx, "config", None), "signaller", None), "strategies", None)
    return None if strategies is None else {p.id for p in strategies}


@dataclass(frozen=True)
class _Run:
    ctx: Any
    db: Database
    params: TrainingParams
    request_id: str | None
    run_id: int | None
    clock: Clock = utc_now      # read once per strategy, before its data: the outcome's event time


def train_strategies(ctx: Any, db: Database, request: dict[str, Any], clock: Clock = utc_now) -> dict[str, Any]:
    """Train the requested strategies or every trainable one; `clock` stamps each attempt's
    training outcome with the moment its data were read.

    Trainable: strategies with executed warm-up or model decisions that the config lists (when
    there is a config); the exit engine's fills are no decisions to learn from. Returns
    {"request_id", "reconciled", "warnings", "strategies": {id: summary}} where a summary has
    "outcome" ('trained'/'skipped'), "reason", and for a trained strategy "version",
    "promoted", "gate_reasons" and "metrics".
    """
    params = training_params(ctx, request)
    warnings = []
    try:
        with db.transaction() as conn:
            reconciled = reconcile_executions(conn)
    except SharedSchemaError as exc:
        # Training on the fills we have beats not training; the gap is reported, not hidden.
        reconciled, warnings = 0, [f"reconcile skipped: {exc}"]
    ctx.beat()
    with db.transaction() as conn:
        trainable = set(trainable_strategies(conn))
        run_id = running_run_of(conn, os.getpid())
    configured = configured_strategies(ctx)
    if configured is not None:
        trainable &= configured
    scope = requested_scope(request)
    run = _Run(ctx, db, params, request.get("id"), run_id, clock)
    results = {}
    for strategy in (scope if scope is not None else sorted(trainable)):
        if strategy in trainable:
            results[strategy] = train_strategy(run, strategy)
        else:
            results[strategy] = _skip(run, strategy, "not trainable: no executed warm-up or model "
                                      "decisions of a configured strategy", {}, run.clock())
    return {"request_id": request.get("id"), "reconciled": reconciled, "warnings": warnings,
            "strategies": results}


def train_strategy(run: _Run, strategy: str) -> dict[str, Any]:
    as_of = run.clock()         # the attempt's event time: its data are read from here on
    with run.db.transaction() as conn:
        last = latest_version(conn, strategy)
        active = get_active(conn, strategy)
    # The realised PnL (FIFO over every fill, Decimal) reads and counts on a thread of its own
    # meanwhile: it needs nothing of the dataset or the fit, and most of its time and theirs is
    # spent waiting on the database or in numpy, which let the other run.
    realised = Background(_realised_figures, run.db, strategy)
    dataset, counts = build_strategy_dataset(run.db, strategy, run.params, run.ctx.beat, now=as_of)
    previous_rows = last.labelled_rows if last else 0
    new_rows = dataset.n - previous_rows
    detail = {"dataset": counts.as_dict(), "usable_rows": dataset.n,
              "missing_features": dict(dataset.missing), "bad_prices": dataset.bad_prices,
              "new_rows": new_rows, "fill_rate": counts.fill_rate}
    if new_rows < run.params.min_new_rows:
        since = f"since v{last.version}" if last else "in total"
        return _skip(run, strategy, f"data drought: {new_rows} new usable labelled rows {since}; "
                                    f"minimum {run.params.min_new_rows}", detail, as_of)
    try:
        candidate = fit_and_evaluate(dataset, run.params, progress=run.ctx.beat)
    except NotTrainable as exc:
        return _skip(run, strategy, f"not trainable: {exc}", detail, as_of)
    run.ctx.beat()
    incumbent = score_active(active, dataset, candidate, run.params)
    publication = batch_publication(strategy, candidate, dataset, active, incumbent,
                                    realised.result(run.ctx.beat), detail, run.params, run.request_id, run.run_id,
                                    as_of)
    summary = publish_version(run.db, publication)
    run.ctx.beat()
    _prune(run, strategy)
    log.info("strategy %s: v%s %s", strategy, summary["version"],
             "promoted" if summary["promoted"] else "not promoted",
             extra={"reasons": "; ".join(summary["gate_reasons"])})
    return summary


class Background:
    """`fn(*args)` on a daemon thread; `result(beat)` waits for it (beating meanwhile) and
    returns its value or raises its exception. A run that stops early (a skip, a cancel) just
    abandons it: a read has nothing to undo, and the process ends with the run."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._outcome: tuple[bool, Any] | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True,
                                        name=f"msd-{fn.__name__}")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self._outcome = (True, fn(*args))
        except BaseException as exc:        # noqa: BLE001 - handed to the waiting thread
            self._outcome = (False, exc)

    def result(self, beat: Callable[[], None] = lambda: None) -> Any:
        while self._thread.is_alive():
            self._thread.join(1.0)
            beat()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def _realised_figures(db: Database, strategy: str) -> dict[str, float]:
    reader = db.sibling("msd-trainer-realised")
    try:
        return realised_figures(reader, strategy, lambda: None)
    finally:
        reader.close()


def build_strategy_dataset(db: Database, strategy: str, params: TrainingParams,
                           beat=lambda: None, *, now: datetime | None = None,
                           **bounds) -> tuple[Dataset, RowCounts]:
    """The strategy's dataset from the store, read in bulk as columns (decisions and the
    fills that price their costs) and labelled and featurised with array code. `now` (the
    run's clock) says which unlabelled decisions may still get a label (None: the database's
    clock, for msd-ctl's reports)."""
    window = LabelWindow(params.horizon_s, params.max_bar_lag_s, now)
    with db.transaction() as conn:
        decisions = decision_columns(conn, strategy, window, NUMBER_PATHS, OBJECT_PATHS,
                                     progress=beat, **bounds)
        fill_counts = decision_fill_counts(conn, strategy, **bounds)
        fills = cost_fill_columns(conn, strategy, until=bounds.get("until"), progress=beat)
    return bulk_dataset(decisions, fill_counts, fills, params, beat)


def _skip(run: _Run, strategy: str, reason: str, detail: dict[str, Any], at: datetime) -> dict[str, Any]:
    with run.db.transaction() as conn:
        record_training_outcome(conn, strategy, "skipped", reason, at=at, request_id=run.request_id,
                                detail=detail, training_run_id=run.run_id)
    log.info("strategy %s: training skipped: %s", strategy, reason)
    metrics.TRAINING_SKIPPED.labels(strategy, reason.split(":")[0]).inc()
    return {"outcome": "skipped", "reason": reason, **detail}


def _prune(run: _Run, strategy: str) -> None:
    """Retention: rows are marked (and committed) before files go, so a row never claims
    files that are gone; the active and the last good version are never candidates."""
    models_dir = run.params.models_dir
    with run.db.transaction() as conn:
        lock_strategy(conn, strategy)
        active = get_active(conn, strategy)
        # the version a fall-back would load now, and the newest good one by the rows alone
        fallback, _ = fallback_version(conn, strategy, run.params,
                                       skip=active.version if active else None)
        protected = {v for v in (active.version if active else None,
                                 fallback.version if fallback else None,
                                 last_good(conn, strategy)) if v is not None}
        doomed = prune_plan(models_dir, strategy, run.params.keep_files, protected)
        mark_files_pruned(conn, strategy, doomed)
    for version in doomed:
        remove_version_files(models_dir, strategy, version)
