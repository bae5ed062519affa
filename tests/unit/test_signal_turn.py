"""The signaller's turn as one step (msd.strategies.signal_turn), on hand-built snapshots with an
event-time `now`: which strategies are evaluated on which assets, what the caller is asked for,
and the effects (signals with their mode, drops with reasons, random streams that drew)."""
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.market.state import MarketSnapshot, Unavailable
from msd.strategies import signal_turn
from msd.strategies.conflicts import ConflictPolicy, ConflictRules
from msd.strategies.engine import SharedLimits
from msd.strategies.model_plan import ModelCall
from msd.strategies.params import StrategyParams
from msd.strategies.signal_turn import Dropped, Emitted, Failed, NotDue, Turn
from msd.strategies.warmup import ExposureUnknown, Planned
from msd.values.bucket import TokenBucket

T0 = datetime(2017, 11, 6, 16, 28, tzinfo=timezone.utc)      # event time, as a backtest passes it
LIMITS = SharedLimits(TokenBucket(1000.0, 1000), ConflictRules(ConflictPolicy.ALLOW, 60))


def strategy(sid, trigger="schedule", assets=("BTCUSDT",), heuristic="momentum", frequency_s=0.5, cap=10 ** 6):
    """Momentum without randomness: a buy on a rising market, always 10 USDT."""
    return StrategyParams.from_mapping({
        "id": sid, "assets": list(assets), "trigger": trigger, "seed": 7, "rate": {"rate_per_s": 100, "burst": 100},
        "warmup": {"min_amount_usdt": 10, "max_amount_usdt": 10, "max_exposure_usdt": cap, "heuristic": heuristic,
                   "frequency_s": frequency_s, "randomness": 0.0}})


def snap(asset, now):
    return MarketSnapshot(asset=asset, at=now, price=D(100), mid=D(100), bid=D("99.9"), ask=D("100.1"),
                          spread_pct=D("0.2"), volume_24h=D(10), volatility=0.001,
                          returns={"1m": 0.002, "5m": 0.002, "15m": 0.002},
                          orderbook_depth={"bid_depth": D(1), "ask_depth": D(1)}, age_seconds=0.0)


def model_plan(snapshot, exposure, last_signal_at):
    return Planned("sell", D(12), 0.8, "model v3", call=ModelCall(3, 0.1, 0.8, 0.1))


class Caller:
    """The caller's side: snapshots, an exposure per asset, the streams, the model plans; it
    records what the step asked for."""

    def __init__(self, strategies, exposure=D(0), unavailable=(), paused=(), not_ready=(), in_model=(),
                 failing=()):
        self.strategies, self.paused, self.asked = strategies, set(paused), []
        self.exposure_value, self.unavailable, self.failing = exposure, set(unavailable), set(failing)
        self.rngs = {p.id: random.Random(p.seed) for p in strategies if p.id not in not_ready}
        self.in_model = set(in_model)

    def inputs(self, now):
        def snapshot(asset):
            if asset in self.failing:
                raise ValueError(f"bad market state for {asset}")
            return Unavailable(asset, "stale") if asset in self.unavailable else snap(asset, now)

        def exposure(sid, asset, price):
            self.asked.append((sid, asset, price))
            return self.exposure_value
        return signal_turn.TurnInputs(self.strategies, LIMITS, self.paused, snapshot, exposure, self.rngs.get,
                                      lambda p: model_plan if p.id in self.in_model else None)


def outline(effect):
    """What a row of the table names: the effect's kind and its deciding fields."""
    if isinstance(effect, Emitted):
        s = effect.signal
        return ("emit", effect.params.id, s.asset, s.signal_type, s.amount, effect.mode, effect.drew)
    if isinstance(effect, Dropped):
        return ("drop", effect.params.id, effect.asset, effect.reason, effect.drew)
    if isinstance(effect, NotDue):
        return ("not_due", effect.params.id, effect.asset)
    return ("failed", effect.params.id, effect.asset, type(effect.error).__name__)


SCHED, MARKET = strategy("sched"), strategy("mkt", trigger="market")
TWO_ASSETS = strategy("pair", assets=("BTCUSDT", "ETHUSDT"))
CAPPED = (strategy("first", cap=15), strategy("second", cap=15))

