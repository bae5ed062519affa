"""The training job end to end on the real server: dataset -> fit -> gate -> version -> mode."""
from datetime import timedelta
from types import SimpleNamespace

import pytest

from msd.roles.trainer_jobs import train_strategies
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
    assert {"backtest.sharpe", "backtest.hit_rate", "backtest.turnover", "log_loss", "brier",
            "ece", "balanced_accuracy", "call_precision"} <= set(active.quality["validation"])
    arrays, manifest = load_version(active.path, active.sha256, active.manifest_sha256)
    assert manifest["label_mapping"] == {"sell": 0, "buy": 1}
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
    assert any(r.startswith("fail:") and "baseline majority" in r for r in summary["gate_reasons"])
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
    seed(db, strength=4.0, seed=1)
    train(db, tmp_path)
    seed(db, n=400, strength=4.0, seed=5, start=START + timedelta(days=3))

    summary = train(db, tmp_path, min_margin_over_active=0.0)

    assert summary["promoted"] is True
    assert [t[:4] for t in transitions(db)] == [("warmup", "model", "activation", 1),
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
