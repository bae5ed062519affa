import numpy as np
import pytest
import statsmodels.api as sm

from msd.ml.evaluation import time_split
from msd.ml.features import FEATURE_NAMES
from msd.ml.models import (LogisticConfig, LogisticModel, MajorityClass, Naive, OnlineConfig,
                           OnlineLogistic)
from msd.ml.synthetic import make_dataset

N_FEATURES = len(FEATURE_NAMES)


def _badly_scaled(n, seed):
    """Columns on very different scales, so standardisation inside the model matters."""
    rng = np.random.default_rng(seed)
    offset, spread = np.array([0, 5, 0, 100]), np.array([1, 10, 0.01, 3])
    X = rng.normal(size=(n, 4)) * spread + offset
    logit = (X - offset) @ np.array([1.0, 0.1, 100.0, -0.3]) + 0.2
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def test_logistic_matches_statsmodels_when_nearly_unpenalised():
    X, y = _badly_scaled(5000, seed=1)
    model = LogisticModel(LogisticConfig(l2=1e-8)).fit(X, y)
    reference = sm.Logit(y, sm.add_constant(X)).fit(disp=0).params
    coef, intercept = model.raw_coefficients()
    assert model.converged
    np.testing.assert_allclose(coef, reference[1:], rtol=1e-5)
    assert intercept == pytest.approx(reference[0], rel=1e-5)


def test_penalty_shrinks_coefficients_but_not_the_intercept():
    X, y = _badly_scaled(2000, seed=2)
    model = LogisticModel(LogisticConfig(l2=1e9)).fit(X, y)
    assert np.abs(model.coef).max() < 1e-4
    base_rate = y.mean()
    assert model.intercept == pytest.approx(np.log(base_rate / (1 - base_rate)), abs=1e-4)


def _validation_accuracy(model, data):
    train, val = time_split(data.timestamps, validation_fraction=0.3, embargo=900)
    model.fit(data.X[train], data.y[train])
    return np.mean(model.predict(data.X[val]) == data.y[val])


def test_logistic_learns_a_learnable_signal():
    accuracy = _validation_accuracy(LogisticModel(), make_dataset(4000, strength=3.0, seed=3))
    assert accuracy > 0.85


def test_logistic_on_pure_noise_stays_near_a_coin():
    accuracy = _validation_accuracy(LogisticModel(), make_dataset(6000, strength=0.0, seed=4))
    assert abs(accuracy - 0.5) < 0.04


def test_logistic_refuses_a_single_class():
    with pytest.raises(ValueError, match="single class"):
        LogisticModel().fit(np.ones((10, 2)), np.zeros(10, dtype=int))


def test_constant_feature_column_is_harmless():
    X, y = _badly_scaled(500, seed=5)
    X = np.column_stack([X, np.full(len(X), 7.0)])
    model = LogisticModel().fit(X, y)
    assert model.coef[-1] == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(model.predict_proba(X)).all()


def test_coefficient_report_on_ordinary_data():
    data = make_dataset(2000, strength=1.0, seed=6)
    model = LogisticModel(LogisticConfig(l2=1e-6)).fit(data.X, data.y)
    report = model.coefficient_report(data.X, data.y, FEATURE_NAMES)
    assert "error" not in report
    assert report["names"] == ["intercept", *FEATURE_NAMES]
    assert len(report["coef"]) == len(report["p_values"]) == N_FEATURES + 1
    np.testing.assert_allclose(report["coef"], report["model_coef"], atol=1e-3)
    signal = report["names"].index("book_imbalance")
    assert report["p_values"][signal] < 1e-6


def test_coefficient_report_tolerates_perfect_separation():
    x = np.r_[np.linspace(-2, -0.1, 20), np.linspace(0.1, 2, 20)][:, None]
    y = (x[:, 0] > 0).astype(np.int64)
    model = LogisticModel().fit(x, y)
    report = model.coefficient_report(x, y)
    assert set(report) == {"error"}
    assert np.isfinite(model.predict_proba(x)).all()  # our penalised fit is still usable


def test_online_predicts_a_coin_before_learning():
    model = OnlineLogistic(N_FEATURES)
    assert model.predict_proba_one(np.ones(N_FEATURES)) == {0: 0.5, 1: 0.5}


