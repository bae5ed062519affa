"""Strategy evaluation with rate limits and conflicts; five strategies side by side (SC-010)."""
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.market.state import MarketSnapshot, Unavailable
from msd.strategies import engine
from msd.strategies.conflicts import ConflictPolicy, ConflictRules
from msd.strategies.engine import Drop, Emit, SharedLimits
from msd.strategies.params import StrategyParams
from msd.values.bucket import TokenBucket
from msd.strategies.warmup import ExposureUnknown

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
ASSETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")


def snap(asset="BTCUSDT", r5=0.002):
    return MarketSnapshot(asset=asset, at=T0, price=D("100"), mid=D("100"), bid=D("99.9"),
                          ask=D("100.1"), spread_pct=D("0.2"), volume_24h=D("10"),
                          volatility=0.001, returns={"1m": r5, "5m": r5, "15m": None},
                          orderbook_depth={"bid_depth": D("1"), "ask_depth": D("2")},
                          age_seconds=0.5)


def strategy(sid, assets=("BTCUSDT",), heuristic="random", rate=1.0, burst=5, frequency_s=0.001,
             seed=None, randomness=0.2):
    return StrategyParams.from_mapping({
        "id": sid, "assets": list(assets), "trigger": "market", "seed": seed,
        "rate": {"rate_per_s": rate, "burst": burst},
        "warmup": {"min_amount_usdt": 10, "max_amount_usdt": 20, "max_exposure_usdt": 10 ** 6,
                   "heuristic": heuristic, "frequency_s": frequency_s, "randomness": randomness}})


def limits(rate=1000.0, burst=1000, policy=ConflictPolicy.SUPPRESS_LATER):
    return SharedLimits(global_rate=TokenBucket(rate, burst), conflicts=ConflictRules(policy, 60))


class Harness:
    """Holds the states the signaller role would hold; evaluates with an injected clock."""

    def __init__(self, strategies, shared_limits):
        self.params = {s.id: s for s in strategies}
        self.runtimes = {s.id: engine.start_runtime(s, T0) for s in strategies}
        self.rngs = {s.id: random.Random(s.seed) for s in strategies}
        self.limits, self.shared = shared_limits, engine.start_shared(shared_limits)

    def evaluate(self, sid, market, now, exposure=D("0")):
        result = engine.evaluate(self.params[sid], self.runtimes[sid], self.limits, self.shared,
                                 market, exposure, self.rngs[sid], now)
        self.runtimes[sid], self.shared = result.runtime, result.shared
        return result.outcome


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def five_strategies():
    heuristics = ("momentum", "mean_reversion", "random", "random", "momentum")
    return [strategy(f"s{i}", assets=(ASSETS[i], ASSETS[(i + 1) % 5]), heuristic=heuristics[i],
                     rate=0.02, burst=2, frequency_s=60, seed=100 + i) for i in range(5)]


def run_minutes(harness, ids, minutes=10):
    """Market-triggered evaluations every 5 s for each strategy on each of its assets."""
    log = {sid: [] for sid in ids}
    for step in range(minutes * 12):
        for sid in ids:
            for asset in harness.params[sid].assets:
                r5 = 0.05 if step % 2 else -0.05     # alternating stretched moves
                outcome = harness.evaluate(sid, snap(asset, r5), at(step * 5))
                log[sid].append(outcome)
    return log


def test_five_strategies_run_together_exactly_as_each_runs_alone():
    together = run_minutes(Harness(five_strategies(), limits(policy=ConflictPolicy.ALLOW)),
                           [f"s{i}" for i in range(5)])
    for i, params in enumerate(five_strategies()):
        alone = run_minutes(Harness([params], limits(policy=ConflictPolicy.ALLOW)), [params.id])
        assert together[params.id] == alone[params.id]
        emitted = [o for o in alone[params.id] if isinstance(o, Emit)]
        assert emitted, params.id
        # One bucket per strategy covers both its assets: burst + rate x 10 minutes at most.
        assert len(emitted) <= 2 + 0.02 * 600
        assert any(o == Drop(params.id, o.asset, "throttled_strategy") for o in alone[params.id])


