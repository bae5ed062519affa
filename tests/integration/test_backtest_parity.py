"""Parity with the daemon (issue 12): the real daemon runs against msd-sim for a short window;
the snapshots it recorded with its signals (msd.signals) are then replayed through the
backtest's decision step (msd.backtest.deciding.decide: msd.strategies.step and the engine,
the same seeds) and give the same sides, assets and amounts, in the same order.

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

from msd.backtest.deciding import StrategySlot, decide
from msd.backtest.learner import Quality, StrategyLearning
from msd.config import load_config
from msd.market.state import MarketSnapshot
from msd.sim.exchange import SimControls
from msd.sim.market import MarketParams
from msd.sim.runner import SimConfig, run
from msd.strategies import engine
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
    return {sid: sum(1 for s, _ in rows if s == sid) for sid in ("parity_random", "parity_other")}


def snapshot_of(asset: str, at: datetime, wire: dict) -> MarketSnapshot:
    """The MarketSnapshot the signaller decided on, back from the market_data_snapshot it sent."""
    ti = wire.get("technical_indicators") or {}

    def dec(value):
        return None if value is None else Decimal(repr(value))
    return MarketSnapshot(asset=asset, at=at, price=dec(wire["price"]), mid=dec(ti.get("mid")), bid=None, ask=None,
                          spread_pct=dec(wire.get("spread")), volume_24h=dec(wire.get("volume_24h")),
                          volatility=wire.get("volatility"),
                          returns={k: ti.get(f"return_{k}") for k in ("1m", "5m", "15m")},
                          orderbook_depth=wire.get("orderbook_depth") or {}, age_seconds=0.0,
                          sma_60m=ti.get("sma_60m"))


def test_backtest_decision_step_replays_the_daemons_signals(resources, sim, tmp_path):
    dsn, vhost = resources
    daemon = Daemon(tmp_path, base_config(tmp_path, dsn, amqp_url(vhost), signaller=SIGNALLER))
    try:
        daemon.start()
        try:
            wait_for(lambda: min(counts(dsn).values()) >= WANTED, 60, interval=0.5, what="signals of both strategies")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {counts(dsn)}\n{daemon.tail(60)}") from None
    finally:
        daemon.close()
    config_path = tmp_path / "replay.yaml"
    config_path.write_text(yaml.safe_dump({"signaller": SIGNALLER}))
    config = load_config(config_path, env={})
    rows = recorded(dsn)
    shared = engine.start_shared(config.signaller.limits)
    for params in config.signaller.strategies:
        live = [body for sid, body in rows if sid == params.id]
        first = datetime.fromisoformat(live[0]["timestamp"].replace("Z", "+00:00"))
        learning = StrategyLearning(params.id, config.trainer.training, Quality(0.6, 0.05, 30, 200),
                                    params.warmup.budget_usdt, params.warmup.max_duration_s, 0.0, 60.0)
        slot = StrategySlot(params, engine.start_runtime(params, first), random.Random(params.seed), learning)
        replayed = []
        for body in live:
            now = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
            signal, shared = decide(slot, config.signaller.limits, shared,
                                    snapshot_of(body["asset"], now, body["market_data_snapshot"]), Decimal(0), now,
                                    config.trainer.training.confidence_threshold, 0)
            assert signal is not None, (params.id, body)
            replayed.append((signal.signal_type, signal.asset, signal.amount))
        assert replayed == [(b["signal_type"], b["asset"], Decimal(str(b["amount"]))) for b in live], params.id
        assert len(replayed) >= WANTED
