import dataclasses

import numpy as np
import pytest

from msd.ml.evaluation import Metrics, baseline_metrics, metrics, time_split
from msd.ml.gate import Decision, GateConfig, degradation_check, promotion_decision
from msd.ml.models import LogisticModel, MajorityClass
from msd.ml.synthetic import make_dataset

GATE = GateConfig(min_accuracy=0.75, min_samples=200, min_margin_over_baselines=0.02,
                  min_margin_over_active=0.01)


def _evaluate(model, data, *, shuffle_train_labels=False):
    train, val = time_split(data.timestamps, validation_fraction=0.3, embargo=900)
    y_train = data.y[train]
    if shuffle_train_labels:
        y_train = np.random.default_rng(99).permutation(y_train)
    model.fit(data.X[train], y_train)
    candidate = metrics(data.y[val], model.predict_proba(data.X[val]), threshold=0.6)
    baselines = baseline_metrics(data.X[train], y_train, data.X[val], data.y[val], threshold=0.6)
    return candidate, baselines, len(val)


def test_constant_predictor_never_passes_gate():
    data = make_dataset(3000, strength=0.0, drift=0.85, seed=1)  # about 80/20 labels
    candidate, baselines, n_val = _evaluate(MajorityClass(), data)
    assert candidate.accuracy >= 0.75  # the plain 75% gate would have let it through
    decision = promotion_decision(candidate, baselines, None, n_val, GATE)
    assert decision == Decision(False, decision.reasons) and not decision.promote
    assert any("baseline majority" in reason for reason in decision.reasons)


def test_constant_predictor_fails_even_with_the_loosest_config():
    data = make_dataset(3000, strength=0.0, drift=0.85, seed=2)
    candidate, baselines, n_val = _evaluate(MajorityClass(), data)
    loosest = GateConfig(min_accuracy=0.5, min_samples=1, min_margin_over_baselines=1e-9,
                         min_margin_over_active=0.0)
    assert not promotion_decision(candidate, baselines, None, n_val, loosest).promote


def test_a_genuinely_good_model_is_promoted():
    candidate, baselines, n_val = _evaluate(LogisticModel(), make_dataset(3000, strength=3.0,
                                                                          seed=3))
    decision = promotion_decision(candidate, baselines, None, n_val, GATE)
    assert decision.promote, decision.reasons
    assert all(reason.startswith("pass: ") for reason in decision.reasons)


def test_shuffled_labels_drop_to_baseline():
    """Leakage guard: with the label/feature link destroyed, nothing must survive the gate."""
    data = make_dataset(3000, strength=3.0, seed=4)
    honest, _, _ = _evaluate(LogisticModel(), data)
    shuffled, baselines, n_val = _evaluate(LogisticModel(), data, shuffle_train_labels=True)
    assert honest.accuracy > 0.85
    assert abs(shuffled.accuracy - baselines["majority"].accuracy) < 0.05
    assert abs(shuffled.accuracy - 0.5) < 0.05
    assert not promotion_decision(shuffled, baselines, None, n_val, GATE).promote


def _m(accuracy, n=500):
    """Metrics that differ only where the gate looks."""
    return Metrics(n=n, accuracy=accuracy, balanced_accuracy=accuracy, threshold=0.5, n_calls=n,
                   call_precision=accuracy, log_loss=0.5, brier=0.2, ece=0.0)


BASELINES = {"majority": _m(0.55), "naive": _m(0.60)}


@pytest.mark.parametrize("candidate, baselines, active, n_val, fragment", [
    (_m(0.80, n=150), {k: _m(v.accuracy, 150) for k, v in BASELINES.items()}, None, 150,
     "validation samples 150"),
    (_m(0.74), BASELINES, None, 500, "accuracy 0.7400 vs minimum"),
    (_m(0.80), {"majority": BASELINES["majority"]}, None, 500, "baseline naive metrics missing"),
    (_m(0.80), {**BASELINES, "naive": _m(0.79)}, None, 500, "vs baseline naive"),
    (_m(0.80), {**BASELINES, "naive": _m(0.60, n=400)}, None, 500, "scored on 400 samples"),
    (_m(0.80), BASELINES, _m(0.795), 500, "vs active version"),
    (_m(0.80), BASELINES, None, 600, "candidate scored on 500"),
])
def test_gate_refusals_name_the_failed_check(candidate, baselines, active, n_val, fragment):
    decision = promotion_decision(candidate, baselines, active, n_val, GATE)
    assert not decision.promote
    assert any(fragment in reason for reason in decision.reasons), decision.reasons


def test_gate_promotes_over_a_beaten_active_version():
    assert promotion_decision(_m(0.80), BASELINES, _m(0.78), 500, GATE).promote
    exactly_margin = dataclasses.replace(GATE, min_margin_over_active=0.02)
    assert promotion_decision(_m(0.80), BASELINES, _m(0.78), 500, exactly_margin).promote


@pytest.mark.parametrize("kwargs, field", [
    ({"min_accuracy": 1.5}, "min_accuracy"),
    ({"min_samples": 0}, "min_samples"),
    ({"min_margin_over_baselines": 0.0}, "min_margin_over_baselines"),
    ({"min_margin_over_active": -0.1}, "min_margin_over_active"),
])
def test_gate_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        GateConfig(**kwargs)


def test_degradation_trips_below_threshold_and_recovers_with_hysteresis():
    def step(accuracy, state, n=100):
        return degradation_check(accuracy, n, 0.7, 0.05, min_samples=30, was_degraded=state)
    state = False
    trace = []
    for accuracy in (0.72, 0.70, 0.69, 0.71, 0.74, 0.75, 0.73, 0.69):
        state = step(accuracy, state)
        trace.append(state)
    assert trace == [False, False, True, True, True, False, False, True]


def test_degradation_needs_enough_outcomes_to_change_state():
    assert degradation_check(0.1, 29, 0.7, 0.05, min_samples=30) is False
    assert degradation_check(0.99, 29, 0.7, 0.05, min_samples=30, was_degraded=True) is True
    assert degradation_check(None, 500, 0.7, 0.05) is False
    with pytest.raises(ValueError, match="^hysteresis: "):
        degradation_check(0.5, 100, 0.7, -0.1)
