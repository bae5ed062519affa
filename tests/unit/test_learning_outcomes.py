"""Outcomes, costs, dataset assembly, the warm-up budget, FIFO round trips and training
parameters (pure tables)."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from msd.learning.costs import CostFill, RollingCost, costs_for, one_way_cost
from msd.learning.dataset import build_dataset, label_all
from msd.learning.monitoring import budget_verdict, live_quality, warmup_spend
from msd.learning.outcomes import (Decision, call_paid, call_result, label_decision,
                                   outcome_label)
from msd.ml.features import BUY, FEATURE_NAMES, NEITHER, SELL
from msd.ml.roundtrips import TradeFill, RoundTripTally, fifo_round_trips
from msd.ml.training import NotTrainable, TrainingParams, fit_and_evaluate
from tests.learning_data import snapshot_of

D = Decimal
T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
PARAMS = TrainingParams(horizon_s=900, max_bar_lag_s=120, round_trip_fee_pct=0.2,
                        cost_window_s=3600, cost_min_fills=3)


def decision(i: int, *, side: str = "buy", price: float = 100.0, close: float | None = 101.0,
             snapshot: dict | None = None, mode: str = "warmup", amount: float = 10.0,
             confidence: float = 0.6, fills: int = 1) -> Decision:
    features = np.linspace(-0.5, 0.5, len(FEATURE_NAMES)) + 0.01 * i
    features[FEATURE_NAMES.index("spread_pct")] = 0.01 * (i + 1)  # a spread is never negative
    return Decision(f"s-{i}", "momentum_v1", "BTCUSDT", side, T0 + timedelta(minutes=i),
                    snapshot if snapshot is not None else snapshot_of(features, price),
                    amount, mode, None, confidence, close, fills, amount if fills else None)


@pytest.mark.parametrize("move, cost, expected", [
    (0.010, 0.002, BUY), (-0.010, 0.002, SELL), (0.001, 0.002, NEITHER), (-0.001, 0.002, NEITHER),
    (0.002, 0.002, NEITHER),            # exactly the cost does not pay
    (0.0021, 0.002, BUY), (0.0, 0.0, NEITHER), (1e-9, 0.0, BUY),
])
def test_outcome_is_the_side_that_paid_after_costs(move, cost, expected):
    assert outcome_label(move, cost) == expected


@pytest.mark.parametrize("side, label, paid", [
    ("buy", BUY, True), ("buy", SELL, False), ("buy", NEITHER, False),
    ("sell", SELL, True), ("sell", BUY, False), ("sell", NEITHER, False),
])
def test_a_call_paid_only_when_its_side_paid(side, label, paid):
    assert call_paid(side, label) is paid


def test_label_depends_on_the_decided_side():
    """Regression (issue 9, defect 1): the label measured the move from the side-dependent
    execution price, so "up" needed a bigger move after a buy than after a sell. Now the
    same market move gets the same outcome whatever was decided."""
    buy, sell = decision(0, side="buy", close=100.15), replace(decision(0), side="sell", horizon_close=100.15)
    assert label_decision(buy, 0.001).label == label_decision(sell, 0.001).label == BUY
    assert label_decision(buy, 0.001).move == pytest.approx(0.0015)
    # and the decided side is never a feature
    assert not {"side", "signal_type", "execution_price", "slippage", "entry_price"} & set(FEATURE_NAMES)


def test_fills_never_enter_an_outcome():
    """Regression (issue 9, defect 1): fills after the horizon were averaged into the entry
    price. Fills only feed the cost estimate, and only those executed before the decision."""
    rows = [decision(i, close=100.5) for i in range(5)]
    late = [CostFill(T0 + timedelta(hours=5), "buy", 1.0, 150.0, 1.0, 100.0)]   # after everything
    labelled_without = label_all(rows, [], PARAMS)
    labelled_with = label_all(rows, late * 10, PARAMS)
    assert [(r.move, r.cost, r.label) for r in labelled_without] == \
        [(r.move, r.cost, r.label) for r in labelled_with]


def test_warmup_result_is_amount_times_move_in_the_called_direction_minus_cost():
    assert call_result(10.0, "buy", 0.01, 0.002) == pytest.approx(0.08)
    assert call_result(10.0, "sell", 0.01, 0.002) == pytest.approx(-0.12)
    assert call_result(10.0, "sell", -0.001, 0.002) == pytest.approx(-0.01)   # paid direction, not the cost


# ----- costs ------------------------------------------------------------------------------
def cost_fill(minute: float, side="buy", price=100.1, fee=0.1, snapshot=100.0, quantity=1.0):
    return CostFill(T0 + timedelta(minutes=minute), side, quantity, price, fee, snapshot)


@pytest.mark.parametrize("fill, expected", [
    (cost_fill(0, "buy", 100.1, 0.1), 0.001 + 0.1 / 100.1),      # bought above the decision price
    (cost_fill(0, "sell", 99.9, 0.1), 0.001 + 0.1 / 99.9),       # sold below it
    (cost_fill(0, "buy", 99.9, 0.0), -0.001),                    # price improvement lowers the cost
    (cost_fill(0, "buy", 100.0, 0.1, snapshot=0.0), None),       # unusable reference
])
def test_one_way_cost_is_fee_plus_adverse_slippage_against_the_decision_price(fill, expected):
    cost = one_way_cost(fill)
    assert cost == (None if expected is None else pytest.approx(expected))


def test_cost_is_the_floor_until_enough_fills_then_twice_the_mean_one_way_cost():
    fills = [cost_fill(m, price=100.3, fee=0.0) for m in (0, 1, 2, 3)]      # 0.3 % one way
    moments = [T0 + timedelta(minutes=m) for m in (0, 1.5, 3, 3.5, 70)]
    costs = list(costs_for(moments, fills, floor=0.002, window_s=3600, min_fills=3))
    assert costs[0] == costs[1] == 0.002            # 0 and 2 fills before: the floor
    assert costs[2] == pytest.approx(0.006)         # fills at 0, 1, 2 (the one at 3 is not before)
    assert costs[3] == pytest.approx(0.006)
    assert costs[4] == 0.002                        # older than the window: back to the floor


def test_cost_estimate_never_goes_below_the_floor():
    rolling = RollingCost(0.002, 3600, 1)
    rolling.add(cost_fill(0, price=99.0, fee=0.0))       # a lucky fill: negative cost
    assert rolling.at(T0 + timedelta(minutes=1)) == 0.002


def test_dataset_costs_come_from_the_strategys_own_fills_before_each_decision():
    rows = [decision(i, close=100.5) for i in range(10)]
    fills = [cost_fill(i - 0.5, price=100.2, fee=0.0) for i in range(10)]   # 0.2 % one way
    data = build_dataset(rows, PARAMS, fills)
    assert data.costs[:2].tolist() == [0.002] * 2          # fewer than cost_min_fills before
    np.testing.assert_allclose(data.costs[2:], 0.004)
    assert data.y.tolist() == [BUY] * 10                    # +0.5 % clears 0.4 %


# ----- dataset assembly -------------------------------------------------------------------
def test_moves_inside_the_fee_band_are_kept_as_neither():
    """Regression (issue 9, defect 2): moves inside the fee band were removed from training
    and validation, so every figure was computed on outcomes selected after the fact."""
    rows = [decision(0, close=100.05), decision(1, side="sell", close=99.9), decision(2, close=101.0)]
    data = build_dataset(rows, PARAMS)
    assert data.n == 3 and data.y.tolist() == [NEITHER, NEITHER, BUY]


def test_missing_feature_rows_are_excluded_and_counted_by_name():
    complete = [decision(i) for i in range(3)]
    no_book = dict(complete[0].snapshot, orderbook_depth=None)
    no_vol = dict(complete[0].snapshot, volatility=None)
    rows = complete + [decision(3, snapshot=no_book), decision(4, snapshot=no_book),
                       decision(5, snapshot=no_vol)]
    dataset = build_dataset(rows, PARAMS)
    assert dataset.n == 3
    assert dataset.missing == {"book_imbalance": 2, "log_volatility": 1}
    assert dataset.signal_ids.tolist() == [b"s-0", b"s-1", b"s-2"]   # ASCII bytes (memory)


def test_rows_with_an_unusable_price_are_counted_not_fatal():
    no_price = dict(decision(2).snapshot, price="abc")
    dataset = build_dataset([decision(0), decision(1, close=0.0), decision(2, snapshot=no_price)], PARAMS)
    assert (dataset.n, dataset.bad_prices, dataset.signal_ids.tolist()) == (1, 2, [b"s-0"])


def test_rows_come_out_in_decision_time_order():
    dataset = build_dataset([decision(i) for i in (1, 3, 5)], PARAMS)
    assert dataset.signal_ids.tolist() == [b"s-1", b"s-3", b"s-5"]
    assert (np.diff(dataset.timestamps) > 0).all()


def test_single_class_training_window_is_not_trainable():
    rows = [decision(i, close=105.0) for i in range(40)]
    with pytest.raises(NotTrainable, match="single outcome class"):
        fit_and_evaluate(build_dataset(rows, PARAMS), TrainingParams(horizon_s=60, max_bar_lag_s=0,
                                                                     l2_grid=(1.0,)))


# ----- warm-up budget and live quality ----------------------------------------------------
def labelled(i, side, close, amount=10.0, mode="warmup", confidence=0.6):
    return label_decision(decision(i, side=side, close=close, mode=mode, amount=amount,
                                   confidence=confidence), 0.002)


def test_warmup_spend_is_minus_the_sum_of_results_since_the_budget_started():
    rows = [labelled(0, "buy", 101.0), labelled(1, "sell", 101.0), labelled(2, "buy", 100.1),
            labelled(3, "buy", 90.0, mode="model")]
    spend = warmup_spend(rows, T0, T0 + timedelta(hours=2))
    assert spend.calls == 3
    assert spend.spend_usdt == pytest.approx(-(10 * 0.008) + 10 * 0.012 + 10 * 0.001)
    later = warmup_spend(rows, T0 + timedelta(minutes=1), T0 + timedelta(hours=2))
    assert later.calls == 2 and later.elapsed_s == pytest.approx(7140)


@pytest.mark.parametrize("spend_usdt, elapsed_s, budget, max_s, cause", [
    (4.99, 100, D("5"), 3600, None),
    (5.00, 100, D("5"), 3600, "budget"),
    (-3.00, 3600, D("5"), 3600, "duration"),     # even a profitable warm-up ends: no model came
    (9.00, 9000, D("5"), 3600, "budget"),        # the budget is named first
])
def test_budget_verdict(spend_usdt, elapsed_s, budget, max_s, cause):
    from msd.learning.monitoring import WarmupSpend
    verdict = budget_verdict(WarmupSpend(spend_usdt, 7, T0, elapsed_s), budget, max_s)
    assert (verdict[0] if verdict else None) == cause
    if verdict:
        assert "without a promoted model" in verdict[1]


def test_live_quality_counts_calls_inside_the_cost_band_as_not_paid():
    rows = [labelled(0, "buy", 101.0, confidence=0.9), labelled(1, "buy", 100.1, confidence=0.9),
            labelled(2, "sell", 99.0, confidence=0.9), labelled(3, "sell", 101.0, confidence=0.9)]
    quality = live_quality(rows)
    assert (quality.n, quality.pay_rate) == (4, 0.5)
    assert quality.calibration_gap == pytest.approx(0.4)
    assert quality.calibration_status(min_samples=4, max_gap=0.1) == "miscalibrated"
    assert quality.calibration_status(min_samples=5, max_gap=0.1).startswith("too few")


def fill(side: str, quantity: str, price: str, fee: str, minute: int, asset="BTCUSDT") -> TradeFill:
    return TradeFill(asset, side, D(quantity), D(price), D(fee), T0 + timedelta(minutes=minute))


def test_fifo_pairs_oldest_lots_first_with_fees():
    trips = fifo_round_trips([
        fill("buy", "1", "100", "0.1", 0), fill("buy", "1", "110", "0.11", 1),
        fill("sell", "1.5", "120", "0.18", 2)])

    assert [(t.quantity, t.entry_price, t.exit_price) for t in trips] == [
        (D("1"), D("100"), D("120")), (D("0.5"), D("110"), D("120"))]
    # fees: entry share + exit share (0.12 per unit sold)
    assert trips[0].fees == D("0.1") + D("0.12")
    assert trips[0].pnl == D("20") - D("0.22")
    assert trips[1].pnl == D("5") - (D("0.055") + D("0.06"))


def test_fifo_shorts_and_assets_are_separate():
    trips = fifo_round_trips([
        fill("sell", "2", "50", "0", 0, "ETHUSDT"), fill("buy", "1", "100", "0", 1),
        fill("buy", "2", "40", "0", 2, "ETHUSDT")])
    [short] = trips
    assert (short.asset, short.direction, short.quantity, short.pnl) == (
        "ETHUSDT", "short", D("2"), D("20"))


def test_fifo_orders_fills_by_execution_time():
    late_sell, early_buy = fill("sell", "1", "90", "0", 5), fill("buy", "1", "100", "0", 0)
    [trip] = fifo_round_trips([late_sell, early_buy])
    assert (trip.direction, trip.pnl) == ("long", D("-10"))


def test_round_trip_tally_summary():
    tally = RoundTripTally()
    tally.add(fifo_round_trips([fill("buy", "1", "100", "0", 0), fill("sell", "1", "101", "0", 1),
                                fill("buy", "1", "100", "0", 2), fill("sell", "1", "99", "0", 3)]))
    assert tally.summary() == {"round_trips": 2.0, "pnl_total": 0.0, "pnl_mean": 0.0,
                               "hit_rate": 0.5}


def test_training_params_name_bad_values():
    with pytest.raises(ValueError, match=r"embargo_s: 60 is invalid; expected .*\[1200"):
        TrainingParams(horizon_s=900, max_bar_lag_s=300, embargo_s=60)
    with pytest.raises(ValueError, match="horizon_minutes"):
        TrainingParams.from_mapping({"horizon_minutes": 15})
    with pytest.raises(ValueError, match="^cost_min_fills: 0"):
        TrainingParams(cost_min_fills=0)
    params = TrainingParams.from_mapping({"l2_grid": [0.5], "min_accuracy": 0.8})
    assert params.l2_grid == (0.5,) and params.gate().min_accuracy == 0.8
