"""Promotion: a candidate (from batch training or the online challenger) is judged by the one
gate and written as the strategy's next version in ONE transaction: number, artifact, row,
quality metrics, training outcome and (when the gate passed) activation with its audit row.
A crash or SIGTERM anywhere before the commit leaves no row, so no half-published version can
ever be activated. The incumbent is read again under the strategy's version lock in that
transaction: if another version became active since the candidate was scored (a rollback, a
fall-back, an online promotion), the candidate is scored against that one (batch) or not
published (online), never gated against a version that is no longer active (review finding 7).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from msd.values.parsing import aware_time
from msd.errors import MsdError
from msd.learning.versions import MODEL_CLASS, load_model
from msd.ml.calibration import CalibratedModel
from msd.ml.dataset import Dataset
from msd.ml.estimator import FORMAT_VERSION
from msd.ml.evaluation import Metrics
from msd.ml.features import FEATURE_NAMES, FEATURE_VERSION, LABELS
from msd.ml.gate import GateDecision, promotion_decision
from msd.ml.params import TrainingParams
from msd.ml.roundtrips import FifoBook, RoundTripTally
from msd.ml.training import MODEL_TYPE, Candidate, candidate_report, flatten_metrics, score
from msd.store.artifacts import remove_version_files, version_dir, write_version
from msd.store.datasets import iter_fills
from msd.store.db import Database
from msd.store.versions import (NewVersion, VersionError, VersionInfo, activate, get_active,
                                insert_version, record_quality_metrics,
                                record_training_outcome, reserve_version)


class StaleIncumbent(VersionError):
    """Another version became active since the candidate was scored and it cannot be rescored."""


@dataclass(frozen=True)
class IncumbentScore:
    """The active version rescored on the candidate's validation decisions that it never
    learned (`metrics`), the candidate on those same decisions (`candidate`), or why not
    (`note`); `blocking` when the incumbent serves but cannot be compared, which refuses."""
    metrics: Metrics | None = None
    candidate: Metrics | None = None
    note: str | None = None
    blocking: bool = False


@dataclass(frozen=True)
class Publication:
    """Everything a version row needs; `validation` and `active_metrics` come from one window."""
    strategy: str
    model: CalibratedModel
    source: str                         # "batch" | "online"
    validation: Metrics
    baselines: Mapping[str, Metrics]
    active: VersionInfo | None
    active_metrics: Metrics | None      # the incumbent scored on the same decisions
    active_note: str | None             # why the incumbent could not be scored
    report: Mapping[str, Any]
    params: TrainingParams
    labelled_rows: int
    validation_from: datetime | None
    validation_to: datetime | None
    training: Metrics | None = None
    realised: Mapping[str, float] = field(default_factory=dict)
    dataset_detail: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    run_id: int | None = None
    candidate_vs_active: Metrics | None = None     # the candidate on the incumbent's rows
    active_blocking: bool = False
    rescore: Callable[[VersionInfo | None], IncumbentScore] | None = None
    as_of: datetime | None = None       # the event time of the attempt: its training outcome's `at`, its activated_at

    def decision(self) -> GateDecision:
        decision = promotion_decision(self.validation, self.baselines, self.active_metrics,
                                      self.validation.n, self.params.gate(),
                                      candidate_vs_active=self.candidate_vs_active)
        if self.active_blocking:
            failed = tuple(r for r in decision.reasons if r.startswith("fail:"))
            return GateDecision(False, failed + (f"fail: {self.active_note}",))
        return decision

    def with_incumbent(self, active: VersionInfo | None, score: IncumbentScore) -> "Publication":
        return dataclasses.replace(self, active=active, active_metrics=score.metrics,
                                   active_note=score.note, candidate_vs_active=score.candidate,
                                   active_blocking=score.blocking)


def learned_until(info: VersionInfo) -> datetime | None:
    """Decisions before this moment may have been learned by the version: its recorded
    `learned_until`, else (older rows) the start of its validation window for a batch version
    (its fit and calibration rows all lie before it) and the end for an online one (its learner
    kept learning until it was published)."""
    recorded = (info.metrics or {}).get("learned_until")
    if recorded:
        return aware_time("metrics.learned_until", recorded)
    if (info.metrics or {}).get("source") == "online":
        return info.validation_to
    return info.validation_from


def score_active(active: VersionInfo | None, dataset: Dataset, candidate: Candidate,
                 params: TrainingParams) -> IncumbentScore:
    """The active version's figures on the candidate's validation decisions it never learned,
    and the candidate's on the same decisions, or why not.

    Its stored figures come from an older window and cannot be compared; rescoring it on rows
    it learned (an online-promoted version learned recent decisions) would flatter it. If its
    artifact is unusable (tampered, pruned, other features) the signaller cannot serve it
    either, so the candidate is judged against the baselines alone and the note says why.
    """
    if active is None:
        return IncumbentScore()
    try:
        model = load_model(active, params)      # another label definition: not comparable
    except (MsdError, OSError, ValueError) as exc:
        return IncumbentScore(note=f"active v{active.version} not comparable: {exc}")
    rows = candidate.val_idx
    until = learned_until(active)
    if until is not None:
        rows = rows[dataset.timestamps[rows] >= until.timestamp()]
    if rows.size < params.min_samples:
        return IncumbentScore(note=f"active v{active.version} learned decisions up to "
                                   f"{until.isoformat() if until else '?'}: {rows.size} validation "
                                   f"decisions it never saw, minimum {params.min_samples}",
                              blocking=True)
    return IncumbentScore(score(model, dataset, rows, params),
                          score(candidate.model, dataset, rows, params))


def batch_publication(strategy: str, candidate: Candidate, dataset: Dataset,
                      active: VersionInfo | None, incumbent: IncumbentScore,
                      realised: Mapping[str, float], detail: Mapping[str, Any],
                      params: TrainingParams, request_id: str | None,
                      run_id: int | None, as_of: datetime | None = None) -> Publication:
    """`as_of`: when the run read its data (its clock); without one, when the dataset's newest
    decision was labelled (its time plus the horizon), the newest moment the data speak for."""
    stamps = dataset.timestamps[candidate.val_idx]
    fitted = dataset.timestamps[candidate.train_idx]
    report = {**candidate_report(candidate), "realised": dict(realised),
              "active_on_same_window": _asdict_or_none(incumbent.metrics),
              "learned_until": _utc(fitted.max()).isoformat() if fitted.size else None}
    pub = Publication(strategy, candidate.model, "batch", candidate.validation,
                      candidate.baselines, active, None, None, report, params,
                      dataset.n, _utc(stamps.min()), _utc(stamps.max()), candidate.training,
                      realised, detail, request_id, run_id,
                      rescore=lambda info: score_active(info, dataset, candidate, params),
                      as_of=as_of or _utc(dataset.timestamps.max() + params.horizon_s))
    return pub.with_incumbent(active, incumbent)


def realised_figures(db: Database, strategy: str, beat: Callable[[], None]) -> dict[str, float]:
    """FIFO round trips over all of the strategy's fills, streamed (fees included)."""
    book, tally = FifoBook(), RoundTripTally()
    with db.transaction() as conn:
        for count, fill in enumerate(iter_fills(conn, strategy), 1):
            tally.add(book.add(fill))
            if count % 100_000 == 0:
                beat()
    return tally.summary()


