import math
from datetime import timedelta

import numpy as np
import pytest
from scipy.stats import t as student_t

from msd.ml.evaluation import Metrics, baseline_metrics, metrics, time_split, walk_forward
from msd.ml.estimator import call_direction, calls_of
from msd.ml.features import BUY, NEITHER, NO_CALL, SELL
from msd.ml.models import LogisticModel, MajorityClass
from msd.ml.synthetic import make_dataset


def _irregular_timestamps(n, seed):
    gaps = np.random.default_rng(seed).exponential(60.0, n)
    stamps = 1.7e9 + np.cumsum(gaps)
    return np.random.default_rng(seed + 1).permutation(stamps)  # storage order is not time


@pytest.mark.parametrize("embargo", [0.0, 900.0, 3600.0])
def test_time_split_respects_the_embargo(embargo):
    stamps = _irregular_timestamps(1000, seed=1)
    train, val = time_split(stamps, validation_fraction=0.25, embargo=embargo)
    assert not set(train) & set(val)
    assert stamps[val].min() - stamps[train].max() > embargo
    assert len(val) == 250
    dropped = 1000 - 250 - len(train)
    assert dropped == np.sum((stamps < stamps[val].min()) & (stamps >= stamps[val].min() - embargo))


def test_time_split_never_splits_equal_timestamps():
    stamps = np.repeat(np.arange(10.0), 10)  # ten decisions per second
    train, val = time_split(stamps, validation_fraction=0.25, embargo=0)
    assert stamps[train].max() < stamps[val].min()


def test_time_split_accepts_datetime64_and_timedelta():
    stamps = np.datetime64("2025-11-20T00:00:00") + np.arange(100) * np.timedelta64(1, "m")
    train, val = time_split(stamps, validation_fraction=0.2, embargo=timedelta(minutes=15))
    gap = (stamps[val].min() - stamps[train].max()) / np.timedelta64(1, "m")
    assert gap > 15 and len(val) == 20 and len(train) == 80 - 15


@pytest.mark.parametrize("kwargs, field", [
    ({"validation_fraction": 0, "embargo": 0}, "validation_fraction"),
    ({"validation_fraction": 0.2, "embargo": -1}, "embargo"),
    ({"validation_fraction": 0.2, "embargo": "15m"}, "embargo"),
    ({"validation_fraction": 0.2, "embargo": 1e9}, "embargo"),  # nothing left to train on
])
def test_time_split_refuses_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        time_split(np.arange(100.0) * 60, **kwargs)


def test_walk_forward_folds_expand_and_move_forward():
    stamps = _irregular_timestamps(1200, seed=2)
    folds = list(walk_forward(stamps, 4, embargo=600.0))
    assert len(folds) == 4
    previous_val_end, previous_train = -np.inf, 0
    for train, val in folds:
        assert stamps[val].min() - stamps[train].max() > 600.0
        assert stamps[val].min() >= previous_val_end
        assert len(train) > previous_train
        previous_val_end, previous_train = stamps[val].max(), len(train)
    all_val = np.concatenate([val for _, val in folds])
    assert len(all_val) == len(set(all_val))


def _p(*rows):
    return np.array(rows, dtype=float)


def test_metrics_on_a_worked_example():
    # Four decisions: a right buy, a right sell, a buy whose move stayed inside the cost band
    # (neither: wrong whatever was called) and a confident wrong sell.
    y = np.array([BUY, SELL, NEITHER, BUY])
    proba = _p([0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.9, 0.05, 0.05])
    moves = np.array([0.010, -0.020, 0.001, 0.004])
    result = metrics(y, proba, threshold=0.6, moves=moves, costs=0.002)
    assert (result.n, result.accuracy) == (4, 0.5)
    assert (result.up_rate, result.down_rate, result.base_rate) == (0.5, 0.25, 0.5)
    assert result.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)   # recall up 1/2, down 1/1
    assert (result.n_calls, result.coverage, result.precision) == (3, 0.75, 2 / 3)
    net = np.array([0.010 - 0.002, 0.020 - 0.002, -0.004 - 0.002])
    assert result.net_return_mean == pytest.approx(net.mean())
    half = student_t.ppf(0.975, 2) * net.std(ddof=1) / math.sqrt(3)
    assert result.net_return_lower == pytest.approx(net.mean() - half)
    assert result.net_return_upper == pytest.approx(net.mean() + half)
    assert result.mean_confidence == pytest.approx((0.8 + 0.7 + 0.9) / 3)
    assert result.log_loss == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 0.05])))
    truth = np.eye(3)[y]
    assert result.brier == pytest.approx(np.mean(np.sum((proba - truth) ** 2, axis=1)))
    # confidences 0.8, 0.7, 0.5, 0.9 -> bins 8, 7, 5, 9; paid 1, 1, 0, 0
    assert result.calibration_error == pytest.approx((0.2 + 0.3 + 0.5 + 0.9) / 4)


