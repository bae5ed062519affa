"""Parity with the daemon (issue 12): the real daemon runs against msd-sim for a short window;
the snapshots it recorded with its signals (msd.signals) are then replayed through the
signaller's turn as the backtest calls it (msd.strategies.signal_turn with the backtest's
inputs, msd.backtest.deciding.turn_inputs; the same seeds), one turn per recorded signal at
its timestamp, and give the same sides, assets and amounts, in the same order.

A decision that draws from the strategy's random stream but emits nothing would leave no row
to replay, so the strategies here cannot be stopped after drawing: no conflict window, rate
limits and an exposure cap far above what the window can use. Both use the random heuristic,
which needs no bar history (momentum would need two closed minutes before its first call)."""
import random
import threading
from datetime import datetime, timezone
from decimal import Decimal

import psycopg2
import pytest
import yaml

from msd.backtest.deciding import StrategySlot, identified, turn_inputs
from msd.backtest.learner import Quality, StrategyLearning
from msd.config import load_config
from msd.market.state import MarketSnapshot
from msd.sim.exchange import SimControls
from msd.sim.market import MarketParams
from msd.sim.runner import SimConfig, run
from msd.strategies import signal_turn
from tests.fixtures.rabbit import amqp_url
from tests.integration.daemon import Daemon, base_config, wait_for

pytestmark = pytest.mark.integration
WANTED = 6            # signals per strategy


def strategy(sid, heuristic, randomness, seed):
    return {"id": sid, "assets": ["BTCUSDT"], "trigger": "schedule", "seed": seed,
            "rate": {"rate_per_s": 50, "burst": 50},
            "warmup": {"frequency_s": 1.5, "heuristic": heuristic, "randomness": randomness, "min_amount_usdt": 10,
                       "max_amount_usdt": 25, "max_exposure_usdt": 10000000, "budget_usdt": 1000000,
                       "max_duration_s": 864000}}


SIGNALLER = {"max_data_age_s": 30, "global_rate": {"rate_per_s": 100, "burst": 100},
             "conflicts": {"policy": "allow", "window_s": 60},
             "strategies": [strategy("parity_random", "random", 1.0, 21), strategy("parity_other", "random", 0.4, 22)]}


@pytest.fixture(scope="module")
def sim(resources):
    dsn, vhost = resources
    stop, failure = threading.Event(), []
    config = SimConfig(amqp_url=amqp_url(vhost), dsn=dsn, assets=("BTCUSDT",), seed=5, speed=1.0, tick_rate=10.0,
                       position_update_s=1.0, start=datetime.now(timezone.utc), market=MarketParams(regime="noise"))

    def target():
        try:
            run(config, stop, SimControls())
        except BaseException as exc:  # reported below
            failure.append(exc)
    thread = threading.Thread(target=target, name="msd-sim")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failure, failure


def recorded(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("""SELECT strategy_id, body FROM msd.signals WHERE mode = 'warmup'
                        ORDER BY strategy_id, (body->>'timestamp'), signal_id""")
        return cur.fetchall()


def counts(dsn):
    rows = recorded(dsn)
    for params in config.signaller.strategies:
        live = [body for sid, body in rows if sid == params.id]
        first = datetime.fromisoformat(live[0]["timestamp"].replace("Z", "+00:00"))
        learning = StrategyLearning(params.id, config.trainer.training, Quality(0.6, 0.05, 30, 200),
                                    params.warmup.budget_usdt, params.warmup.max_duration_s, 0.0, 60.0)
        slots = {params.id: StrategySlot(params, random.Random(params.seed), learning)}
        state = signal_turn.start([params], config.signaller.limits, first)
        replayed = []
        for body in live:
            now = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
            snapshot = snapshot_of(body["asset"], now, body["market_data_snapshot"])
            inputs = turn_inputs(slots, config.signaller.limits, lambda asset: snapshot,
                                 lambda sid, asset, price: Decimal(0), now, config.trainer.training.confidence_threshold)
            turned = signal_turn.step(state, signal_turn.Turn({body["asset"]}, tradable={body["asset"]}), now, inputs)
            state = turned.state
            emitted = [e for e in turned.effects if isinstance(e, signal_turn.Emitted)]
            assert [type(e) for e in turned.effects] == [signal_turn.Emitted], (params.id, body, turned.effects)
            signal = identified(slots[params.id], emitted[0].signal, 0)
            replayed.append((signal.signal_type, signal.asset, signal.amount))
        assert replayed == [(b["signal_type"], b["asset"], Decimal(str(b["amount"]))) for b in live], params.id
        assert len(replayed) >= WANTED
