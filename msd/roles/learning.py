"""The steps of a training run that join ml decisions to store writes (used by trainer_jobs).

`publish_version` writes a candidate as the strategy's next version in ONE transaction: number,
artifact, row, quality metrics, outcome, and (when the gate passed) activation with its audit
row. A crash or SIGTERM anywhere before the commit leaves no row, so no half-published version
can ever be activated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from msd.errors import MsdError
from msd.ml.dataset import Dataset
from msd.ml.estimator import FORMAT_VERSION
from msd.ml.evaluation import Metrics
from msd.ml.features import FEATURE_NAMES, FEATURE_VERSION, LABELS
from msd.ml.gate import promotion_decision
from msd.ml.models import LogisticModel
from msd.ml.roundtrips import FifoBook, RoundTripTally
from msd.ml.training import (MODEL_TYPE, Candidate, TrainingParams, candidate_report,
                             flatten_metrics, score)
from msd.store.artifacts import load_version, remove_version_files, version_dir, write_version
from msd.store.datasets import iter_fills
from msd.store.db import Database
from msd.store.versions import (NewVersion, VersionInfo, activate, insert_version,
                                record_quality_metrics, record_training_outcome,
                                reserve_version)

MODEL_CLASS = "LogisticModel"


@dataclass(frozen=True)
class PublishPlan:
    strategy: str
    candidate: Candidate
    dataset: Dataset
    active: VersionInfo | None
    active_metrics: Metrics | None      # the active version scored on the candidate's window
    active_note: str | None             # why the active version could not be scored
    realised: Mapping[str, float]       # FIFO round-trip figures of the strategy's fills
    dataset_detail: Mapping[str, Any]
    params: TrainingParams
    request_id: str | None
    run_id: int | None


def load_model(info: VersionInfo) -> LogisticModel:
    """A version's model after checking its hashes and that it uses today's features.

    Raises TamperedArtifact (an MsdError), MsdError for other features, OSError for missing
    files and ValueError for malformed arrays; the caller decides what refusal means.
    """
    arrays, manifest = load_version(info.path, info.sha256, info.manifest_sha256)
    if manifest.get("feature_names") != list(FEATURE_NAMES):
        raise MsdError(f"v{info.version}: feature names {manifest.get('feature_names')} differ from "
                       f"{list(FEATURE_NAMES)}")
    return LogisticModel.from_arrays(arrays)


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


def realised_figures(db: Database, strategy: str, beat: Callable[[], None]) -> dict[str, float]:
    """FIFO round trips over all of the strategy's fills, streamed (fees included)."""
    book, tally = FifoBook(), RoundTripTally()
    with db.transaction() as conn:
        for count, fill in enumerate(iter_fills(conn, strategy), 1):
            tally.add(book.add(fill))
            if count % 100_000 == 0:
                beat()
    return tally.summary()


def publish_version(db: Database, plan: PublishPlan) -> dict[str, Any]:
    candidate, params = plan.candidate, plan.params
    n_val = int(candidate.val_idx.size)
    decision = promotion_decision(candidate.validation, candidate.baselines, plan.active_metrics,
                                  n_val, params.gate())
    reasons = list(decision.reasons) + ([plan.active_note] if plan.active_note else [])
    figures = _validation_figures(plan)
    report = {**candidate_report(candidate), "realised": dict(plan.realised),
              "active_on_same_window": _asdict_or_none(plan.active_metrics)}
    with db.transaction() as conn:
        version = reserve_version(conn, plan.strategy)
        target = version_dir(params.models_dir, plan.strategy, version)
        # No row has this number (we hold the lock), so a directory there is an orphan of a
        # run that died before its commit.
        remove_version_files(params.models_dir, plan.strategy, version)
        ref = write_version(params.models_dir, plan.strategy, version,
                            candidate.model.to_arrays(),
                            _manifest(plan, version, report, decision.promote, reasons))
        version_id = insert_version(conn, _new_version(plan, version, str(target.resolve()), ref,
                                                        report, decision.promote, reasons))
        record_quality_metrics(conn, version_id, figures, "validation", n_val)
        record_quality_metrics(conn, version_id, flatten_metrics(candidate.training),
                               "training", int(candidate.train_idx.size))
        record_quality_metrics(conn, version_id, plan.realised, "realised",
                               int(plan.realised.get("round_trips", 0)))
        if decision.promote:
            activate(conn, plan.strategy, version,
                     reason=f"v{version} passed the promotion gate",
                     evidence={"metrics": figures, "checks": reasons})
        record_training_outcome(conn, plan.strategy, "trained",
                                "promoted" if decision.promote else "not promoted",
                                request_id=plan.request_id, model_version=version,
                                detail={**plan.dataset_detail, "checks": reasons},
                                training_run_id=plan.run_id)
    return {"outcome": "trained", "version": version, "promoted": decision.promote,
            "gate_reasons": reasons, "metrics": figures, **plan.dataset_detail}


def _validation_figures(plan: PublishPlan) -> dict[str, float]:
    """Candidate figures plus every baseline's (and the incumbent's) under a prefix."""
    figures = flatten_metrics(plan.candidate.validation)
    for name, baseline in plan.candidate.baselines.items():
        figures.update(flatten_metrics(baseline, f"{name}."))
    if plan.active_metrics is not None:
        figures.update(flatten_metrics(plan.active_metrics, "active."))
    return figures


def _manifest(plan: PublishPlan, version: int, report: dict, promoted: bool,
              reasons: list[str]) -> dict[str, Any]:
    return {"strategy_id": plan.strategy, "version": version, "model_type": MODEL_TYPE,
            "model_class": MODEL_CLASS, "array_format_version": FORMAT_VERSION,
            "feature_version": FEATURE_VERSION, "feature_names": list(FEATURE_NAMES),
            "label_mapping": dict(LABELS), "training_config": plan.params.to_json(),
            "metrics": report, "gate": {"passed": promoted, "checks": reasons},
            "dataset": dict(plan.dataset_detail),
            "created_at": datetime.now(timezone.utc).isoformat()}


def _new_version(plan: PublishPlan, version: int, path: str, ref, report: dict,
                 promoted: bool, reasons: list[str]) -> NewVersion:
    stamps = plan.dataset.timestamps[plan.candidate.val_idx]
    return NewVersion(
        strategy_id=plan.strategy, version=version, path=path, sha256=ref.sha256,
        manifest_sha256=ref.manifest_sha256, model_type=MODEL_TYPE,
        feature_version=FEATURE_VERSION, feature_names=list(FEATURE_NAMES),
        label_mapping=dict(LABELS), training_config=plan.params.to_json(), metrics=report,
        promoted_when_trained=promoted, gate_reasons=reasons, labelled_rows=plan.dataset.n,
        validation_from=datetime.fromtimestamp(float(stamps.min()), timezone.utc),
        validation_to=datetime.fromtimestamp(float(stamps.max()), timezone.utc),
        training_run_id=plan.run_id)


def _asdict_or_none(figures: Metrics | None) -> dict | None:
    return None if figures is None else dataclasses.asdict(figures)