CASES = [
    # name, strategies, caller options, event, effects
    ("schedule fires without a market change, market does not", [SCHED, MARKET], {}, Turn(set()),
     [("emit", "sched", "BTCUSDT", "buy", D(10), "warmup", True)]),
    ("a market change fires both", [SCHED, MARKET], {}, Turn({"BTCUSDT"}),
     [("emit", "sched", "BTCUSDT", "buy", D(10), "warmup", True),
      ("emit", "mkt", "BTCUSDT", "buy", D(10), "warmup", True)]),
    ("a paused strategy is skipped", [SCHED, MARKET], {"paused": {"sched"}}, Turn({"BTCUSDT"}),
     [("emit", "mkt", "BTCUSDT", "buy", D(10), "warmup", True)]),
    ("a stream not restored yet is not evaluated", [SCHED, MARKET], {"not_ready": {"mkt"}}, Turn({"BTCUSDT"}),
     [("emit", "sched", "BTCUSDT", "buy", D(10), "warmup", True)]),
    ("the turn's first signal counts toward the next strategy's cap", list(CAPPED), {}, Turn(set()),
     [("emit", "first", "BTCUSDT", "buy", D(10), "warmup", True),
      ("drop", "second", "BTCUSDT", "exposure_limit", True)]),
    ("an exposure of 6 leaves room for neither", list(CAPPED), {"exposure": D(6)}, Turn(set()),
     [("drop", "first", "BTCUSDT", "exposure_limit", True), ("drop", "second", "BTCUSDT", "exposure_limit", True)]),
    ("unknown exposure: dropped before drawing", [SCHED], {"exposure": ExposureUnknown("db down")}, Turn(set()),
     [("drop", "sched", "BTCUSDT", "exposure_unknown", False)]),
    ("an unavailable snapshot drops with its reason, no exposure asked", [SCHED], {"unavailable": {"BTCUSDT"}},
     Turn(set()), [("drop", "sched", "BTCUSDT", "stale", False)]),
    ("model mode: the planner's call, sent as a model signal", [SCHED], {"in_model": {"sched"}}, Turn(set()),
     [("emit", "sched", "BTCUSDT", "sell", D(12), "model", False)]),
    ("a failing evaluation is reported, the next asset still decided", [TWO_ASSETS], {"failing": {"BTCUSDT"}},
     Turn(set()), [("failed", "pair", "BTCUSDT", "ValueError"), ("emit", "pair", "ETHUSDT", "buy", D(10), "warmup",
                                                                     True)]),
    ("a no-trade period (the backtest's gap) is not decided on", [TWO_ASSETS], {},
     Turn({"BTCUSDT", "ETHUSDT"}, tradable={"ETHUSDT"}), [("emit", "pair", "ETHUSDT", "buy", D(10), "warmup", True)]),
]


@pytest.mark.parametrize("name, strategies, options, event, expected", CASES, ids=[c[0] for c in CASES])
def test_one_turn(name, strategies, options, event, expected):
    caller = Caller(strategies, **options)
    turned = signal_turn.step(signal_turn.start(strategies, LIMITS, T0), event, T0, caller.inputs(T0))
    assert [outline(e) for e in turned.effects] == expected
    evaluated_on_a_snapshot = [(o[1], o[2]) for o in expected
                               if o[0] == "emit" or (o[0] == "drop" and o[3] != "stale")]
    assert [(sid, asset) for sid, asset, _ in caller.asked] == evaluated_on_a_snapshot
    stamped = {(o[1], o[2]) for o in expected if o[0] != "not_due"}      # either trigger, once past the due check
    assert set(turned.state.last_attempt) == stamped
    assert all(at == T0 for at in turned.state.last_attempt.values())


def test_signal_reasoning_shows_the_exposure_after_the_turns_earlier_signals():
    strategies = [strategy("first"), strategy("second")]
    caller = Caller(strategies, exposure=D(5))
    turned = signal_turn.step(signal_turn.start(strategies, LIMITS, T0), Turn(set()), T0, caller.inputs(T0))
    assert ["exposure 5 USDT" in e.signal.metadata["reasoning"] for e in turned.effects] == [True, False]
    assert "exposure 15.00 USDT" in turned.effects[1].signal.metadata["reasoning"]


@pytest.mark.parametrize("later_s, effects", [
    (0.4, []),                                    # the schedule's attempt not due yet (min(frequency, 1 s))
    (1.0, [("not_due", "sched", "BTCUSDT")]),     # attempted: the strategy's frequency (60 s) says no
    (60.0, [("emit", "sched", "BTCUSDT", "buy", D(10), "warmup", True)]),
    (-5.0, [("not_due", "sched", "BTCUSDT")]),    # the clock stepped back: tried, never stalled
])
def test_the_next_turns_pace_by_the_passed_in_now(later_s, effects):
    params = strategy("sched", frequency_s=60.0)
    caller = Caller([params])
    first = signal_turn.step(signal_turn.start([params], LIMITS, T0), Turn(set()), T0, caller.inputs(T0))
    assert [outline(e)[0] for e in first.effects] == ["emit"]
    now = T0 + timedelta(seconds=later_s)
    second = signal_turn.step(first.state, Turn(set()), now, caller.inputs(now))
    assert [outline(e) for e in second.effects] == effects
    stamped_again = [o for o in effects if o[0] != "not_due"]    # a not-due evaluation stamps nothing
    assert second.state.last_attempt[("sched", "BTCUSDT")] == (now if stamped_again else T0)


def test_the_step_returns_new_state_and_leaves_the_old_one_alone():
    params = strategy("sched")
    before = signal_turn.start([params], LIMITS, T0)
    turned = signal_turn.step(before, Turn(set()), T0, Caller([params]).inputs(T0))
    assert before.last_attempt == {} and before.runtimes["sched"].last_signal_at == {}
    assert turned.state.runtimes["sched"].last_signal_at == {"BTCUSDT": T0}
    assert turned.state.shared.conflict_window.recent[0].strategy_id == "sched"


def test_configure_keeps_kept_strategies_and_starts_new_ones():
    kept, new = strategy("kept"), strategy("new")
    turned = signal_turn.step(signal_turn.start([kept], LIMITS, T0), Turn(set()), T0, Caller([kept]).inputs(T0))
    later = T0 + timedelta(minutes=1)
    state = signal_turn.configure(turned.state, [kept, new], LIMITS, later)
    assert state.runtimes["kept"].last_signal_at == {"BTCUSDT": T0} and state.runtimes["kept"].started_at == T0
    assert state.runtimes["new"].started_at == later
    assert set(signal_turn.configure(state, [new], LIMITS, later).runtimes) == {"new"}
