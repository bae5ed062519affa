"""`msd-ctl versions | compare | rollback` against the real PostgreSQL, run in-process.

Versions are written the way the trainer writes them (number, artifact files, row, quality
metrics, activation of the promoted ones) with a real fitted model's arrays. No daemon runs:
the control socket of the config file does not exist, except where a stand-in answers on it.
"""
import json
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from msd import ctl
from msd.learning.versions import MODEL_CLASS
from msd.ml.calibration import CalibratedModel
from msd.ml.features import FEATURE_NAMES, FEATURE_VERSION, LABELS
from msd.ml.synthetic import make_dataset
from tests import learning_data
from msd.store.artifacts import MODEL_FILE, write_version
from msd.store.versions import (NewVersion, activate, get_active, insert_version,
                                record_quality_metrics, reserve_version)
from msd.supervisor import protocol

pytestmark = pytest.mark.integration

STRATEGY = "momentum_v1"
N_VERSIONS = 120
METRICS = ("accuracy", "balanced_accuracy", "log_loss", "brier", "majority.accuracy",
           "naive.accuracy")


def fitted(strength, seed):
    data = make_dataset(400, strength=strength, seed=seed)
    y = (data.returns > 0).astype(int)
    return CalibratedModel().fit(data.X, y).to_arrays()


@pytest.fixture(scope="module")
def arrays():
    return fitted(2.0, 3)


@pytest.fixture
def config(fresh_pg_dsn, tmp_path) -> Path:
    path = tmp_path / "model-service.yaml"
    path.write_text(yaml.safe_dump({"control": {"socket": str(tmp_path / "msd.sock")},
                                    "database": {"dsn": fresh_pg_dsn}}))
    return path


def figures(version: int) -> dict[str, float]:
    accuracy = 0.70 + version / 1000
    return {"accuracy": accuracy, "balanced_accuracy": accuracy - 0.01,
            "log_loss": 0.60 - version / 2000, "brier": 0.20 - version / 5000,
            "majority.accuracy": 0.52, "naive.accuracy": 0.55, "n": 250.0}


def publish(db, models_dir: Path, arrays, *, promoted: bool,
            feature_names=tuple(FEATURE_NAMES), window=(None, None)) -> int:
    """One version as msd.learning.promotion.publish_version writes it, in one transaction."""
    with db.transaction() as conn:
        version = reserve_version(conn, STRATEGY)
        ref = write_version(models_dir, STRATEGY, version, arrays,
                            {"strategy_id": STRATEGY, "version": version, "model_class": MODEL_CLASS,
                             "feature_version": FEATURE_VERSION, "label_mapping": dict(LABELS),
                             "feature_names": list(feature_names)})
        reasons = ["pass: accuracy vs minimum 0.75"] if promoted else ["fail: accuracy vs minimum 0.75"]
        version_id = insert_version(conn, NewVersion(
            STRATEGY, version, str(ref.path.resolve()), ref.sha256, ref.manifest_sha256,
            "logistic_regression", FEATURE_VERSION, list(FEATURE_NAMES), dict(LABELS), {"horizon_s": 900, "round_trip_fee_pct": 0.2},
            {"validation": figures(version)}, promoted, reasons, 1000 + version, *window))
        record_quality_metrics(conn, version_id, figures(version), "validation", 250)
        if promoted:
            activate(conn, STRATEGY, version, reason=f"v{version} passed the promotion gate", now=datetime.now(timezone.utc),
                     evidence={"metrics": figures(version)})
    return version


@pytest.fixture
def versions(db, tmp_path, arrays) -> Path:
    models_dir = tmp_path / "models"
    for i in range(1, N_VERSIONS + 1):
        publish(db, models_dir, arrays, promoted=i % 3 != 2)   # v120 ends up active
    return models_dir


def run_ctl(capsys, *argv) -> tuple[int, str, str]:
    code = ctl.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def rollback_rows(db) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("""SELECT event, model_version, reason, parameters FROM msd.mode_transitions
                        WHERE strategy_id = %s AND event = 'rollback' ORDER BY id""", (STRATEGY,))
        return cur.fetchall()


def active_version(db) -> int | None:
    with db.transaction() as conn:
        active = get_active(conn, STRATEGY)
    return active.version if active else None