def publish_version(db: Database, pub: Publication) -> dict[str, Any]:
    """Write the version; activate it when the gate passes. Returns a JSON-ready summary.
    Raises StaleIncumbent (nothing written) when the active version changed since `pub` was
    scored and `pub` cannot rescore it."""
    with db.transaction() as conn:
        version = reserve_version(conn, pub.strategy)       # holds the strategy's version lock
        pub = _with_current_incumbent(conn, pub)
        decision = pub.decision()
        reasons = list(decision.reasons) + (
            [pub.active_note] if pub.active_note and not pub.active_blocking else [])
        figures = validation_figures(pub)
        target = version_dir(pub.params.models_dir, pub.strategy, version)
        # No row has this number (we hold the lock), so a directory there is an orphan of a
        # run that died before its commit.
        remove_version_files(pub.params.models_dir, pub.strategy, version)
        ref = write_version(pub.params.models_dir, pub.strategy, version, pub.model.to_arrays(),
                            _manifest(pub, version, decision.promote, reasons))
        version_id = insert_version(conn, _new_version(pub, version, str(target.resolve()), ref,
                                                        decision.promote, reasons))
        record_quality_metrics(conn, version_id, figures, "validation", pub.validation.n)
        if pub.training is not None:
            record_quality_metrics(conn, version_id, flatten_metrics(pub.training), "training",
                                   pub.training.n)
        if pub.realised:
            record_quality_metrics(conn, version_id, pub.realised, "realised",
                                   int(pub.realised.get("round_trips", 0)))
        if decision.promote:
            activate(conn, pub.strategy, version, now=pub.as_of,
                     reason=f"v{version} ({pub.source}) passed the promotion gate",
                     evidence={"metrics": figures, "checks": reasons, "source": pub.source})
        record_training_outcome(conn, pub.strategy, "trained",
                                "promoted" if decision.promote else "not promoted", at=pub.as_of,
                                request_id=pub.request_id, model_version=version,
                                detail={**pub.dataset_detail, "source": pub.source,
                                        "checks": reasons},
                                training_run_id=pub.run_id)
    return {"outcome": "trained", "version": version, "promoted": decision.promote,
            "gate_reasons": reasons, "metrics": figures, "source": pub.source,
            **pub.dataset_detail}


