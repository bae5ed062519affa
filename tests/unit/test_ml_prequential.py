import numpy as np
import pytest

from msd.ml.features import FEATURE_NAMES
from msd.ml.models import OnlineLogistic
from msd.ml.prequential import Prequential
from msd.ml.synthetic import make_dataset

UP, DOWN = {0: 0.2, 1: 0.8}, {0: 0.7, 1: 0.3}


def test_labels_arrive_later_and_in_any_order():
    tracker = Prequential(window=10)
    tracker.record_prediction("a", UP)
    tracker.record_prediction("b", DOWN)
    tracker.record_prediction("c", UP)
    assert tracker.live_metrics().n == 0 and tracker.live_metrics().accuracy is None
    assert tracker.live_metrics().pending == 3
    assert tracker.record_label("c", 0).signal_id == "c"      # wrong call
    assert tracker.record_label("a", 1).predicted == 1        # right call
    live = tracker.live_metrics()
    assert (live.n, live.accuracy, live.pending) == (2, 0.5, 1)
    assert live.brier == pytest.approx((0.8 ** 2 + 0.2 ** 2) / 2)


def test_unknown_or_repeated_labels_are_not_counted():
    tracker = Prequential()
    tracker.record_prediction("a", UP)
    assert tracker.record_label("never-predicted", 1) is None
    assert tracker.record_label("a", 1) is not None
    assert tracker.record_label("a", 1) is None  # redelivered outcome
    assert tracker.live_metrics().n == 1


def test_accuracy_rolls_over_the_last_window():
    tracker = Prequential(window=3)
    for i, label in enumerate([0, 0, 0, 1, 1, 1]):  # always predicts up
        tracker.record_prediction(str(i), UP)
        tracker.record_label(str(i), label)
    assert tracker.live_metrics().accuracy == 1.0 and tracker.live_metrics().n == 3


def test_pending_predictions_are_bounded():
    tracker = Prequential(max_pending=2)
    for signal_id in "abc":
        tracker.record_prediction(signal_id, UP)
    assert tracker.record_label("a", 1) is None  # the oldest was evicted
    assert tracker.live_metrics().evicted == 1 and tracker.live_metrics().pending == 2
    assert tracker.discard("b") and not tracker.discard("b")


def test_refuses_duplicates_and_foreign_encodings():
    tracker = Prequential()
    tracker.record_prediction("a", UP)
    with pytest.raises(ValueError, match="^signal_id: "):
        tracker.record_prediction("a", DOWN)
    with pytest.raises(ValueError, match="^proba: "):
        tracker.record_prediction("b", {"buy": 0.8, "sell": 0.2})
    for label in ("buy", -1, True):
        with pytest.raises(ValueError, match="^label: "):
            tracker.record_label("a", label)
    with pytest.raises(ValueError, match="^window: "):
        Prequential(window=0)


def test_each_outcome_is_scored_before_the_model_learns_it():
    data = make_dataset(400, strength=3.0, seed=5)
    model = OnlineLogistic(len(FEATURE_NAMES))
    tracker = Prequential(window=400)
    delay = 5  # labels arrive five decisions later
    for i, x in enumerate(data.X):
        tracker.record_prediction(f"s{i}", model.predict_proba_one(x), x)
        if i >= delay:
            pending = tracker.record_label(f"s{i - delay}", int(data.y[i - delay]))
            model.learn_one(pending.x, int(data.y[i - delay]))
    live = tracker.live_metrics()
    assert live.n == 400 - delay and live.pending == delay
    assert live.accuracy > 0.75  # learned on the stream, yet never scored in-sample
    assert model.count == 400 - delay
    np.testing.assert_array_equal(tracker.record_label("s399", int(data.y[399])).x, data.X[399])