def test_versions_json_lists_all_120_with_complete_metadata(capsys, config, versions):
    code, out, err = run_ctl(capsys, "-c", config, "versions", "--json", "--strategy", STRATEGY)

    assert (code, err) == (0, "")
    listed = json.loads(out)["strategies"][STRATEGY]
    assert [v["version"] for v in listed] == list(range(1, N_VERSIONS + 1))
    assert [v["version"] for v in listed if v["is_active"]] == [N_VERSIONS]
    for v in listed:
        assert v["created_at"] and v["labelled_rows"] == 1000 + v["version"]
        assert set(METRICS) <= set(v["quality"]["validation"])
        assert v["quality"]["validation"]["accuracy"] == pytest.approx(figures(v["version"])["accuracy"])
        assert v["promoted_when_trained"] == (v["version"] % 3 != 2) and v["gate_reasons"]
        assert v["files"] == "present" and len(v["sha256"]) == 64 and v["manifest_sha256"]
        assert v["feature_names"] == list(FEATURE_NAMES) and v["label_mapping"] == dict(LABELS)


def test_versions_table_without_strategy_finds_the_strategy(capsys, config, versions):
    code, out, _ = run_ctl(capsys, "-c", config, "versions")

    assert code == 0
    assert f"strategy {STRATEGY}: {N_VERSIONS} version(s), active v{N_VERSIONS}" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("v120 "))
    assert " * " in row and "0.8200" in row and "present" in row and "pass: accuracy" in row


def test_compare_rescores_both_versions_on_one_window(capsys, config, db, tmp_path):
    """Regression (issue 9): compare subtracted stored figures from different windows."""
    data = learning_data.synthetic(600, strength=4.0, seed=1)
    with db.transaction() as conn:
        learning_data.insert(conn, data)
    first, last = data.signals[300][9], data.signals[-1][9]
    models_dir = tmp_path / "models"
    publish(db, models_dir, fitted(0.0, 5), promoted=True)                 # learned nothing
    publish(db, models_dir, fitted(4.0, 6), promoted=True, window=(first, last))

    code, out, _ = run_ctl(capsys, "-c", config, "--json", "compare", "--strategy", STRATEGY, "v1", "2")

    assert code == 0
    result = json.loads(out)
    assert result["window"]["of_version"] == 2 and result["window"]["decisions"] == 300
    a, b = result["a"]["metrics"], result["b"]["metrics"]
    assert a["n"] == b["n"] == 300 and a["base_rate"] == b["base_rate"]     # the same decisions
    assert result["difference"]["accuracy"] == pytest.approx(b["accuracy"] - a["accuracy"])
    assert b["accuracy"] > a["accuracy"] + 0.2
    code, out, _ = run_ctl(capsys, "-c", config, "compare", "--strategy", STRATEGY, "v1", "2")
    assert code == 0 and "rescored on the same 300 decisions" in out
    code, _, err = run_ctl(capsys, "-c", config, "compare", "--strategy", STRATEGY, "--on", "1", "v1", "2")
    assert code == 1 and "records no validation window" in err


def test_compare_names_an_unknown_version(capsys, config, versions):
    code, _, err = run_ctl(capsys, "-c", config, "compare", "--strategy", STRATEGY, "v3", "v121")

    assert code == 1 and "v121" in err and STRATEGY in err


def test_rollback_switches_at_once_and_audits_it(capsys, config, versions, db):
    code, out, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "v3",
                             "--reason", "v120 degraded live")

    assert (code, err) == (0, "")
    assert active_version(db) == 3
    [(event, version, reason, parameters)] = rollback_rows(db)
    assert (event, version) == ("rollback", 3) and "v120 degraded live" in reason
    assert parameters["previous_version"] == N_VERSIONS
    assert "msd is not running; the database change is done" in out


def test_rollback_to_a_tampered_artifact_is_refused(capsys, config, versions, db):
    model = versions / STRATEGY / "v5" / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))

    code, out, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "v5")

    assert code == 1 and out == ""
    assert "refused" in err and str(model.resolve()) in err and "nothing changed" in err
    assert active_version(db) == N_VERSIONS and rollback_rows(db) == []


