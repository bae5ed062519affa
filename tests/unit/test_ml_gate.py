"""The promotion gate: a table per rule, the three cases the old gate let through, and the live
degradation check."""
import dataclasses

import numpy as np
import pytest

from msd.ml.evaluation import Metrics, metrics
from msd.ml.features import BUY, NEITHER, SELL
from msd.ml.gate import GateDecision, GateConfig, degradation_check, promotion_decision
from msd.ml.models import MajorityClass

GATE = GateConfig(min_accuracy=0.75, min_samples=200, min_margin_over_baselines=0.02,
                  min_margin_over_active=0.01, min_balanced_accuracy=0.6, min_emitted_calls=50)


def _m(accuracy=0.80, n=500, **changes):
    """Metrics that pass every check unless changed."""
    base = Metrics(n=n, threshold=0.6, accuracy=accuracy, base_rate=0.5, up_rate=0.5,
                   down_rate=0.3, balanced_accuracy=0.8, coverage=0.5, n_calls=250,
                   precision=0.85, net_return_mean=0.004, net_return_lower=0.002,
                   net_return_upper=0.006, independent_calls=40, mean_confidence=0.8, log_loss=0.6, brier=0.3,
                   calibration_error=0.02)
    return dataclasses.replace(base, **changes)


BASELINES = {"naive": _m(0.55)}


def test_a_candidate_passing_every_rule_is_promoted_and_the_reasons_list_each_rule():
    decision = promotion_decision(_m(), BASELINES, _m(0.78), 500, GATE)
    assert decision.promote, decision.reasons
    assert len(decision.reasons) == 9 and all(r.startswith("pass: ") for r in decision.reasons)


@pytest.mark.parametrize("candidate, baselines, active, n_val, fragment", [
    (_m(n=150), {"naive": _m(0.55, n=150)}, None, 150, "validation decisions 150 vs minimum 200"),
    (_m(), BASELINES, None, 600, "candidate scored on 500 decisions"),
    (_m(0.74), BASELINES, None, 500, "accuracy 0.7400 vs minimum 0.7500"),
    (_m(0.80, base_rate=0.79), BASELINES, None, 500, "vs window base rate 0.7900 + margin"),
    (_m(balanced_accuracy=0.59), BASELINES, None, 500, "balanced accuracy 0.5900 vs minimum"),
    (_m(n_calls=49), BASELINES, None, 500, "emitted calls 49 vs minimum 50"),
    (_m(net_return_lower=-0.0001), BASELINES, None, 500, "lower bound -1.00 bps vs > 0"),
    (_m(net_return_lower=None), BASELINES, None, 500, "lower bound n/a"),
    (_m(), {}, None, 500, "baseline naive metrics missing"),
    (_m(), {"naive": _m(0.79)}, None, 500, "vs baseline naive 0.7900"),
    (_m(), {"naive": _m(0.55, n=400)}, None, 500, "baseline naive scored on 400 decisions"),
    (_m(), BASELINES, _m(0.795), 500, "vs active version 0.7950"),
    (_m(), BASELINES, _m(0.70, n=300), 500, "active version scored on 300 decisions"),
])
def test_each_rule_refuses_and_names_itself(candidate, baselines, active, n_val, fragment):
    decision = promotion_decision(candidate, baselines, active, n_val, GATE)
    assert decision == GateDecision(False, decision.reasons)
    assert any(r.startswith("fail: ") and fragment in r for r in decision.reasons), decision.reasons


def test_margins_are_met_exactly():
    exactly = promotion_decision(_m(0.80, base_rate=0.78), BASELINES, _m(0.79), 500, GATE)
    assert exactly.promote, exactly.reasons


# ----- the three cases the old gate let through, with real predictions --------------------
def _window(up, down, n=1000, seed=0):
    """Outcome classes with the given shares of buy-pays and sell-pays, the rest neither."""
    rng = np.random.default_rng(seed)
    draws = rng.random(n)
    return np.where(draws < up, BUY, np.where(draws < up + down, SELL, NEITHER))


def _moves(y, size=0.01):
    return np.where(y == BUY, size, np.where(y == SELL, -size, 0.0))


def test_constant_predictor_under_drift_is_refused():
    """Regression (issue 9, defect 3): fitted on a window with 45 % up, an always-buy model
    scored 0.83 on a validation window with 80 % up and was promoted."""
    train_y, val_y = _window(0.45, 0.40, seed=1), _window(0.83, 0.10, seed=2)
    X = np.zeros((1000, 3))
    constant = MajorityClass().fit(X, train_y)
    result = metrics(val_y, constant.predict_proba(X), threshold=0.4, moves=_moves(val_y), costs=0.002)
    naive = metrics(val_y, np.tile([1 / 3] * 3, (1000, 1)), threshold=0.4, moves=_moves(val_y), costs=0.002)
    assert result.accuracy >= 0.8                      # the old 75 % rule alone would pass it
    decision = promotion_decision(result, {"naive": naive}, None, 1000, GATE)
    assert not decision.promote
    failed = " ".join(r for r in decision.reasons if r.startswith("fail"))
    assert "window base rate" in failed and "balanced accuracy" in failed


def test_a_model_that_calls_only_a_handful_of_rows_is_refused():
    y = _window(0.45, 0.45, seed=3)
    proba = np.tile([0.35, 0.35, 0.30], (1000, 1))      # no opinion on most rows ...
    sure = np.flatnonzero(y != NEITHER)[:10]              # ... certain and right on ten
    proba[sure] = np.where(y[sure, None] == np.arange(3), 0.98, 0.01)
    result = metrics(y, proba, threshold=0.6, moves=_moves(y), costs=0.002)
    assert result.n_calls == 10 and result.precision == 1.0
    decision = promotion_decision(result, BASELINES | {"naive": _m(0.3, n=1000)}, None, 1000, GATE)
    assert not decision.promote
    assert any("emitted calls 10 vs minimum 50" in r for r in decision.reasons)


def test_a_model_right_on_direction_whose_calls_do_not_clear_the_cost_is_refused():
    # 85 % of its calls pay by a hair over their cost; the 15 % it gets wrong lose a lot.
    rng = np.random.default_rng(4)
    n = 1000
    right = rng.random(n) < 0.85
    direction = np.where(rng.random(n) < 0.5, BUY, SELL)
    sign = np.where(direction == BUY, 1.0, -1.0)
    moves = np.where(right, sign * 0.0021, -sign * 0.02)
    y = np.where(right, direction, np.where(direction == BUY, SELL, BUY))
    proba = np.where(direction[:, None] == np.arange(3), 0.8, 0.1)
    result = metrics(y, proba, threshold=0.6, moves=moves, costs=0.002)
    assert result.accuracy >= 0.8 and result.balanced_accuracy >= 0.8 and result.n_calls == n
    assert result.net_return_mean < 0
    decision = promotion_decision(result, {"naive": _m(0.5, n=n)}, None, n, GATE)
    assert [r for r in decision.reasons if r.startswith("fail")] == [
        next(r for r in decision.reasons if "net return per emitted call" in r)]


@pytest.mark.parametrize("kwargs, field", [
    ({"min_accuracy": 1.5}, "min_accuracy"),
    ({"min_samples": 0}, "min_samples"),
    ({"min_margin_over_baselines": 0.0}, "min_margin_over_baselines"),
    ({"min_margin_over_active": -0.1}, "min_margin_over_active"),
    ({"min_balanced_accuracy": 0.5 - 1e-9}, "min_balanced_accuracy"),
    ({"min_emitted_calls": 1}, "min_emitted_calls"),
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
