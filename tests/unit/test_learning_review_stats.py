"""Regressions of the hostile review of the learning lifecycle: the statistics (balanced
accuracy with a class missing from the window, the net-return bound under overlapping
horizons) and the robust cost estimate. Tables for the rules."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from msd.learning.costs import MAX_ONE_WAY_COST, CostFill, RollingCost
from msd.learning.outcomes import outcome_labels
from msd.ml.evaluation import metrics, non_overlapping_calls
from msd.ml.features import BUY, NEITHER, SELL
from msd.ml.gate import GateConfig, promotion_decision

ALWAYS_BUY = [0.1, 0.8, 0.1]


@pytest.mark.parametrize("outcomes, calls, expected", [
    # (outcomes in the window, the model's call on each, balanced accuracy)
    ([BUY] * 4 + [NEITHER] * 6, [BUY] * 10, 0.5),            # only "buy pays" present: constant caller
    ([SELL] * 4 + [NEITHER] * 6, [SELL] * 10, 0.5),          # only "sell pays" present
    ([NEITHER] * 10, [BUY] * 10, 0.0),                       # neither present: nothing could pay
    ([BUY] * 5 + [SELL] * 5, [BUY] * 10, 0.5),               # both present, constant caller
    ([BUY] * 5 + [SELL] * 5, [BUY] * 5 + [SELL] * 5, 1.0),   # both present, perfect
    ([BUY] * 4 + [SELL] * 4, [BUY, BUY, BUY, SELL, SELL, SELL, SELL, BUY], 0.75),
])
def test_balanced_accuracy_of_a_constant_caller_is_not_one_when_a_class_is_missing(outcomes, calls, expected):
    """Review finding 9: an always-buy model scored balanced accuracy 1.0 on a window where no
    sell paid (the absent class was left out of the mean)."""
    proba = np.array([[0.8, 0.1, 0.1] if c == SELL else ALWAYS_BUY for c in calls])
    result = metrics(np.array(outcomes), proba, threshold=0.5, moves=0.0, costs=0.0)
    assert result.balanced_accuracy == pytest.approx(expected)


def test_constant_caller_on_a_one_sided_window_fails_the_balanced_accuracy_floor():
    """Review finding 9, the reviewer's window: 40 % buy pays, 60 % neither, no sell pays."""
    y = np.array([BUY] * 80 + [NEITHER] * 120)
    moves = np.where(y == BUY, 0.004, 0.0005)
    result = metrics(y, np.tile(ALWAYS_BUY, (200, 1)), threshold=0.6, moves=moves, costs=0.002)
    assert result.balanced_accuracy == 0.5
    decision = promotion_decision(result, {"naive": result}, None, 200, GateConfig(min_accuracy=0.5))
    assert any("balanced accuracy 0.5000" in reason for reason in decision.reasons)


@pytest.mark.parametrize("stamps, overlap, kept", [
    ([0, 60, 120, 900, 960, 1800], 900, [0, 3, 5]),
    ([0, 0, 0, 0], 900, [0]),                       # several assets in the same minute: one
    ([0, 1000, 2000], 900, [0, 1, 2]),              # already apart: all kept
    ([0, 60, 120], 0, [0, 1, 2]),                   # no overlap: all kept
])
def test_non_overlapping_calls_table(stamps, overlap, kept):
    assert non_overlapping_calls(np.array(stamps, dtype=float), overlap).tolist() == kept


def _zero_edge_windows(trials, seed, horizon=15, n=200, sigma=0.002):
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        log_price = np.concatenate([[0.0], np.cumsum(rng.normal(0.0, sigma, n + horizon))])
        moves = np.exp(log_price[horizon:n + horizon] - log_price[:n]) - 1.0
        yield outcome_labels(moves, np.zeros(n)), moves, 60.0 * np.arange(n)


def test_net_return_bound_ignored_overlapping_horizons():
    """Review finding 4: always-buy with zero edge on a driftless random walk, 200 decisions a
    minute apart, 15-minute horizon: the lower 95 % bound was above 0 in a third of the
    windows. It must be so at about the nominal one-sided 2.5 %."""
    proba = np.tile([0.2, 0.7, 0.1], (200, 1))
    above = naive_above = 0
    trials = 1500
    for y, moves, stamps in _zero_edge_windows(trials, seed=0):
        honest = metrics(y, proba, threshold=0.6, moves=moves, costs=0.0, decided_at=stamps,
                         overlap_s=15 * 60.0)
        naive = metrics(y, proba, threshold=0.6, moves=moves, costs=0.0)
        above += honest.net_return_lower > 0
        naive_above += naive.net_return_lower > 0
        assert honest.independent_calls == 14 and honest.n_calls == 200
    assert naive_above / trials > 0.2                     # the defect, as the reviewer measured it
    assert 0.01 <= above / trials <= 0.045                # nominal 0.025


def test_overlap_needs_decision_times():
    with pytest.raises(ValueError, match="decided_at"):
        metrics(np.array([BUY, SELL]), np.tile(ALWAYS_BUY, (2, 1)), threshold=0.5, moves=0.0,
                costs=0.0, overlap_s=60.0)


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _fill(minute, price, fee=0.01, side="buy"):
    return CostFill(T0 + timedelta(minutes=minute), side, 1.0, price, fee, 100.0)


