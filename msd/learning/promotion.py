"""Promotion: a candidate (from batch training or the online challenger) is judged by the one
gate and written as the strategy's next version in ONE transaction: number, artifact, row,
quality metrics, training outcome and (when the gate passed) activation with its audit row.
A crash or SIGTERM anywhere before the commit leaves no row, so no half-published version can
ever be activated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

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
from msd.store.versions import (NewVersion, VersionInfo, activate, insert_version,
                                record_quality_metrics, record_training_outcome,
                                reserve_version)


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

    def decision(self) -> GateDecision:
        return promotion_decision(self.validation, self.baselines, self.active_metrics,
                                  self.validation.n, self.params.gate())


def score_active(active: VersionInfo | None, dataset: Dataset, candidate: Candidate,
                 params: TrainingParams) -> tuple[Metrics | None, str | None]:
    """The active version's figures on the candidate's validation window, or why not.

    Its stored figures come from an older window and cannot be compared. If its artifact is
    unusable (tampered, pruned, other features) the signaller cannot serve it either, so the
    candidate is judged against the baselines alone and the note says why.
    """
    if active is None:
        return None, None
    try:
        model = load_model(active)
    except (MsdError, OSError, ValueError) as exc:
        return None, f"active v{active.version} not comparable: {exc}"
    return score(model, dataset, candidate.val_idx, params), None


def batch_publication(strategy: str, candidate: Candidate, dataset: Dataset,
                      active: VersionInfo | None, active_metrics: Metrics | None,
                      active_note: str | None, realised: Mapping[str, float],
                      detail: Mapping[str, Any], params: TrainingParams,
                      request_id: str | None, run_id: int | None) -> Publication:
    stamps = dataset.timestamps[candidate.val_idx]
    report = {**candidate_report(candidate), "realised": dict(realised),
              "active_on_same_window": _asdict_or_none(active_metrics)}
    return Publication(strategy, candidate.model, "batch", candidate.validation,
                       candidate.baselines, active, active_metrics, active_note, report, params,
                       dataset.n, _utc(stamps.min()), _utc(stamps.max()), candidate.training,
                       realised, detail, request_id, run_id)


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
    """Write the version; activate it when the gate passes. Returns a JSON-ready summary."""
    decision = pub.decision()
    reasons = list(decision.reasons) + ([pub.active_note] if pub.active_note else [])
    figures = validation_figures(pub)
    with db.transaction() as conn:
        version = reserve_version(conn, pub.strategy)
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
            activate(conn, pub.strategy, version,
                     reason=f"v{version} ({pub.source}) passed the promotion gate",
                     evidence={"metrics": figures, "checks": reasons, "source": pub.source})
        record_training_outcome(conn, pub.strategy, "trained",
                                "promoted" if decision.promote else "not promoted",
                                request_id=pub.request_id, model_version=version,
                                detail={**pub.dataset_detail, "source": pub.source,
                                        "checks": reasons},
                                training_run_id=pub.run_id)
    return {"outcome": "trained", "version": version, "promoted": decision.promote,
            "gate_reasons": reasons, "metrics": figures, "source": pub.source,
            **pub.dataset_detail}


def validation_figures(pub: Publication) -> dict[str, float]:
    """Candidate figures plus every baseline's (and the incumbent's) under a prefix."""
    figures = flatten_metrics(pub.validation)
    for name, baseline in pub.baselines.items():
        figures.update(flatten_metrics(baseline, f"{name}."))
    if pub.active_metrics is not None:
        figures.update(flatten_metrics(pub.active_metrics, "active."))
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
