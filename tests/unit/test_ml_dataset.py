"""Dataset building, labels after fees, FIFO round trips and training parameters (pure)."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from msd.ml.dataset import Outcome, build_dataset, outcome_label, side_paid
from msd.ml.features import FEATURE_NAMES, LABELS
from msd.ml.roundtrips import Fill, RoundTripTally, fifo_round_trips
from msd.ml.training import NotTrainable, TrainingParams, fit_and_evaluate
from tests.learning_data import snapshot_of

D = Decimal
T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def outcome(i: int, *, side: str = "buy", entry: float = 100.0, exit_: float = 101.0,
            snapshot: dict | None = None) -> Outcome:
    features = np.linspace(-0.5, 0.5, len(FEATURE_NAMES)) + 0.01 * i
    features[FEATURE_NAMES.index("spread_pct")] = 0.01 * (i + 1)  # a spread is never negative
    return Outcome(f"s-{i}", "BTCUSDT", side, T0 + timedelta(minutes=i),
                   snapshot if snapshot is not None else snapshot_of(features, 100.0),
                   entry, exit_)


def test_executed_side_is_never_a_feature():
    # Regression: the previous implementation fed the executed side in as a feature and then
    # asked the model to predict it. Same decisions, other side and execution price: same X;
    # and with moves well past the fees the label is the market's direction, not the side.
    decisions = [outcome(i, exit_=101.0 + i % 2 * -2.0) for i in range(20)]
    flipped = [replace(o, side="sell", entry_price=o.entry_price * 1.001) for o in decisions]

    original, other = build_dataset(decisions, 0.002), build_dataset(flipped, 0.002)

    np.testing.assert_array_equal(original.X, other.X)
    np.testing.assert_array_equal(original.y, other.y)
    np.testing.assert_array_equal(original.y, [1, 0] * 10)
    assert not {"side", "signal_type", "execution_price", "slippage", "entry_price"} & set(FEATURE_NAMES)


@pytest.mark.parametrize("side, exit_, fee, expected", [
    ("buy", 101.0, 0.002, LABELS["buy"]),     # up 1%: the buy paid
    ("sell", 101.0, 0.002, LABELS["buy"]),    # up 1%: the sell lost, so the market went up
    ("sell", 99.0, 0.002, LABELS["sell"]),
    ("buy", 100.1, 0.002, LABELS["sell"]),    # +0.1% does not cover a 0.2% round trip
    ("buy", 100.1, 0.0, LABELS["buy"]),
])
def test_label_is_the_direction_that_paid_after_fees(side, exit_, fee, expected):
    assert outcome_label(outcome(0, side=side, exit_=exit_), fee) == expected


def test_forward_return_starts_at_the_execution_price():
    filled_high = outcome(0, side="buy", entry=100.5, exit_=100.6)
    assert filled_high.forward_return == pytest.approx(0.1 / 100.5)
    assert not side_paid("buy", filled_high.forward_return, 0.002)


def test_missing_feature_rows_are_excluded_and_counted_by_name():
    complete = [outcome(i) for i in range(3)]
    no_book = dict(complete[0].snapshot, orderbook_depth=None)
    no_vol = dict(complete[0].snapshot, volatility=None)
    rows = complete + [outcome(3, snapshot=no_book), outcome(4, snapshot=no_book),
                       outcome(5, snapshot=no_vol)]

    dataset = build_dataset(rows, 0.002)

    assert dataset.n == 3
    assert dataset.missing == {"book_imbalance": 2, "log_volatility": 1}
    assert dataset.signal_ids == ("s-0", "s-1", "s-2")
    assert np.isfinite(dataset.X).all()


def test_rows_with_an_unusable_price_are_counted_not_fatal():
    dataset = build_dataset([outcome(0), outcome(1, exit_=0.0)], 0.002)
    assert (dataset.n, dataset.bad_prices, dataset.signal_ids) == (1, 1, ("s-0",))


def test_rows_come_out_in_decision_time_order():
    rows = [outcome(i) for i in (5, 1, 3)]
    dataset = build_dataset(rows, 0.002)
    assert dataset.signal_ids == ("s-1", "s-3", "s-5")
    assert (np.diff(dataset.timestamps) > 0).all()


def fill(side: str, quantity: str, price: str, fee: str, minute: int, asset="BTCUSDT") -> Fill:
    return Fill(asset, side, D(quantity), D(price), D(fee), T0 + timedelta(minutes=minute))


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


def test_training_params_refuse_an_embargo_shorter_than_the_horizon():
    with pytest.raises(ValueError, match=r"embargo_s: 60 is invalid; expected .*\[900"):
        TrainingParams(horizon_s=900, embargo_s=60)


def test_training_params_from_mapping_names_unknown_keys():
    with pytest.raises(ValueError, match="horizon_minutes"):
        TrainingParams.from_mapping({"horizon_minutes": 15})
    params = TrainingParams.from_mapping({"l2_grid": [0.5], "min_accuracy": 0.8})
    assert params.l2_grid == (0.5,) and params.gate().min_accuracy == 0.8
    assert params.embargo == params.horizon_s


def test_single_class_training_window_is_not_trainable():
    rows = [outcome(i, side="buy", exit_=105.0) for i in range(40)]
    with pytest.raises(NotTrainable, match="single class"):
        fit_and_evaluate(build_dataset(rows, 0.002),
                         TrainingParams(horizon_s=60, l2_grid=(1.0,)))


def test_moves_inside_the_fee_band_are_left_out_not_labelled_as_the_opposite_side():
    """Regression: a move smaller than the fees was labelled "the other side would have paid",
    so a model could learn to bet against the warm-up heuristic's own feature and pass the gate."""
    rows = [outcome(0, side="buy", exit_=100.05),      # +0.05 %: inside a 0.2 % round-trip fee
            outcome(1, side="sell", exit_=99.9),       # -0.1 %: inside
            outcome(2, side="buy", exit_=101.0)]       # +1 %: the buy paid
    data = build_dataset(rows, round_trip_fee=0.002)
    assert data.signal_ids == ("s-2",)
    assert data.inside_fee_band == 2