def test_throttling_one_strategy_leaves_the_others_alone():
    harness = Harness([strategy("busy", burst=2, rate=0.01), strategy("calm", assets=("ETHUSDT",))],
                      limits())
    busy = [harness.evaluate("busy", snap("BTCUSDT"), at(i)) for i in range(6)]
    calm = [harness.evaluate("calm", snap("ETHUSDT"), at(i)) for i in range(6)]
    assert [type(o) for o in busy] == [Emit, Emit] + [Drop] * 4
    assert {o.reason for o in busy[2:]} == {"throttled_strategy"}
    assert all(isinstance(o, Emit) for o in calm)


def test_global_bucket_caps_all_strategies_together():
    harness = Harness([strategy(f"s{i}", assets=(ASSETS[i],)) for i in range(5)],
                      limits(rate=0.001, burst=3))
    outcomes = [harness.evaluate(f"s{i}", snap(ASSETS[i]), at(0)) for i in range(5)]
    assert [type(o) for o in outcomes] == [Emit] * 3 + [Drop] * 2
    assert {o.reason for o in outcomes[3:]} == {"throttled_global"}
    # the globally throttled strategies kept their own tokens
    assert harness.runtimes["s3"].bucket == engine.start_runtime(harness.params["s3"], T0).bucket


@pytest.mark.parametrize("policy, expected_second", [
    (ConflictPolicy.SUPPRESS_LATER, "conflict:up"),
    (ConflictPolicy.ALLOW, None),
])
def test_conflicting_strategies(policy, expected_second):
    harness = Harness([strategy("up", heuristic="momentum", randomness=0),
                       strategy("down", heuristic="mean_reversion", randomness=0)],
                      limits(policy=policy))
    first = harness.evaluate("up", snap(r5=0.05), at(0))
    second = harness.evaluate("down", snap(r5=0.05), at(10))
    assert isinstance(first, Emit) and first.planned.side == "buy"
    if expected_second is None:
        assert isinstance(second, Emit) and second.planned.side == "sell"
    else:
        assert second == Drop("down", "BTCUSDT", expected_second)
        # suppressed: no token used, no frequency clock started
        assert harness.runtimes["down"] == engine.start_runtime(harness.params["down"], T0)


@pytest.mark.parametrize("market, exposure, reason", [
    (Unavailable("BTCUSDT", "stale"), D("0"), "stale"),
    (Unavailable("BTCUSDT", "no_data"), D("0"), "no_data"),
    (snap(), ExposureUnknown(), "exposure_unknown"),
    (snap(), D("999995"), "exposure_limit"),
])
def test_drops_carry_the_reason_and_leave_state_untouched(market, exposure, reason):
    harness = Harness([strategy("s")], limits())
    before = (harness.runtimes["s"], harness.shared)
    assert harness.evaluate("s", market, at(0), exposure) == Drop("s", "BTCUSDT", reason)
    assert (harness.runtimes["s"], harness.shared) == before


def test_emit_carries_the_wire_snapshot_and_starts_the_frequency_clock():
    params = strategy("s", frequency_s=60)
    harness = Harness([params], limits())
    outcome = harness.evaluate("s", snap(), at(0))
    assert isinstance(outcome, Emit) and outcome.snapshot.to_wire()["price"] == 100.0
    assert not engine.is_due(params, harness.runtimes["s"], "BTCUSDT", at(59))
    assert engine.is_due(params, harness.runtimes["s"], "ETHUSDT", at(59))   # per asset
    assert engine.is_due(params, harness.runtimes["s"], "BTCUSDT", at(60))
    assert harness.evaluate("s", snap(), at(30)) == Drop("s", "BTCUSDT", "frequency")


def test_reload_keeps_earned_tokens_clipped_to_new_burst():
    old = strategy("s", burst=5, rate=0.001)
    harness = Harness([old], limits())
    harness.evaluate("s", snap(), at(0))                       # 4 tokens left
    new = strategy("s", burst=2, rate=0.001)
    runtime = engine.retune_runtime(new, harness.runtimes["s"])
    harness.params["s"], harness.runtimes["s"] = new, runtime
    outcomes = [harness.evaluate("s", snap(), at(1 + i)) for i in range(3)]
    assert [type(o) for o in outcomes] == [Emit, Emit, Drop]
    shared = engine.retune_shared(limits(burst=1), harness.shared)
    assert shared.global_bucket.tokens <= 1