def _with_current_incumbent(conn, pub: Publication) -> Publication:
    """`pub` judged against the version active now (read under the lock)."""
    current = get_active(conn, pub.strategy)
    then = pub.active.version if pub.active is not None else None
    if (current.version if current is not None else None) == then:
        return pub
    if pub.rescore is None:
        raise StaleIncumbent(f"{pub.strategy}: the active version changed from "
                             f"{'v' + str(then) if then else 'none'} to "
                             f"{'v' + str(current.version) if current else 'none'} since the "
                             f"{pub.source} candidate was scored")
    return pub.with_incumbent(current, pub.rescore(current))


def validation_figures(pub: Publication) -> dict[str, float]:
    """Candidate figures plus every baseline's (and the incumbent's) under a prefix."""
    figures = flatten_metrics(pub.validation)
    for name, baseline in pub.baselines.items():
        figures.update(flatten_metrics(baseline, f"{name}."))
    if pub.active_metrics is not None:
        figures.update(flatten_metrics(pub.active_metrics, "active."))
    if pub.candidate_vs_active is not None:
        figures.update(flatten_metrics(pub.candidate_vs_active, "candidate_vs_active."))
    return figures


def _manifest(pub: Publication, version: int, promoted: bool,
              reasons: list[str]) -> dict[str, Any]:
    return {"strategy_id": pub.strategy, "version": version, "model_type": MODEL_TYPE,
            "model_class": MODEL_CLASS, "array_format_version": FORMAT_VERSION,
            "feature_version": FEATURE_VERSION, "feature_names": list(FEATURE_NAMES),
            "label_mapping": dict(LABELS), "source": pub.source,
            "training_config": pub.params.to_json(), "metrics": dict(pub.report),
            "gate": {"passed": promoted, "checks": reasons},
            "dataset": dict(pub.dataset_detail),
            "created_at": datetime.now(timezone.utc).isoformat()}


def _new_version(pub: Publication, version: int, path: str, ref, promoted: bool,
                 reasons: list[str]) -> NewVersion:
    return NewVersion(
        strategy_id=pub.strategy, version=version, path=path, sha256=ref.sha256,
        manifest_sha256=ref.manifest_sha256, model_type=MODEL_TYPE,
        feature_version=FEATURE_VERSION, feature_names=list(FEATURE_NAMES),
        label_mapping=dict(LABELS), training_config=pub.params.to_json(),
        metrics={**pub.report, "source": pub.source}, promoted_when_trained=promoted,
        gate_reasons=reasons, labelled_rows=pub.labelled_rows,
        validation_from=pub.validation_from, validation_to=pub.validation_to,
        training_run_id=pub.run_id)


def _utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(float(stamp), timezone.utc)


def _asdict_or_none(figures: Metrics | None) -> dict | None:
    return None if figures is None else dataclasses.asdict(figures)
