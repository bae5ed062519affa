import numpy as np
import pytest
import statsmodels.api as sm

from msd.ml.calibration import CalibratedModel, PlattScaling
from msd.ml.dataset import Dataset
from msd.ml.evaluation import metrics, time_split
from msd.ml.features import BUY, FEATURE_NAMES, NEITHER, SELL
from msd.ml.models import (LogisticConfig, LogisticModel, MajorityClass, Naive, OnlineConfig,
                           OnlineLogistic)
from msd.ml.params import TrainingParams
from msd.ml.synthetic import make_dataset
from msd.ml.training import fit_and_evaluate, select_l2

N_FEATURES = len(FEATURE_NAMES)


def _three_class(data, cost=0.001):
    return np.where(data.returns > cost, BUY, np.where(data.returns < -cost, SELL, NEITHER))


def _badly_scaled(n, seed):
    """Columns on very different scales, so standardisation inside the model matters."""
    rng = np.random.default_rng(seed)
    offset, spread = np.array([0, 5, 0, 100]), np.array([1, 10, 0.01, 3])
    X = rng.normal(size=(n, 4)) * spread + offset
    logits = np.column_stack([np.zeros(n), (X - offset) @ np.array([1.0, 0.1, 100.0, -0.3]),
                              (X - offset) @ np.array([-0.5, 0.0, 50.0, 0.2]) - 0.5])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return X, (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).astype(np.int64)


def test_multinomial_logistic_matches_statsmodels_when_nearly_unpenalised():
    X, y = _badly_scaled(5000, seed=1)
    model = LogisticModel(LogisticConfig(l2=1e-9)).fit(X, y)
    reference = sm.MNLogit(y, sm.add_constant(X)).fit(disp=0, maxiter=200)
    assert model.converged
    np.testing.assert_allclose(model.predict_proba(X), reference.predict(sm.add_constant(X)),
                               atol=1e-5)


def test_l2_grid_moves_the_fit():
    """Regression (issue 9): the penalty was divided by the row count, so the grid 0.1-10
    changed nothing; each grid value must now give a measurably different model."""
    data = make_dataset(2000, strength=1.0, seed=2)
    y = _three_class(data)
    norms, losses = [], []
    for l2 in TrainingParams().l2_grid:
        model = LogisticModel(LogisticConfig(l2=l2)).fit(data.X[:1500], y[:1500])
        norms.append(float(np.linalg.norm(model.coef)))
        proba = model.predict_proba(data.X[1500:])[np.arange(500), y[1500:]]
        losses.append(float(-np.mean(np.log(proba))))
    assert all(a > 1.3 * b for a, b in zip(norms, norms[1:])), norms
    assert len({round(v, 3) for v in losses}) == len(losses), losses
    l2, selection, _ = select_l2(data.X[:1500], y[:1500], data.timestamps[:1500],
                              TrainingParams(horizon_s=60, max_bar_lag_s=0), lambda: None)
    assert len({round(loss, 4) for _, loss in selection}) == len(selection)
    assert l2 == min(selection, key=lambda item: item[1])[0]


def test_logistic_learns_a_learnable_signal_and_not_noise():
    for strength, low, high in ((3.0, 0.8, 1.0), (0.0, 0.0, 0.56)):
        data = make_dataset(3000, strength=strength, seed=3)
        y = _three_class(data)
        model = LogisticModel().fit(data.X[:2000], y[:2000])
        called = model.predict(data.X[2000:])
        assert low <= np.mean(called == y[2000:]) <= high


def test_a_class_absent_in_training_gets_probability_zero():
    data = make_dataset(500, strength=2.0, seed=4)
    y = np.where(data.returns > 0, BUY, SELL)          # no "neither" row
    model = LogisticModel().fit(data.X, y)
    assert (model.predict_proba(data.X)[:, NEITHER] == 0).all()
    with pytest.raises(ValueError, match="single class"):
        LogisticModel().fit(data.X, np.full(500, BUY))


def test_constant_feature_column_is_harmless():
    data = make_dataset(800, strength=2.0, seed=5)
    X = data.X.copy()
    X[:, 0] = 3.0
    model = LogisticModel().fit(X, _three_class(data))
    assert np.abs(model.coef[0]).max() < 1e-6 and np.isfinite(model.predict_proba(X)).all()


def test_online_predicts_thirds_before_learning():
    model = OnlineLogistic(N_FEATURES)
    np.testing.assert_allclose(model.predict_proba(np.zeros((2, N_FEATURES))), 1 / 3)


def test_learn_many_with_unit_batches_equals_a_learn_one_loop():
    data = make_dataset(300, seed=6)
    y = _three_class(data)
    a, b = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=1)), OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=1))
    a.learn_many(data.X, y)
    for row, label in zip(data.X, y):
        b.learn_one(row, int(label))
    np.testing.assert_allclose(a.predict_proba(data.X), b.predict_proba(data.X), atol=1e-12)


