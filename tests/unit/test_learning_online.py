"""The prequential record and the online challenger (pure parts): predict-then-learn, late
labels, no double learning, the same gate as batch training, restore after a restart."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from msd.learning.online import Challenger
from msd.learning.outcomes import Decision, Labelled, outcome_label
from msd.ml.calibration import CalibratedModel
from msd.ml.features import BUY, NEITHER, SELL
from msd.ml.models import LogisticModel
from msd.ml.params import OnlineParams, TrainingParams
from msd.ml.prequential import PrequentialRecord
from msd.ml.synthetic import make_dataset

T0 = datetime(2025, 11, 20, tzinfo=timezone.utc)
PARAMS = TrainingParams(horizon_s=900, max_bar_lag_s=120, min_samples=150, min_emitted_calls=30,
                        confidence_threshold=0.5)
ONLINE = OnlineParams(window=300, learning_rate=0.1)


def test_record_keeps_the_newest_window_and_refuses_other_shapes():
    record = PrequentialRecord(3, ("a", "b"))
    for i in range(5):
        record.add(i % 3, 0.01 * i, 0.002, float(i), [i, i], {"a": [0.2, 0.3, 0.5], "b": [1 / 3] * 3})
    data = record.arrays()
    assert len(record) == 3 and data["y"].tolist() == [2, 0, 1] and data["X"][:, 0].tolist() == [2, 3, 4]
    assert data["a"].shape == (3, 3)
    with pytest.raises(ValueError, match="contenders"):
        record.add(0, 0, 0, 0, [0, 0], {"a": [1, 0, 0]})
    with pytest.raises(ValueError, match="x: shape"):
        record.add(0, 0, 0, 0, [0, 0, 0], {"a": [1, 0, 0], "b": [1, 0, 0]})
    copy = PrequentialRecord(3, ("a", "b"))
    copy.restore(record.to_arrays())
    np.testing.assert_array_equal(copy.arrays()["a"], data["a"])


def _stream(n, strength, seed, start=0):
    data = make_dataset(n, strength=strength, seed=seed)
    costs = np.full(n, 0.002)
    labels = [outcome_label(m, c) for m, c in zip(data.returns, costs)]
    rows = []
    for i in range(n):
        decided = T0 + timedelta(minutes=start + i)
        decision = Decision(f"d{seed}-{i}", "s1", "BTCUSDT", "buy", decided, {}, 10.0, "model",
                            "v1", 0.6, 1.0)
        rows.append((Labelled(decision, float(data.returns[i]), 0.002, labels[i]), data.X[i]))
    return rows, data


def _incumbent(seed=99):
    """An active version fitted on noise: it knows nothing."""
    rows, data = _stream(600, 0.0, seed)
    y = np.array([row.label for row, _ in rows])
    return CalibratedModel(LogisticModel().fit(data.X, y))


def _run(strength, seed):
    incumbent = _incumbent()
    challenger = Challenger.warm_start("s1", 1, incumbent, ONLINE)
    rows, _ = _stream(1200, strength, seed)
    for row, x in rows:
        challenger.learn(row, x, incumbent)
    return challenger, challenger.verdict(PARAMS)


def test_challenger_is_promoted_on_a_learnable_stream():
    challenger, verdict = _run(4.0, 1)
    assert verdict.decision.promote, verdict.decision.reasons
    assert verdict.challenger.n == verdict.incumbent.n == 300 - 75
    assert verdict.challenger.accuracy >= verdict.incumbent.accuracy + PARAMS.min_margin_over_active
    assert challenger.seen == 1200 and len(challenger.record) == 300


def test_challenger_is_never_promoted_on_noise():
    for seed in (2, 3, 4):
        _, verdict = _run(0.0, seed)
        assert not verdict.decision.promote


def test_challenger_scores_each_outcome_before_learning_it_and_never_twice():
    incumbent = _incumbent()
    challenger = Challenger.warm_start("s1", 1, incumbent, ONLINE)
    (row, x) = _stream(10, 4.0, 5)[0][0]
    before = challenger.learner.predict_proba(x.reshape(1, -1))[0]
    assert challenger.learn(row, x, incumbent) is True
    np.testing.assert_array_equal(challenger.record.arrays()["challenger"][0], before)
    assert challenger.learn(row, x, incumbent) is False and len(challenger.record) == 1


def test_online_learner_learns_late_labels():
    """Regression (issue 9): the learner kept a decided_at watermark and skipped for good an
    outcome whose label arrived after a newer one's."""
    incumbent = _incumbent()
    challenger = Challenger.warm_start("s1", 1, incumbent, ONLINE)
    rows, _ = _stream(3, 2.0, 6)
    challenger.learn(*rows[2][:2], incumbent)        # the newest decision is labelled first
    assert challenger.learn(*rows[0][:2], incumbent) is True   # an older one labelled later
    assert challenger.seen == 2


def test_challenger_state_survives_a_restart():
    challenger, _ = _run(2.0, 7)
    restored = Challenger.restore(challenger.state_arrays(), challenger.state_meta(), ONLINE)
    x = np.zeros((1, 9))
    np.testing.assert_array_equal(restored.learner.predict_proba(x), challenger.learner.predict_proba(x))
    assert restored.learned == challenger.learned and len(restored.record) == len(challenger.record)
    challenger.forget_before((T0 + timedelta(minutes=1190)).timestamp())
    assert len(challenger.learned) == 10
