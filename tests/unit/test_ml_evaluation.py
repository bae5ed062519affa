import math
from datetime import timedelta

import numpy as np
import pytest

from msd.ml.evaluation import Metrics, baseline_metrics, metrics, time_split, walk_forward
from msd.ml.features import label_from_outcome, side_from_label
from msd.ml.models import LogisticModel
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


def test_metrics_on_a_worked_example():
    y = np.array([1, 0, 1, 0])
    p1 = np.array([0.9, 0.2, 0.4, 0.6])
    returns = np.array([0.01, -0.02, 0.005, -0.001])
    result = metrics(y, np.column_stack([1 - p1, p1]), threshold=0.7, returns=returns, fee=0.002)
    assert (result.n, result.accuracy, result.balanced_accuracy) == (4, 0.5, 0.5)
    assert (result.n_calls, result.call_precision) == (2, 1.0)
    assert result.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.4])))
    assert result.brier == pytest.approx(0.1925)
    assert result.ece == pytest.approx(0.375)
    trades = result.backtest
    assert (trades.n_trades, trades.hit_rate, trades.turnover) == (2, 1.0, 0.5)
    assert trades.mean_net_return == pytest.approx(0.013)
    assert trades.total_net_return == pytest.approx(0.026)
    assert trades.sharpe == pytest.approx(0.013 / 0.005)


def test_metrics_without_calls_or_returns():
    result = metrics(np.array([0, 1]), np.full((2, 2), 0.5), threshold=0.6)
    assert result.n_calls == 0 and result.call_precision is None and result.backtest is None
    assert result.log_loss == pytest.approx(math.log(2))


def test_predictions_compared_in_same_label_encoding():
    rng = np.random.default_rng(3)
    forward = rng.normal(0, 0.01, 200)
    sides = rng.choice(["buy", "sell"], 200)
    paid = [(s == "buy") == (r > 0) for s, r in zip(sides, forward)]
    labels = np.array([label_from_outcome(s, p) for s, p in zip(sides, paid)])
    np.testing.assert_array_equal(labels, forward > 0)  # 1 = price went up = buy would pay
    oracle = np.column_stack([forward <= 0, forward > 0]).astype(float)
    assert metrics(labels, oracle, threshold=0.5).accuracy == 1.0
    assert metrics(labels, oracle[:, ::-1], threshold=0.5).accuracy == 0.0
    right_side = ["buy" if r > 0 else "sell" for r in forward]
    assert [side_from_label(int(c)) for c in oracle.argmax(axis=1)] == right_side
    with pytest.raises(ValueError, match="y:"):
        metrics(np.where(labels == 1, "buy", "sell"), oracle, threshold=0.5)
    with pytest.raises(ValueError, match="y:"):
        metrics(np.where(labels == 1, 1, -1), oracle, threshold=0.5)
    with pytest.raises(ValueError, match="columns"):
        metrics(labels, oracle[:, 1:], threshold=0.5)


@pytest.mark.parametrize("proba", [[[0.7, 0.7]], [[-0.1, 1.1]], [[np.nan, 0.5]]])
def test_metrics_refuse_invalid_probabilities(proba):
    with pytest.raises(ValueError, match="proba|X"):
        metrics(np.array([1]), np.array(proba), threshold=0.5)


def test_baselines_are_scored_on_the_validation_window():
    data = make_dataset(1000, strength=2.0, drift=0.5, seed=4)
    train, val = time_split(data.timestamps, validation_fraction=0.3, embargo=900)
    result = baseline_metrics(data.X[train], data.y[train], data.X[val], data.y[val],
                              threshold=0.55, returns=data.returns[val])
    assert set(result) == {"majority", "naive"}
    assert all(isinstance(m, Metrics) and m.n == len(val) for m in result.values())
    majority_share = max(data.y[val].mean(), 1 - data.y[val].mean())
    assert result["majority"].accuracy == pytest.approx(majority_share)
    assert result["majority"].balanced_accuracy == 0.5
    model = LogisticModel().fit(data.X[train], data.y[train])
    candidate = metrics(data.y[val], model.predict_proba(data.X[val]), threshold=0.55)
    assert candidate.accuracy > result["majority"].accuracy + 0.05
