"""The live online learner: prequential updates, persisted across restarts, never learning twice."""
from datetime import datetime, timedelta, timezone

import numpy as np

from msd.ml.dataset import Outcome
from msd.ml.features import FEATURE_NAMES
from msd.ml.synthetic import make_dataset
from msd.roles.online import OnlineTracker
from tests.learning_data import snapshot_of

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def outcomes(n=400, seed=3):
    data = make_dataset(n, strength=4.0, drift=0.0, seed=seed, start=T0.timestamp(), step=60.0)
    moves = np.sign(data.returns) * np.maximum(np.abs(data.returns), 0.004)
    return [Outcome(f"s{i}", "BTCUSDT", "buy", T0 + timedelta(minutes=i), snapshot_of(data.X[i], 100.0),
                    100.0, 100.0 * (1 + float(moves[i]))) for i in range(n)]


def test_predicts_then_learns_and_a_restart_remembers(tmp_path):
    rows = outcomes()
    tracker = OnlineTracker(str(tmp_path))
    assert tracker.update("s1", rows[:300], 0.002) == 300
    first = tracker.record("s1")
    assert first.seen == 300 and first.correct / first.seen > 0.7        # it learns the signal
    restarted = OnlineTracker(str(tmp_path))
    again = restarted.record("s1")
    assert (again.seen, again.correct, again.watermark) == (first.seen, first.correct, first.watermark)
    x = np.ones(len(FEATURE_NAMES))
    assert again.learner.predict_proba_one(x) == first.learner.predict_proba_one(x)
    assert restarted.update("s1", rows[:300], 0.002) == 0               # nothing learned twice
    assert restarted.update("s1", rows, 0.002) == 100
