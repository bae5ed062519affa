"""Version metadata, activation, rollback, retention and the audit trail on the real server."""
from datetime import datetime, timezone

import numpy as np
import pytest

from msd.ml.features import FEATURE_NAMES, LABELS
from msd.store.artifacts import (prune_plan, remove_version_files, stored_versions,
                                 write_version)
from msd.store.versions import (NewVersion, VersionError, activate, current_mode,
                                deactivate, get_active, insert_version, last_good,
                                list_versions, mark_files_pruned, record_quality_metrics,
                                reserve_version, rollback)

pytestmark = pytest.mark.integration

STRATEGY = "momentum_v1"
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)       # the callers' clock


def create(db, models_dir, *, accuracy=0.8, promoted=True) -> int:
    """One version through the real path: number, files, row and quality metrics."""
    with db.transaction() as conn:
        version = reserve_version(conn, STRATEGY)
        ref = write_version(models_dir, STRATEGY, version,
                            {"coef": np.full(len(FEATURE_NAMES), accuracy)}, {"v": version})
        version_id = insert_version(conn, NewVersion(
            STRATEGY, version, str(ref.path), ref.sha256, ref.manifest_sha256, "logistic", "1",
            list(FEATURE_NAMES), dict(LABELS), {"horizon_s": 900}, {"accuracy": accuracy},
            promoted, ["pass: everything"] if promoted else ["fail: accuracy"], 1000 + version))
        record_quality_metrics(conn, version_id, {"accuracy": accuracy, "majority.accuracy": 0.5},
                               "validation", 250)
    return version


def test_120_versions_are_listed_with_complete_metadata(db, tmp_path):
    for i in range(120):
        create(db, tmp_path, accuracy=0.7 + i / 1000)

    with db.transaction() as conn:
        versions = list_versions(conn, STRATEGY)

    assert [v.version for v in versions] == list(range(1, 121))
    for v in versions:
        assert v.path.endswith(f"/{STRATEGY}/v{v.version}") and len(v.sha256) == 64
        assert v.manifest_sha256 and v.feature_names == list(FEATURE_NAMES)
        assert v.label_mapping == {"sell": 0, "buy": 1, "neither": 2} and v.training_config == {"horizon_s": 900}
        assert v.created_at is not None and v.labelled_rows == 1000 + v.version
        assert v.quality["validation"] == {"accuracy": pytest.approx(0.7 + (v.version - 1) / 1000),
                                           "majority.accuracy": 0.5}


def transitions(db):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""SELECT from_mode, to_mode, event, model_version, reason, parameters
                         FROM msd.mode_transitions ORDER BY id""")
        return cur.fetchall()


def test_rollback_switches_the_active_version_and_records_a_transition(db, tmp_path):
    for _ in range(3):
        create(db, tmp_path)
    with db.transaction() as conn:
        activate(conn, STRATEGY, 1, reason="gate passed", now=NOW, evidence={"metrics": {"accuracy": 0.8}})
        activate(conn, STRATEGY, 3, reason="gate passed", now=NOW, evidence={"metrics": {"accuracy": 0.8}})
    with db.transaction() as conn:
        rollback(conn, STRATEGY, 1, reason="operator: v3 degraded live", now=NOW)
        active = get_active(conn, STRATEGY)
        mode = current_mode(conn, STRATEGY)

    assert (active.version, mode) == (1, "model")
    assert [t[:4] for t in transitions(db)] == [
        ("warmup", "model", "activation", 1), ("model", "model", "activation", 3),
        ("model", "model", "rollback", 1)]
    *_, (_, _, _, _, reason, parameters) = transitions(db)
    assert reason == "operator: v3 degraded live"
    assert parameters["previous_version"] == 3
    assert parameters["metrics"] == {"accuracy": 0.8, "majority.accuracy": 0.5}


def test_deactivation_returns_the_strategy_to_warmup(db, tmp_path):
    create(db, tmp_path)
    with db.transaction() as conn:
        activate(conn, STRATEGY, 1, reason="gate passed", now=NOW, evidence={})
        deactivate(conn, STRATEGY, reason="live accuracy 0.52 below 0.75", now=NOW,
                   evidence={"live_accuracy": 0.52})
        assert get_active(conn, STRATEGY) is None and current_mode(conn, STRATEGY) == "warmup"
    assert transitions(db)[-1][:4] == ("model", "warmup", "deactivation", 1)


def test_activating_an_unknown_version_is_refused(db, tmp_path):
    create(db, tmp_path)
    with db.transaction() as conn:
        with pytest.raises(VersionError, match="v7"):
            rollback(conn, STRATEGY, 7, reason="typo", now=NOW)


def test_prune_keeps_the_active_and_the_last_good_version(db, tmp_path):
    for promoted in (True, True, False, True, False, False, False):
        create(db, tmp_path, promoted=promoted)
    with db.transaction() as conn:
        activate(conn, STRATEGY, 2, reason="gate passed", now=NOW, evidence={})
        good = last_good(conn, STRATEGY)

    doomed = prune_plan(tmp_path, STRATEGY, keep=2, protected_versions={2, good})
    with db.transaction() as conn:
        mark_files_pruned(conn, STRATEGY, doomed)
    for version in doomed:
        remove_version_files(tmp_path, STRATEGY, version)

    assert good == 4
    assert stored_versions(tmp_path, STRATEGY) == [2, 4, 6, 7]
    with db.transaction() as conn:
        versions = list_versions(conn, STRATEGY)
        # metadata is never pruned, and a version without files cannot come back
        assert [v.version for v in versions if v.files_pruned_at] == [1, 3, 5]
        assert len(versions) == 7
        with pytest.raises(VersionError, match="pruned"):
            rollback(conn, STRATEGY, 1, reason="too late", now=NOW)