def test_warm_started_online_learner_predicts_what_the_batch_model_predicts():
    data = make_dataset(1000, strength=2.0, seed=7)
    y = _three_class(data)
    batch = LogisticModel().fit(data.X, y)
    online = OnlineLogistic.warm_started(batch)
    np.testing.assert_allclose(online.predict_proba(data.X), batch.predict_proba(data.X), atol=1e-9)


def test_online_converges_toward_the_batch_model_on_a_stream():
    data = make_dataset(6000, strength=2.0, seed=8)
    y = _three_class(data)
    online = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=1))
    online.learn_many(data.X[:5000], y[:5000])
    batch = LogisticModel().fit(data.X[:5000], y[:5000])
    agree = np.mean(online.predict(data.X[5000:]) == batch.predict(data.X[5000:]))
    assert agree > 0.85


def test_baselines():
    data = make_dataset(2000, strength=0.0, drift=1.0, seed=9)
    y = _three_class(data)
    majority = MajorityClass().fit(data.X, y)
    assert (majority.predict(data.X) == BUY).all()
    naive = Naive().fit(data.X, y)
    up = data.X[:, FEATURE_NAMES.index("return_1m")] > 0
    expected = np.bincount(y[up], minlength=3) / up.sum()
    np.testing.assert_allclose(naive.predict_proba(data.X[up][:1])[0], expected, atol=2e-3)


def test_platt_scaling_turns_overconfidence_into_calibration():
    rng = np.random.default_rng(10)
    n = 4000
    truth = rng.dirichlet([2, 2, 1], n)
    y = (rng.random((n, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    sharp = truth ** 3 / (truth ** 3).sum(axis=1, keepdims=True)    # overconfident model
    scaling = PlattScaling().fit(sharp[:2000], y[:2000])
    assert scaling.temperature > 1.5                                   # it softens
    before = metrics(y[2000:], sharp[2000:], threshold=0.5, moves=0.0, costs=0.0)
    after = metrics(y[2000:], scaling.apply(sharp[2000:]), threshold=0.5, moves=0.0, costs=0.0)
    assert after.calibration_error < before.calibration_error / 2
    assert after.log_loss < before.log_loss


def test_calibration_is_fitted_on_rows_the_validation_window_does_not_use():
    data = make_dataset(2000, strength=2.0, seed=11)
    y = _three_class(data, 0.002)
    dataset = Dataset(data.X, y, data.returns, np.full(2000, 0.002), data.timestamps)
    params = TrainingParams(horizon_s=600, max_bar_lag_s=120, min_samples=100)
    candidate = fit_and_evaluate(dataset, params)
    stamps = data.timestamps
    fit, cal, val = candidate.fit_idx, candidate.calibration_idx, candidate.val_idx
    assert cal.size >= 300 and not (set(cal) & set(val)) and not (set(fit) & set(cal))
    assert stamps[cal].min() - stamps[fit].max() > params.embargo
    assert stamps[val].min() - stamps[cal].max() > params.embargo == 720
    assert candidate.model.scaling.n_fitted == cal.size
    assert isinstance(candidate.model, CalibratedModel)


def test_embargo_covers_the_horizon_and_the_bar_lag():
    """Regression (issue 9): the embargo equalled the horizon, but a label may read a bar up
    to max_bar_lag_s later."""
    assert TrainingParams(horizon_s=900, max_bar_lag_s=300).embargo == 1200
    with pytest.raises(ValueError, match="^embargo_s: 1000"):
        TrainingParams(horizon_s=900, max_bar_lag_s=300, embargo_s=1000)
    stamps = np.arange(100) * 60.0
    train, val = time_split(stamps, validation_fraction=0.2, embargo=TrainingParams(
        horizon_s=600, max_bar_lag_s=300).embargo)
    assert stamps[val].min() - stamps[train].max() > 900


@pytest.mark.parametrize("factory, field", [
    (lambda: LogisticConfig(l2=0), "l2"),
    (lambda: LogisticConfig(max_iter=0), "max_iter"),
    (lambda: OnlineConfig(learning_rate=0), "learning_rate"),
    (lambda: OnlineConfig(batch_size=0), "batch_size"),
    (lambda: OnlineLogistic(0), "n_features"),
    (lambda: PlattScaling(temperature=0), "temperature"),
])
def test_configs_name_the_bad_field(factory, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        factory()


def test_confidence_is_the_probability_that_the_call_pays():
    """Regression (issue 9, defect 4): confidence was max(p, 1 - p) of an uncalibrated model of
    P(up | the move cleared the fee): mean confidence 0.81 on calls of which 0.57 paid."""
    data = make_dataset(6000, strength=1.0, seed=12)
    y = _three_class(data, 0.002)
    dataset = Dataset(data.X, y, data.returns, np.full(6000, 0.002), data.timestamps)
    candidate = fit_and_evaluate(dataset, TrainingParams(horizon_s=600, max_bar_lag_s=120,
                                                         confidence_threshold=0.5))
    v = candidate.validation
    assert v.n_calls > 200
    assert abs(v.mean_confidence - v.precision) < 0.05, (v.mean_confidence, v.precision)
    assert v.calibration_error < 0.06
