"""The training job end to end on the real server: dataset -> fit -> gate -> version -> mode."""
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from msd.learning.job import train_strategies
from msd.store.artifacts import MODEL_FILE, load_version
from msd.store.versions import get_active, list_versions, training_outcomes
from tests import learning_data
from tests.learning_data import START, insert, synthetic

pytestmark = pytest.mark.integration

STRATEGY = "momentum_v1"


class Ctx(SimpleNamespace):
    """What the job uses of a RoleContext: a config (here without training params) and beat."""

    def __init__(self):
        super().__init__(config=None, beats=0)

    def beat(self):
        self.beats += 1


def seed(db, n=1200, **kwargs):
    with db.transaction() as conn:
        insert(conn, synthetic(n, **kwargs))


def train(db, tmp_path, **overrides):
    request = {"id": "req-1", "source": "test", "reason": "test",
               "params": learning_data.params(models_dir=str(tmp_path), **overrides)}
    ctx = Ctx()
    result = train_strategies(ctx, db, request)
    assert ctx.beats > 0
    return result["strategies"][STRATEGY]


def transitions(db):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""SELECT from_mode, to_mode, event, model_version, reason, parameters
                         FROM msd.mode_transitions WHERE strategy_id = %s ORDER BY id""",
                    (STRATEGY,))
        return cur.fetchall()


def test_predictable_outcomes_are_promoted_from_warmup_to_model(db, tmp_path):
    seed(db, strength=4.0, seed=1)

    summary = train(db, tmp_path)

    assert (summary["outcome"], summary["version"], summary["promoted"]) == ("trained", 1, True)
    assert summary["metrics"]["accuracy"] >= 0.75
    [(from_mode, to_mode, event, version, reason, parameters)] = transitions(db)
    assert (from_mode, to_mode, event, version) == ("warmup", "model", "activation", 1)
    assert parameters["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    assert parameters["metrics"]["majority.accuracy"] < summary["metrics"]["accuracy"]
    with db.transaction() as conn:
        active = get_active(conn, STRATEGY)
    assert active.version == 1 and active.promoted_when_trained
    assert active.quality["validation"]["naive.accuracy"] == summary["metrics"]["naive.accuracy"]
    assert {"accuracy", "balanced_accuracy", "base_rate", "coverage", "n_calls", "precision",
            "net_return_mean", "net_return_lower", "net_return_upper", "log_loss", "brier",
            "calibration_error"} <= set(active.quality["validation"])
    arrays, manifest = load_version(active.path, active.sha256, active.manifest_sha256)
    assert manifest["label_mapping"] == {"sell": 0, "buy": 1, "neither": 2}
    assert manifest["feature_version"] == active.feature_version == "1"
    assert summary["metrics"]["net_return_lower"] > 0
    assert manifest["feature_names"] == active.feature_names


def test_noise_outcomes_write_a_version_that_is_not_promoted(db, tmp_path):
    seed(db, strength=0.0, seed=2)

    summary = train(db, tmp_path)

    assert (summary["outcome"], summary["version"], summary["promoted"]) == ("trained", 1, False)
    assert any(r.startswith("fail: accuracy") for r in summary["gate_reasons"])
    assert transitions(db) == []
    with db.transaction() as conn:
        [version] = list_versions(conn, STRATEGY)
        [outcome] = training_outcomes(conn, STRATEGY)
    assert not version.is_active and version.gate_reasons == summary["gate_reasons"]
    assert (outcome["outcome"], outcome["reason"], outcome["model_version"]) == (
        "trained", "not promoted", 1)


def test_constant_predictor_never_passes_gate(db, tmp_path):
    # Regression: a plain 75% accuracy gate was passed by a constant predictor on imbalanced
    # labels. Here the market nearly always rises and the features carry no information.
    seed(db, strength=0.0, drift=2.0, seed=3)

    summary = train(db, tmp_path)

    metrics = summary["metrics"]
    assert metrics["majority.accuracy"] >= 0.75        # the old gate alone would have passed
    assert summary["promoted"] is False
    assert any(r.startswith("fail:") and "window base rate" in r for r in summary["gate_reasons"])
    assert transitions(db) == []


def test_shuffled_labels_drop_to_baseline(db, tmp_path):
    # Leakage guard: the same snapshots with outcomes shuffled between decisions. Anything the
    # pipeline learns now came through a leak (a feature that sees the outcome, or validation
    # rows in training), so the candidate must score no better than the majority baseline.
    seed(db, strength=4.0, seed=1, shuffle_outcomes=True)

    summary = train(db, tmp_path)

    metrics = summary["metrics"]
    assert metrics["accuracy"] <= metrics["majority.accuracy"] + 0.06
    assert metrics["accuracy"] < 0.6
    assert summary["promoted"] is False


def test_data_drought_skips_with_reason(db, tmp_path):
    seed(db, strength=4.0, seed=1)
    first = train(db, tmp_path)
    later = START + timedelta(days=3)
    seed(db, n=50, strength=4.0, seed=4, start=later)

    summary = train(db, tmp_path)

    assert first["version"] == 1
    assert summary["outcome"] == "skipped"
    assert summary["reason"] == ("data drought: 50 new usable labelled rows since v1; "
                                 "minimum 200")
    with db.transaction() as conn:
        assert [v.version for v in list_versions(conn, STRATEGY)] == [1]
        outcomes = training_outcomes(conn, STRATEGY)
    assert [(o["outcome"], o["reason"]) for o in outcomes][-1] == ("skipped", summary["reason"])


def test_candidate_must_beat_the_active_version_on_the_same_window(db, tmp_path):
    seed(db, strength=4.0, seed=1)
    train(db, tmp_path)
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))

    summary = train(db, tmp_path, min_margin_over_active=0.2)

    assert (summary["version"], summary["promoted"]) == (2, False)
    assert any(r.startswith("fail:") and "active version" in r for r in summary["gate_reasons"])
    # the incumbent was re-scored on the candidate's own validation window
    assert summary["metrics"]["active.n"] == summary["metrics"]["n"]
    with db.transaction() as conn:
        assert get_active(conn, STRATEGY).version == 1


def test_newer_better_version_replaces_the_active_one_model_to_model(db, tmp_path):
    # v1 learned from outcomes shuffled between decisions (nothing to learn) and an operator
    # activated it anyway; v2, trained on honest outcomes, beats it on v2's own window.
    from msd.store.versions import rollback
    seed(db, strength=4.0, seed=1, shuffle_outcomes=True)
    assert train(db, tmp_path)["promoted"] is False
    with db.transaction() as conn:
        rollback(conn, STRATEGY, 1, reason="operator", now=datetime.now(timezone.utc))
    seed(db, n=3000, strength=4.0, seed=5, start=START + timedelta(days=3))

    summary = train(db, tmp_path, min_margin_over_active=0.05)

    assert summary["promoted"] is True, summary["gate_reasons"]
    assert summary["metrics"]["accuracy"] >= summary["metrics"]["active.accuracy"] + 0.05
    assert [t[:4] for t in transitions(db)] == [("warmup", "model", "rollback", 1),
                                                 ("model", "model", "activation", 2)]
    assert transitions(db)[1][5]["previous_version"] == 1


def test_tampered_active_version_is_reported_and_not_loaded(db, tmp_path):
    seed(db, strength=4.0, seed=1)
    train(db, tmp_path)
    npz = tmp_path / STRATEGY / "v1" / MODEL_FILE
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))

    summary = train(db, tmp_path)

    [note] = [r for r in summary["gate_reasons"] if r.startswith("active v1 not comparable")]
    assert f"artifact {npz} refused: sha256" in note
    # judged against the baselines alone, and the unusable incumbent is not compared
    assert "active.accuracy" not in summary["metrics"]


def test_exit_engine_is_not_trainable(db, tmp_path):
    """Regression (issue 9, defect 5): exit-engine counted as a trainable strategy, and its data
    threshold cancelled real training."""
    from msd.store.datasets import labelled_since_last_training, trainable_strategies
    data = synthetic(300, strength=4.0, seed=8, strategy="exit-engine", order_prefix="exits")
    exits = learning_data.Synthetic([row[:6] + ("exit",) + row[7:] for row in data.signals],
                                    data.executions, [], data.sides, data.returns)
    with db.transaction() as conn:
        insert(conn, exits)
    seed(db, strength=4.0, seed=1)
    with db.transaction() as conn:
        assert trainable_strategies(conn) == [STRATEGY]
        assert set(labelled_since_last_training(conn, learning_data.HORIZON_S, datetime.now(timezone.utc))) == {STRATEGY}
    request = {"id": "r", "params": learning_data.params(models_dir=str(tmp_path))}
    assert set(train_strategies(Ctx(), db, request)["strategies"]) == {STRATEGY}
    skipped = train_strategies(Ctx(), db, {**request, "strategy": "exit-engine"})["strategies"]["exit-engine"]
    assert skipped["outcome"] == "skipped" and skipped["reason"].startswith("not trainable")


def test_feature_version_is_checked_at_load(db, tmp_path):
    """Regression (issue 9): load_model checked feature names but not FEATURE_VERSION."""
    from msd.errors import MsdError
    from msd.learning.versions import load_model
    seed(db, strength=4.0, seed=1)
    train(db, tmp_path)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("UPDATE msd.model_versions SET feature_version = '0' WHERE strategy_id = %s", (STRATEGY,))
    with db.transaction() as conn:
        info = get_active(conn, STRATEGY)
    with pytest.raises(MsdError, match="feature version"):
        load_model(info)


def test_a_version_retired_for_degradation_is_never_a_fall_back(db, tmp_path):
    """Regression (issue 9, defect 5): fall-back could return to a version known to be degraded,
    and after a restart flip between two degraded versions."""
    from msd.store.versions import activate, last_good, retire
    seed(db, strength=4.0, seed=1)
    train(db, tmp_path)
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))
    train(db, tmp_path, min_margin_over_active=0.0, min_accuracy=0.5)
    with db.transaction() as conn:
        now = datetime.now(timezone.utc)
        activate(conn, STRATEGY, 2, reason="test", now=now, evidence={})
        assert last_good(conn, STRATEGY) == 1
        retire(conn, STRATEGY, 1, "live quality degraded", now=now)
        assert last_good(conn, STRATEGY) is None          # v1 stays retired, even after a restart
        retire(conn, STRATEGY, 2, "live quality degraded", now=now)
        assert last_good(conn, STRATEGY) is None
