import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from msd.ml.features import (FEATURE_NAMES, FEATURE_VERSION, LABELS, MissingFeature,
                             features_from_snapshot, side_from_label)

DECIDED_AT = datetime(2025, 11, 20, 6, 0, tzinfo=timezone.utc)  # 06:00 = a quarter turn


def _snapshot(**overrides):
    snapshot = {
        "price": 95000.0, "spread": 0.02, "volume_24h": 12.5, "volatility": 0.0012,
        "orderbook_depth": {"bid_depth": 3.0, "ask_depth": 1.0},
        "technical_indicators": {"return_1m": 0.001, "return_5m": -0.002, "return_15m": 0.004,
                                 "sma_60m": 94000.0},
    }
    snapshot.update(overrides)
    return snapshot


def _named(vector):
    assert isinstance(vector, np.ndarray), vector
    return dict(zip(FEATURE_NAMES, vector))


def test_features_from_full_snapshot():
    features = _named(features_from_snapshot(_snapshot(), {"decided_at": DECIDED_AT}))
    assert features["spread_pct"] == 0.02
    assert features["log_volatility"] == pytest.approx(math.log(0.0012))
    assert features["book_imbalance"] == pytest.approx(0.5)
    assert (features["return_1m"], features["return_5m"], features["return_15m"]) == \
        (0.001, -0.002, 0.004)
    expected_z = math.log(95000 / 94000) / (0.0012 * math.sqrt(60))
    assert features["ma_deviation_z"] == pytest.approx(expected_z)
    assert features["hour_sin"] == pytest.approx(1.0)
    assert features["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert FEATURE_VERSION and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_wire_forms_give_the_same_vector():
    as_floats = features_from_snapshot(_snapshot(), {"decided_at": DECIDED_AT})
    wire = _snapshot(price="95000.0", spread=Decimal("0.02"), volatility="0.0012",
                     orderbook_depth={"bid_depth": "3", "ask_depth": Decimal("1")})
    local = DECIDED_AT.astimezone(timezone(timedelta(hours=3)))
    np.testing.assert_allclose(features_from_snapshot(wire, {"decided_at": local}), as_floats)


def test_scale_free_same_features_for_a_cheaper_asset():
    context = {"decided_at": DECIDED_AT}
    btc = features_from_snapshot(_snapshot(), context)
    scaled = _snapshot(price=95.0, technical_indicators={
        **_snapshot()["technical_indicators"], "sma_60m": 94.0})
    np.testing.assert_allclose(features_from_snapshot(scaled, context), btc)


def test_zero_volatility_stays_finite():
    vector = features_from_snapshot(_snapshot(volatility=0), {"decided_at": DECIDED_AT})
    assert np.isfinite(vector).all()


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


INDICATORS = _snapshot()["technical_indicators"]


@pytest.mark.parametrize("snapshot, context, feature", [
    (_without(_snapshot(), "price"), {"decided_at": DECIDED_AT}, "ma_deviation_z"),
    (_snapshot(price=0), {"decided_at": DECIDED_AT}, "ma_deviation_z"),
    (_snapshot(spread=None), {"decided_at": DECIDED_AT}, "spread_pct"),
    (_snapshot(spread=-0.1), {"decided_at": DECIDED_AT}, "spread_pct"),
    (_without(_snapshot(), "volatility"), {"decided_at": DECIDED_AT}, "log_volatility"),
    (_snapshot(volatility="NaN"), {"decided_at": DECIDED_AT}, "log_volatility"),
    (_snapshot(volatility=True), {"decided_at": DECIDED_AT}, "log_volatility"),
    (_snapshot(orderbook_depth=None), {"decided_at": DECIDED_AT}, "book_imbalance"),
    (_snapshot(orderbook_depth={"bid_depth": 0, "ask_depth": 0}), {"decided_at": DECIDED_AT},
     "book_imbalance"),
    (_snapshot(technical_indicators=None), {"decided_at": DECIDED_AT}, "return_1m"),
    (_snapshot(technical_indicators=_without(INDICATORS, "return_5m")),
     {"decided_at": DECIDED_AT}, "return_5m"),
    (_snapshot(technical_indicators={**INDICATORS, "return_15m": "n/a"}),
     {"decided_at": DECIDED_AT}, "return_15m"),
    (_snapshot(technical_indicators=_without(INDICATORS, "sma_60m")),
     {"decided_at": DECIDED_AT}, "ma_deviation_z"),
    (_snapshot(), {}, "hour_sin"),
    (_snapshot(), {"decided_at": datetime(2025, 11, 20, 6, 0)}, "hour_sin"),  # naive time
])
def test_missing_feature_is_named_never_zero(snapshot, context, feature):
    result = features_from_snapshot(snapshot, context)
    assert isinstance(result, MissingFeature)
    assert result.name == feature and result.name in FEATURE_NAMES and result.reason


def test_feature_names_exclude_execution_side_slippage_and_price():
    forbidden = ("side", "signal_type", "direction", "executed", "execution", "slippage",
                 "fill", "average_price", "fee", "pnl", "label", "paid", "outcome")
    for name in FEATURE_NAMES:
        assert not any(word in name for word in forbidden), name


def test_execution_fields_in_the_input_are_ignored():
    context = {"decided_at": DECIDED_AT}
    clean = features_from_snapshot(_snapshot(), context)
    leaky = _snapshot(side="buy", execution_price=96000.0, slippage=0.01, signal_type="sell")
    leaky_context = {**context, "side": "buy", "paid": True, "execution_price": 96000.0}
    np.testing.assert_array_equal(features_from_snapshot(leaky, leaky_context), clean)


def test_label_mapping_names_the_side_that_paid():
    assert LABELS == {"sell": 0, "buy": 1, "neither": 2}
    for side in ("sell", "buy"):
        assert side_from_label(LABELS[side]) == side
    assert side_from_label(np.int64(1)) == "buy"


@pytest.mark.parametrize("label", [-1, 2, "buy", 1.0, None])
def test_side_from_label_refuses_other_encodings(label):
    with pytest.raises(ValueError, match="label"):
        side_from_label(label)
