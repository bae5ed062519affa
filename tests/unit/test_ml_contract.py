"""One contract, every estimator (River style): whatever the trainer or signaller holds, it can
rely on these properties without knowing which class it is."""
import io

import numpy as np
import pytest

from msd.ml.calibration import CalibratedModel
from msd.ml.estimator import call_direction
from msd.ml.features import FEATURE_NAMES, NO_CALL
from msd.ml.models import (LogisticConfig, LogisticModel, MajorityClass, Naive, OnlineConfig,
                           OnlineLogistic)
from msd.ml.synthetic import make_dataset


class WarmOnline(OnlineLogistic):
    """The online challenger as the signaller builds it: warm-started from a batch fit, then
    learning online (fit = batch fit on the first half, online on the second)."""

    def __init__(self, n_features=len(FEATURE_NAMES), config=OnlineConfig(batch_size=1)):
        super().__init__(n_features, config)

    def fit(self, X, y):
        warm = OnlineLogistic.warm_started(LogisticModel().fit(X[:200], y[:200]), self.config)
        self.__dict__.update(warm.__dict__)
        self.learn_many(X[200:], y[200:])
        return self


ESTIMATORS = {
    "logistic": lambda: LogisticModel(LogisticConfig(l2=0.01)),
    "online": lambda: OnlineLogistic(len(FEATURE_NAMES), OnlineConfig(epochs=2, seed=7)),
    "online_warm": WarmOnline,
    "calibrated": lambda: CalibratedModel(LogisticModel(LogisticConfig(l2=0.01))),
    "majority": MajorityClass,
    "naive": Naive,
}


@pytest.fixture(params=sorted(ESTIMATORS), name="make")
def make_fixture(request):
    return ESTIMATORS[request.param]


@pytest.fixture(scope="module", name="data")
def data_fixture():
    data = make_dataset(600, strength=1.5, seed=11)
    # three outcome classes: buy pays, sell pays, neither (moves inside a 0.1 % cost band)
    y = np.where(data.returns > 0.001, 1, np.where(data.returns < -0.001, 0, 2))
    return type(data)(data.X, y, data.returns, data.timestamps)


def _fitted(make, data):
    return make().fit(data.X[:400], data.y[:400])


def _savez_round_trip(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


def test_probabilities_are_valid_and_consistent(make, data):
    model = _fitted(make, data)
    proba = model.predict_proba(data.X[400:])
    assert proba.shape == (200, 3)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    one = model.predict_proba_one(data.X[400])
    assert set(one) == {0, 1, 2}
    assert all(one[k] == pytest.approx(proba[0, k]) for k in range(3))


def test_calls_follow_the_one_tie_rule_and_confidence_is_the_called_probability(make, data):
    model = _fitted(make, data)
    proba = model.predict_proba(data.X[400:])
    calls = model.calls(data.X[400:])
    assert calls.direction.dtype == np.int64 and set(np.unique(calls.direction)) <= {-1, 0, 1}
    np.testing.assert_array_equal(calls.direction, call_direction(proba))
    np.testing.assert_array_equal(model.predict(data.X[400:]), calls.direction)
    called = calls.direction != NO_CALL
    np.testing.assert_array_equal(calls.confidence[called],
                                  proba[np.flatnonzero(called), calls.direction[called]])
    assert (calls.confidence[~called] == 0).all()


def test_predict_is_pure(make, data):
    model = _fitted(make, data)
    before = model.to_arrays()
    first = model.predict_proba(data.X[400:])
    model.predict_proba_one(data.X[401])
    model.predict(data.X[400:])
    np.testing.assert_array_equal(first, model.predict_proba(data.X[400:]))
    after = model.to_arrays()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def test_fitting_is_deterministic(make, data):
    a, b = _fitted(make, data), _fitted(make, data)
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[key], err_msg=key)
    np.testing.assert_array_equal(a.predict_proba(data.X), b.predict_proba(data.X))


def test_arrays_round_trip_without_pickle(make, data):
    model = _fitted(make, data)
    arrays = model.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in arrays.values())
    restored = type(model).from_arrays(_savez_round_trip(arrays))
    np.testing.assert_array_equal(restored.predict_proba(data.X), model.predict_proba(data.X))


def test_from_arrays_refuses_incomplete_or_foreign_arrays(make, data):
    model = _fitted(make, data)
    arrays = model.to_arrays()
    incomplete = {k: v for k, v in arrays.items() if k != sorted(arrays)[-1]}
    with pytest.raises(ValueError, match="missing"):
        type(model).from_arrays(incomplete)
    with pytest.raises(ValueError, match="format_version"):
        type(model).from_arrays({**arrays, "format_version": np.array(99)})


def test_refuses_labels_in_another_encoding(make, data):
    for bad in (np.where(data.y[:400] == 1, 1, -1), np.where(data.y[:400] == 1, "buy", "sell"),
                np.where(data.y[:400] == 1, 3, 0)):
        with pytest.raises(ValueError, match="y:"):
            make().fit(data.X[:400], bad)


def test_refuses_feature_vectors_of_another_width(make, data):
    model = _fitted(make, data)
    with pytest.raises(ValueError, match="columns"):
        model.predict_proba(data.X[:5, :-1])
    with pytest.raises(ValueError, match="finite"):
        model.predict_proba(np.full((1, data.X.shape[1]), np.nan))