def test_moves_inside_the_cost_band_count_as_wrong_calls():
    """Regression (issue 9, defect 2): rows whose move stayed inside the fee band were dropped
    from validation, so recorded accuracy overstated the share of calls that paid."""
    y = np.array([BUY, BUY, NEITHER, NEITHER])
    always_buy = np.tile([0.1, 0.8, 0.1], (4, 1))
    result = metrics(y, always_buy, threshold=0.5, moves=[0.01, 0.01, 0.001, -0.001], costs=0.002)
    assert result.accuracy == 0.5 and result.precision == 0.5
    assert result.n == 4


def test_one_tie_rule_calls_nothing_on_equal_probabilities():
    """Regression (issue 9): p = 0.5 was buy in one place and sell in another."""
    proba = _p([0.4, 0.4, 0.2], [0.5, 0.5, 0.0], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1])
    assert call_direction(proba).tolist() == [NO_CALL, NO_CALL, BUY, SELL]
    calls = calls_of(proba)
    assert calls.confidence.tolist() == [0.0, 0.0, 0.6, 0.6]
    result = metrics(np.array([BUY, SELL, BUY, SELL]), proba, threshold=0.5, moves=0.0, costs=0.0)
    assert result.accuracy == 0.5 and result.n_calls == 2     # a tie is never a paid call


def test_net_return_interval_needs_two_calls():
    one = metrics(np.array([BUY]), _p([0.1, 0.9, 0.0]), threshold=0.5, moves=[0.01], costs=0.002)
    assert one.net_return_mean == pytest.approx(0.008) and one.net_return_lower is None
    none = metrics(np.array([BUY, SELL]), np.full((2, 3), 1 / 3), threshold=0.5, moves=0.0, costs=0.0)
    assert none.n_calls == 0 and none.precision is None and none.net_return_mean is None
    assert none.log_loss == pytest.approx(math.log(3))


def test_metrics_refuse_other_encodings():
    proba = np.tile([0.2, 0.7, 0.1], (3, 1))
    for bad in (np.array(["buy", "sell", "buy"]), np.array([1, -1, 1]), np.array([0, 3, 1])):
        with pytest.raises(ValueError, match="y:"):
            metrics(bad, proba, threshold=0.5, moves=0.0, costs=0.0)
    with pytest.raises(ValueError, match="columns"):
        metrics(np.array([0, 1, 1]), proba[:, :2], threshold=0.5, moves=0.0, costs=0.0)
    with pytest.raises(ValueError, match="moves"):
        metrics(np.array([0, 1, 1]), proba, threshold=0.5, moves=[0.0, np.nan, 0.0], costs=0.0)


@pytest.mark.parametrize("proba", [[[0.7, 0.7, 0.0]], [[-0.1, 1.1, 0.0]], [[np.nan, 0.5, 0.5]]])
def test_metrics_refuse_invalid_probabilities(proba):
    with pytest.raises(ValueError, match="proba|X"):
        metrics(np.array([1]), np.array(proba), threshold=0.5, moves=0.0, costs=0.0)


def test_a_constant_caller_scores_the_base_rate_and_half_balanced_accuracy():
    y = np.array([BUY] * 8 + [SELL] * 1 + [NEITHER] * 1)
    result = metrics(y, np.tile([0.2, 0.7, 0.1], (10, 1)), threshold=0.5, moves=0.0, costs=0.0)
    assert result.accuracy == result.base_rate == 0.8
    assert result.balanced_accuracy == 0.5


def test_baselines_are_scored_on_the_validation_window():
    data = make_dataset(1000, strength=2.0, drift=0.5, seed=4)
    y = np.where(data.returns > 0.002, BUY, np.where(data.returns < -0.002, SELL, NEITHER))
    train, val = time_split(data.timestamps, validation_fraction=0.3, embargo=900)
    common = {"threshold": 0.55, "moves": data.returns[val], "costs": 0.002}
    result = baseline_metrics(data.X[train], y[train], data.X[val], y[val], **common)
    assert set(result) == {"majority", "naive"}
    assert all(isinstance(m, Metrics) and m.n == len(val) for m in result.values())
    assert result["majority"].balanced_accuracy == 0.5
    model = LogisticModel().fit(data.X[train], y[train])
    candidate = metrics(y[val], model.predict_proba(data.X[val]), **common)
    assert candidate.accuracy > result["majority"].accuracy + 0.05