def test_learn_many_with_unit_batches_equals_a_learn_one_loop():
    data = make_dataset(300, seed=7)
    batched = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=1))
    batched.learn_many(data.X, data.y)
    looped = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=1))
    for x, y in zip(data.X, data.y):
        looped.learn_one(x, int(y))
    for key, value in batched.to_arrays().items():
        np.testing.assert_allclose(value, looped.to_arrays()[key], rtol=1e-12, err_msg=key)


def test_online_running_standardisation_matches_the_batch_moments():
    data = make_dataset(1000, seed=8)
    model = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=7))
    model.learn_many(data.X, data.y)
    np.testing.assert_allclose(model.mean, data.X.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.m2 / model.count, data.X.var(axis=0), rtol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 16])
def test_online_converges_toward_the_batch_model_on_a_stream(batch_size):
    data = make_dataset(20000, strength=1.5, seed=9)
    held_out = make_dataset(2000, strength=1.5, seed=10)
    batch = LogisticModel(LogisticConfig(l2=1.0)).fit(data.X, data.y)
    online = OnlineLogistic(N_FEATURES, OnlineConfig(batch_size=batch_size))
    gaps = []
    for start in range(0, len(data.y), 5000):
        online.learn_many(data.X[start:start + 5000], data.y[start:start + 5000])
        difference = online.predict_proba(held_out.X)[:, 1] - batch.predict_proba(held_out.X)[:, 1]
        gaps.append(np.abs(difference).mean())
    assert gaps[-1] < 0.02
    assert gaps[-1] < gaps[0]
    agreement = np.mean(online.predict(held_out.X) == batch.predict(held_out.X))
    assert agreement > 0.97


def test_majority_class_predicts_the_base_rate():
    y = np.array([1, 1, 1, 0])
    model = MajorityClass().fit(np.zeros((4, 2)), y)
    assert model.predict_proba_one([5.0, -5.0]) == {0: 0.25, 1: 0.75}
    np.testing.assert_array_equal(model.predict(np.random.default_rng(0).normal(size=(3, 2))),
                                  [1, 1, 1])


def test_naive_follows_the_last_short_term_return():
    column = FEATURE_NAMES.index("return_1m")
    X = np.zeros((8, N_FEATURES))
    X[:, column] = [0.01, 0.02, -0.01, -0.03, 0.01, -0.02, 0.0, 0.0]
    y = np.array([1, 1, 0, 0, 0, 0, 1, 1])  # persistence right 5 of 6 times when it moved
    model = Naive().fit(X, y)
    up, down, flat = np.zeros((3, N_FEATURES))
    up[column], down[column] = 0.005, -0.005
    assert model.predict_proba_one(up)[1] == pytest.approx(5 / 6)
    assert model.predict_proba_one(down)[0] == pytest.approx(5 / 6)
    assert model.predict_proba_one(flat)[1] == pytest.approx(y.mean())  # no move: base rate


def test_naive_keeps_the_rule_direction_even_when_persistence_failed():
    column = FEATURE_NAMES.index("return_1m")
    X = np.zeros((4, N_FEATURES))
    X[:, column] = [0.01, 0.02, -0.01, -0.03]
    model = Naive().fit(X, np.array([0, 0, 1, 1]))
    assert model.predict(X).tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize("factory, field", [
    (lambda: LogisticConfig(l2=0), "l2"),
    (lambda: LogisticConfig(max_iter=0), "max_iter"),
    (lambda: OnlineConfig(learning_rate=0), "learning_rate"),
    (lambda: OnlineConfig(batch_size=0), "batch_size"),
    (lambda: OnlineConfig(seed=-1), "seed"),
    (lambda: OnlineLogistic(0), "n_features"),
])
def test_configs_name_the_bad_field(factory, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        factory()


def test_coefficient_report_tolerates_a_singular_design():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 1))
    X = np.hstack([x, x])  # two copies of one feature: no unique unpenalised MLE
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(np.int64)
    model = LogisticModel().fit(X, y)
    assert "error" in model.coefficient_report(X, y)
    coef, _ = model.raw_coefficients()
    assert coef[0] == pytest.approx(coef[1])  # the penalty splits the weight evenly
