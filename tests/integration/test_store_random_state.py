"""The strategies' random streams saved and loaded on the real database."""
import random

from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.random_state import RandomState, load_random_states, save_random_states


def test_states_saved_in_one_statement_load_back_and_leave_the_session_synchronous(fresh_pg_dsn):
    apply_migrations(fresh_pg_dsn)
    db = Database(fresh_pg_dsn)
    try:
        a, b = random.Random(1), random.Random(2)
        a.random(), b.random(), b.random()
        with db.autocommit() as conn:
            save_random_states(conn, [RandomState("a", 1, 1, a.getstate()), RandomState("b", 2, 2, b.getstate())])
            b.random()
            save_random_states(conn, [RandomState("b", 2, 3, b.getstate())])     # an upsert
            save_random_states(conn, [])
            with conn.cursor() as cur:
                cur.execute("SHOW synchronous_commit")      # SET LOCAL: this save only
                assert cur.fetchone()[0] == "on"
        with db.transaction() as conn:
            loaded = load_random_states(conn, ["a", "b", "c"])
        assert set(loaded) == {"a", "b"}
        assert (loaded["a"].seed, loaded["a"].draws, loaded["a"].state) == (1, 1, a.getstate())
        assert (loaded["b"].seed, loaded["b"].draws, loaded["b"].state) == (2, 3, b.getstate())
    finally:
        db.close()


def test_a_turns_streams_commit_with_its_signals(fresh_pg_dsn, fresh_vhost):
    """The signaller writes the streams that drew with the turn's outbox rows (one statement,
    one commit), and marks them clean only then."""
    import uuid
    from datetime import datetime, timezone
    from decimal import Decimal

    from msd.bus.publisher import ConfirmingPublisher
    from msd.roles.runtime.outbox import Outbox, Submission
    from msd.roles.signaller.random_streams import RandomStreams
    from msd.strategies.params import StrategyParams
    from msd.values.messages import MarketDataSnapshot, TradingSignal
    from tests.fixtures.rabbit import amqp_url

    apply_migrations(fresh_pg_dsn)
    db = Database(fresh_pg_dsn)
    publisher = ConfirmingPublisher(amqp_url(fresh_vhost))
    try:
        streams = RandomStreams(db)
        streams.configure([StrategyParams.from_mapping({"id": "explorer", "assets": ["BTCUSDT"], "seed": 7,
                                                        "rate": {"rate_per_s": 1, "burst": 1},
                                                        "warmup": {"frequency_s": 1, "heuristic": "random",
                                                                   "min_amount_usdt": 10, "max_amount_usdt": 20,
                                                                   "max_exposure_usdt": 100}})])
        assert streams.ready("explorer")
        streams.rng("explorer").random()
        streams.drew("explorer")
        signal = TradingSignal(signal_id=str(uuid.uuid4()), signal_type="buy", asset="BTCUSDT", amount=Decimal("25"),
                               confidence=0.7, timestamp=datetime.now(timezone.utc), strategy_id="explorer",
                               model_version=None, is_warmup=True,
                               market_data_snapshot=MarketDataSnapshot(Decimal("95000"), None, None, None),
                               metadata={}, trace_id=str(uuid.uuid4()))
        outbox = Outbox(db, publisher, "model-service.trading_signals", modes=("warmup",))
        [submitted] = outbox.submit_all([Submission(signal, "warmup", also=streams.upsert_sql)])
        assert submitted.recorded
        streams.saved()
        assert streams.dirty == set()
        with db.transaction() as conn:
            loaded = load_random_states(conn, ["explorer"])
        assert (loaded["explorer"].draws, loaded["explorer"].state) == (1, streams.rng("explorer").getstate())
        assert outbox.settle(10)
    finally:
        publisher.close()
        db.close()
