"""Warm-up heuristics: direction rules, randomness, confidence range and seeded determinism."""
import random
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from msd.market.state import MarketSnapshot
from msd.strategies.heuristics import Heuristic
from msd.strategies.params import WarmupParams

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def snap(r1=None, r5=None, volatility=None):
    return MarketSnapshot(asset="BTCUSDT", at=T0, price=D("100"), mid=D("100"), bid=D("99.9"),
                          ask=D("100.1"), spread_pct=D("0.2"), volume_24h=D("10"),
                          volatility=volatility, returns={"1m": r1, "5m": r5, "15m": None},
                          orderbook_depth={"bid_depth": D("1"), "ask_depth": D("1")},
                          age_seconds=1.0)


def params(heuristic, randomness=0.0, **extra):
    return WarmupParams(min_amount_usdt=D("10"), max_amount_usdt=D("20"),
                        max_exposure_usdt=D("100"), heuristic=heuristic,
                        randomness=randomness, **extra)


@pytest.mark.parametrize("heuristic, snapshot, expected_side", [
    (Heuristic.MOMENTUM, snap(r5=0.002), "buy"),
    (Heuristic.MOMENTUM, snap(r5=-0.002), "sell"),
    (Heuristic.MOMENTUM, snap(r1=0.001), "buy"),              # falls back to 1m
    (Heuristic.MOMENTUM, snap(r1=-0.001, r5=0.003), "buy"),   # 5m preferred
    (Heuristic.MOMENTUM, snap(), None),                       # no bars yet: no opinion
    (Heuristic.MOMENTUM, snap(r5=0.0), None),
    (Heuristic.MEAN_REVERSION, snap(r5=0.01, volatility=0.001), "sell"),    # z = +4.5
    (Heuristic.MEAN_REVERSION, snap(r5=-0.01, volatility=0.001), "buy"),
    (Heuristic.MEAN_REVERSION, snap(r5=0.001, volatility=0.001), None),     # z = 0.45: not stretched
    (Heuristic.MEAN_REVERSION, snap(r5=0.01), None),                        # no volatility
    (Heuristic.MEAN_REVERSION, snap(r1=-0.003, volatility=0.001), "buy"),   # 1m, z = -3
])
def test_heuristic_direction(heuristic, snapshot, expected_side):
    decision = heuristic.decide(snapshot, random.Random(1), params(heuristic))
    assert (decision.side if decision else None) == expected_side


def test_mean_reversion_threshold_is_configurable():
    decision = Heuristic.MEAN_REVERSION.decide(snap(r5=0.01, volatility=0.001), random.Random(1),
                                               params(Heuristic.MEAN_REVERSION, stretch_z=5.0))
    assert decision is None


def side_counts(heuristic, snapshot, randomness, n=4000, seed=3):
    rng, p = random.Random(seed), params(heuristic, randomness)
    return Counter(heuristic.decide(snapshot, rng, p).side for _ in range(n))


@pytest.mark.parametrize("heuristic, snapshot, randomness, expected_buy_share", [
    (Heuristic.MOMENTUM, snap(r5=0.002), 0.0, 1.0),
    (Heuristic.MOMENTUM, snap(r5=0.002), 0.5, 0.75),    # flips with probability 0.25
    (Heuristic.MOMENTUM, snap(r5=0.002), 1.0, 0.5),
    (Heuristic.MEAN_REVERSION, snap(r5=-0.01, volatility=0.001), 0.4, 0.8),
    (Heuristic.RANDOM, snap(), 0.0, 0.5),
    (Heuristic.RANDOM, snap(), 1.0, 0.5),
])
def test_randomness_flips_with_probability_half_randomness(heuristic, snapshot, randomness,
                                                          expected_buy_share):
    counts = side_counts(heuristic, snapshot, randomness)
    assert counts["buy"] / 4000 == pytest.approx(expected_buy_share, abs=0.03)


@pytest.mark.parametrize("heuristic", list(Heuristic))
def test_confidence_within_configured_range(heuristic):
    rng = random.Random(9)
    p = params(heuristic, randomness=0.5, confidence_min=0.55, confidence_max=0.65)
    snapshot = snap(r5=0.01, volatility=0.001)
    confidences = [heuristic.decide(snapshot, rng, p).confidence for _ in range(500)]
    assert all(0.55 <= c <= 0.65 for c in confidences)
    assert max(confidences) - min(confidences) > 0.05    # drawn, not constant


@pytest.mark.parametrize("heuristic", list(Heuristic))
def test_same_seed_same_decisions(heuristic):
    snapshot, p = snap(r5=0.01, volatility=0.001), params(heuristic, randomness=0.7)

    def sequence(seed):
        rng = random.Random(seed)
        return [heuristic.decide(snapshot, rng, p) for _ in range(50)]

    assert sequence(11) == sequence(11)
    assert sequence(11) != sequence(12)