def test_rollback_to_a_missing_artifact_is_refused(capsys, config, versions, db):
    (versions / STRATEGY / "v7" / MODEL_FILE).unlink()

    code, _, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "7")

    assert code == 1 and "refused" in err and MODEL_FILE in err
    assert active_version(db) == N_VERSIONS and rollback_rows(db) == []


def test_rollback_to_a_version_the_signaller_cannot_serve_is_refused(capsys, config, versions,
                                                                     db, arrays):
    other = publish(db, versions, arrays, promoted=False, feature_names=("spread_pct", "rsi"))

    code, _, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", other)

    assert code == 1 and "refused" in err and "feature names" in err
    assert active_version(db) == N_VERSIONS and rollback_rows(db) == []


def test_rollback_to_a_version_of_another_label_definition_is_refused(capsys, config, versions, db):
    """Review finding 11: a version trained for another horizon was served as if its confidence
    answered today's question."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("UPDATE msd.model_versions SET training_config = '{\"horizon_s\": 600, "
                    "\"round_trip_fee_pct\": 0.2}' WHERE version = 1")
    code, _, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "1")
    assert code == 1 and "label definition differs: horizon_s 600" in err
    assert active_version(db) == N_VERSIONS and rollback_rows(db) == []


class FakeDaemon:
    """Answers one control request on the config's socket the way the arbiter does."""

    def __init__(self, path: Path, reply: dict):
        self.requests: list[dict] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            self.requests.append(protocol.read_frame(conn))
            protocol.write_frame(conn, self.reply)

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()


def test_rollback_tells_a_running_daemon(capsys, config, versions, db, tmp_path):
    daemon = FakeDaemon(tmp_path / "msd.sock", protocol.ok({"notified": True}))
    try:
        code, out, _ = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "v4")
    finally:
        daemon.close()

    assert code == 0 and "signaller switches to v4 now" in out
    assert daemon.requests == [protocol.request("models_changed", strategy=STRATEGY,
                                                reason="rollback to v4")]
    assert active_version(db) == 4


def test_rollback_reports_a_daemon_that_refuses(capsys, config, versions, db, tmp_path):
    daemon = FakeDaemon(tmp_path / "msd.sock", protocol.error("unknown command 'models_changed'"))
    try:
        code, _, err = run_ctl(capsys, "-c", config, "rollback", "--strategy", STRATEGY, "--to", "v4")
    finally:
        daemon.close()

    assert code == 1 and "database change is done" in err and "unknown command" in err
    assert active_version(db) == 4


def test_unreachable_database_names_the_host_not_the_password(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MSD_TEST_DB_PASSWORD", "s3cret-pw")
    path = tmp_path / "model-service.yaml"
    path.write_text(yaml.safe_dump({"control": {"socket": str(tmp_path / "msd.sock")},
                                    "database": {"dsn": "postgresql://msd@127.0.0.1:1/msd",
                                                 "password_env": "MSD_TEST_DB_PASSWORD",
                                                 "connect_timeout_s": 2}}))

    code, out, err = run_ctl(capsys, "-c", path, "versions")

    assert code == 1 and out == ""
    assert "127.0.0.1:1/msd" in err and "s3cret-pw" not in err


def test_compare_scored_a_version_on_its_own_training_data(capsys, config, db, tmp_path):
    """Review finding 8: compare --on an older version's window scored the newer version on
    decisions it had learned (in-sample). Such a window is refused; the default is the newer
    version's window, whatever order the versions are named in."""
    data = learning_data.synthetic(600, strength=4.0, seed=1)
    with db.transaction() as conn:
        learning_data.insert(conn, data)
    at = lambda i: data.signals[i][9]  # noqa: E731
    models_dir = tmp_path / "models"
    publish(db, models_dir, fitted(0.0, 5), promoted=True, window=(at(100), at(200)))
    publish(db, models_dir, fitted(4.0, 6), promoted=True, window=(at(300), at(599)))

    code, _, err = run_ctl(capsys, "-c", config, "compare", "--strategy", STRATEGY, "--on", "1", "v1", "v2")
    assert code == 1 and "overlaps v2's training" in err and "--on 2" in err
    code, out, _ = run_ctl(capsys, "-c", config, "--json", "compare", "--strategy", STRATEGY, "v2", "v1")
    assert code == 0 and json.loads(out)["window"]["of_version"] == 2