ONE_WAY = 0.1 / 100.1 + 0.001          # fee 0.1 USDT on ~100 USDT, 0.1 % adverse slippage


@pytest.mark.parametrize("fills, expected", [
    ([_fill(i, 100.1, fee=0.1) for i in range(20)], 2 * ONE_WAY),
    # one absurd fill (price 10x: a unit error) is refused; the rest decide
    ([_fill(i, 100.1, fee=0.1) for i in range(19)] + [_fill(19, 1000.0)], 2 * ONE_WAY),
    # one large but plausible fill (3 % slippage) does not move the median
    ([_fill(i, 100.1, fee=0.1) for i in range(19)] + [_fill(19, 103.0)], 2 * ONE_WAY),
    # usable fills fewer than min_fills: the floor
    ([_fill(i, 1000.0) for i in range(20)], 0.001),
])
def test_one_absurd_fill_sets_the_cost_for_a_day(fills, expected):
    """Review finding 13: the round-trip cost was twice the plain mean of the window's one-way
    costs, so one absurd fill set it for a day. Now: the median; implausible fills refused."""
    rolling = RollingCost(0.001, 86400.0, 10)
    for fill in fills:
        rolling.add(fill)
    assert rolling.at(T0 + timedelta(hours=1)) == pytest.approx(expected)


def test_implausible_fill_costs_are_refused_and_counted():
    rolling = RollingCost(0.0, 86400.0, 1)
    rolling.add(_fill(0, 100.0 * (1 + 2 * MAX_ONE_WAY_COST)))
    rolling.add(_fill(1, 100.0, fee=-50.0))            # a "fee" of minus half the notional
    assert rolling.refused == 2 and rolling.at(T0 + timedelta(hours=1)) == 0.0
    rolling.add(_fill(2, 100.0, fee=0.1))
    rolling.add(_fill(3, 100.0, fee=0.3))
    rolling.add(_fill(4, 100.0, fee=0.2))
    assert rolling.at(T0 + timedelta(hours=1)) == pytest.approx(2 * 0.002)
    assert rolling.at(T0 + timedelta(days=2)) == 0.0   # window passed: back to the floor


# ----- warm-up budget (review finding 6) ---------------------------------------------------
def _decision(i, *, side="buy", close=101.0, amount=3.0, fills=1, notional=5.0):
    from msd.learning.outcomes import Decision
    return Decision(f"s-{i}", "w", "BTCUSDT", side, T0 + timedelta(minutes=i), {"price": 100.0},
                    amount, "warmup", None, 0.6, close, fills, notional)


def _labelled(*decisions):
    from msd.learning.outcomes import label_decision
    return [label_decision(d, 0.002) for d in decisions]


def test_warmup_budget_charged_the_signal_amount_not_what_order_manager_traded():
    """A 3 USDT signal is raised to the 5 USDT minimum order value (CONTRACTS §3.6): the spend
    is on the 5 USDT that traded. A call that never filled spends nothing."""
    from msd.learning.monitoring import warmup_spend
    later = T0 + timedelta(hours=2)
    spend = warmup_spend(_labelled(_decision(0, close=99.0), _decision(1, close=99.0, fills=0,
                                                                       notional=None)), T0, later)
    assert spend.spend_usdt == pytest.approx(5.0 * (0.01 + 0.002))
    assert (spend.calls, spend.unfilled) == (1, 1)
    no_price = warmup_spend(_labelled(_decision(0, close=99.0, notional=None)), T0, later)
    assert no_price.spend_usdt == pytest.approx(5.0 * 0.012)     # fills without a price: raised amount


@pytest.mark.parametrize("labelled_minutes, overdue_minutes, spend, stalled", [
    ([0, 1], [], 2 * 5.0 * (-0.01 + 0.002), False),
    ([0, 1], [2, 3], 2 * 5.0 * (-0.01 + 0.002) + 2 * 5.0 * 0.02, True),    # bars stopped
    ([], [0, 1, 2], 3 * 5.0 * 0.02, True),                              # no label ever came
    ([0, 3], [1], 2 * 5.0 * (-0.01 + 0.002) + 5.0 * 0.02, False),       # a gap, labels go on
])
def test_warmup_spend_stopped_when_labels_stopped(labelled_minutes, overdue_minutes, spend, stalled):
    """Review finding 6: with no bars there were no labels and the spend stayed 0 while the
    strategy kept trading. Overdue calls are charged the stated worst case (2 % here)."""
    from msd.learning.monitoring import warmup_spend
    rows = _labelled(*(_decision(i, close=101.0) for i in labelled_minutes))
    overdue = [_decision(i, close=None) for i in overdue_minutes]
    result = warmup_spend(rows, T0, T0 + timedelta(hours=2), overdue, 0.02)
    assert result.spend_usdt == pytest.approx(spend)
    assert result.labels_stalled is stalled and result.unlabelled == len(overdue_minutes)
