"""The outbox shared by the signaller and the exit role, on the real database and broker."""
import logging
import threading
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pika
import pytest

from msd.bus.publisher import ConfirmingPublisher
from msd.bus.signal_format import signal_to_wire
from msd.errors import BrokerUnavailable
from msd.values.messages import MarketDataSnapshot, TradingSignal
from msd.roles.runtime.outbox import Outbox, Screen
from msd.store.db import Database
from msd.store.migrate import apply_migrations
from msd.store.outbox import insert_signal
from tests.fixtures.rabbit import amqp_url
from tests.integration.bus_helpers import wait_for

QUEUE = "model-service.trading_signals"


def signal(strategy="s1"):
    return TradingSignal(signal_id=str(uuid.uuid4()), signal_type="sell", asset="BTCUSDT", amount=Decimal("25"),
                         confidence=0.7, timestamp=datetime.now(timezone.utc), strategy_id=strategy,
                         model_version=None, is_warmup=True,
                         market_data_snapshot=MarketDataSnapshot(Decimal("95000"), None, None, None),
                         metadata={}, trace_id=str(uuid.uuid4()))


@pytest.fixture
def setup(fresh_pg_dsn, fresh_vhost):
    apply_migrations(fresh_pg_dsn)
    db = Database(fresh_pg_dsn)
    publisher = ConfirmingPublisher(amqp_url(fresh_vhost))
    yield db, publisher, amqp_url(fresh_vhost)
    publisher.close()
    db.close()


def queued_ids(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel, ids = conn.channel(), []
    while (message := channel.basic_get(QUEUE, auto_ack=True))[0] is not None:
        ids.append(message[1].message_id)
    conn.close()
    return ids


def test_two_outboxes_never_publish_each_others_pending_rows(setup):
    """Regression: the signaller and the exit role both flushed every pending row, so a signal
    waiting in the outbox could be published twice, once by each role."""
    db, publisher, url = setup
    warmup, exit_ = signal("warm"), signal("exit-engine")
    with db.transaction() as conn:
        insert_signal(conn, warmup, signal_to_wire(warmup), "warmup")
        insert_signal(conn, exit_, signal_to_wire(exit_), "exit")
    signaller = Outbox(db, publisher, QUEUE, modes=("warmup", "model"))
    exits = Outbox(db, publisher, QUEUE, modes=("exit",))
    assert signaller.flush() == 1 and exits.flush() == 1
    assert signaller.flush() == 0 and exits.flush() == 0
    assert sorted(queued_ids(url)) == sorted([warmup.signal_id, exit_.signal_id])


def test_a_signal_goes_out_once_and_is_marked_sent(setup):
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    first = signal()
    assert outbox.submit(first, "warmup").recorded
    assert outbox.commit_marks()
    assert outbox.flush() == 0
    assert queued_ids(url) == [first.signal_id]
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT outbox_state FROM msd.signals WHERE signal_id = %s", (first.signal_id,))
        assert cur.fetchone() == ("sent",)


def test_an_outbox_refuses_a_mode_it_does_not_own(setup):
    db, publisher, _ = setup
    with pytest.raises(ValueError, match="modes"):
        Outbox(db, publisher, QUEUE, modes=("exit",)).submit(signal(), "warmup")


def test_in_flight_signals_count_towards_exposure_until_they_become_orders(setup):
    """Regression: the exposure cap read only the shared tables, so during a broker outage the
    strategies kept buying against a cap the queued signals had already used up."""
    from msd.store.neighbours import create_neighbour_tables
    from msd.store.outbox import in_flight_notional, mark_sent
    db, _, _ = setup
    buy, sell, taken = signal(), signal(), signal()
    buy = buy.__class__(**{**buy.__dict__, "signal_type": "buy"})
    taken = taken.__class__(**{**taken.__dict__, "signal_type": "buy", "amount": Decimal("40")})
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        for item in (buy, sell, taken):
            insert_signal(conn, item, signal_to_wire(item), "warmup")
        mark_sent(conn, [sell.signal_id, taken.signal_id])
        with conn.cursor() as cur:   # order-manager already turned `taken` into an order
            cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                           VALUES ('o-1', %s, 'BTCUSDT', 'Buy', 'Market', 0.001, 'pending')""", (taken.signal_id,))
    with db.transaction() as conn:
        # pending buy 25 and sent-but-not-yet-an-order sell 25; the order-backed buy is in `orders`
        assert in_flight_notional(conn, "BTCUSDT", 120, datetime.now(timezone.utc)) == Decimal(0)
        assert in_flight_notional(conn, "ETHUSDT", 120, datetime.now(timezone.utc)) == Decimal(0)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("UPDATE msd.signals SET outbox_state = 'sent' WHERE signal_id = %s", (buy.signal_id,))
        cur.execute("DELETE FROM msd.signals WHERE signal_id = %s", (sell.signal_id,))
    with db.transaction() as conn:
        assert in_flight_notional(conn, "BTCUSDT", 120, datetime.now(timezone.utc)) == Decimal(25)


def test_in_flight_notional_scanned_all_orders_once_per_recent_signal(setup):
    """Regression: `pending OR NOT EXISTS (orders ...)` could not become an anti-join, so the
    planner scanned `orders` (no index on signal_id) once per recent signal: 190 ms per strategy
    evaluation with 20,000 orders and 3,000 recent signals. The plan must read orders once."""
    from datetime import timedelta
    from msd.store.neighbours import create_neighbour_tables
    from msd.store.outbox import IN_FLIGHT_SQL, in_flight_params, mark_sent
    db, _, _ = setup
    sent = [signal() for _ in range(20)]
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        for item in sent:
            insert_signal(conn, item, signal_to_wire(item), "warmup")
        mark_sent(conn, [item.signal_id for item in sent])
        with conn.cursor() as cur:
            cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                           SELECT 'o-' || g, gen_random_uuid(), 'BTCUSDT', 'Buy', 'Market', 1, 'filled'
                             FROM generate_series(1, 2000) g""")
            cur.execute("ANALYZE orders")
            cur.execute("ANALYZE msd.signals")
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + IN_FLIGHT_SQL,
                        in_flight_params("BTCUSDT", 120, datetime.now(timezone.utc)))
            plan = cur.fetchone()[0][0]["Plan"]

    def scans_of_orders(node) -> int:
        own = node.get("Actual Loops", 0) if node.get("Relation Name") == "orders" else 0
        return own + sum(scans_of_orders(child) for child in node.get("Plans", []))
    assert scans_of_orders(plan) == 1


def aged(item: TradingSignal, seconds: float) -> TradingSignal:
    """The same decision, taken `seconds` ago (created_at is the decision time)."""
    from datetime import timedelta
    return item.__class__(**{**item.__dict__, "timestamp": item.timestamp - timedelta(seconds=seconds)})


def states(db) -> dict:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT signal_id::text, outbox_state FROM msd.signals")
        return dict(cur.fetchall())


def test_a_pending_signal_older_than_the_age_limit_expires_instead_of_going_out_late(setup):
    from msd.roles.runtime.outbox import Expiry
    db, publisher, url = setup
    stale, fresh, stale_exit = aged(signal(), 90), aged(signal(), 5), aged(signal("exit-engine"), 90)
    with db.transaction() as conn:
        insert_signal(conn, stale, signal_to_wire(stale), "warmup")
        insert_signal(conn, fresh, signal_to_wire(fresh), "model")
        insert_signal(conn, stale_exit, signal_to_wire(stale_exit), "exit")
    heard, committed = [], []
    signaller = Outbox(db, publisher, QUEUE, modes=("warmup", "model"),
                       expiry=Expiry(("warmup", "model"), 60, lambda conn, rows: heard.extend(rows), committed.extend))
    assert signaller.flush() == 1
    assert committed == heard
    assert queued_ids(url) == [fresh.signal_id]
    assert states(db) == {stale.signal_id: "expired", fresh.signal_id: "sent", stale_exit.signal_id: "pending"}
    assert [(e.signal_id, e.mode) for e in heard] == [(stale.signal_id, "warmup")]
    assert heard[0].age_s >= 90 and heard[0].body["signal_id"] == stale.signal_id
    assert signaller.expired == 1


def test_expiry_and_the_hook_commit_together_or_not_at_all(setup):
    """The hook is where the exit role will undo a stale exit's ladder step: same transaction."""
    from msd.roles.runtime.outbox import Expiry
    db, publisher, _ = setup
    stale = aged(signal("exit-engine"), 90)
    with db.transaction() as conn:
        insert_signal(conn, stale, signal_to_wire(stale), "exit")

    def failing_hook(conn, rows):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO msd.schedule_state (name, next_run_at) VALUES ('hook-ran', now())")
        raise RuntimeError("state could not be rolled back")

    exits = Outbox(db, publisher, QUEUE, modes=("exit",), expiry=Expiry(("exit",), 60, failing_hook))
    with pytest.raises(RuntimeError):
        exits.flush()
    assert states(db) == {stale.signal_id: "pending"}
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM msd.schedule_state WHERE name = 'hook-ran'")
        assert cur.fetchone() == (0,)


def test_expired_signals_no_longer_count_as_in_flight_exposure(setup):
    from msd.roles.runtime.outbox import Expiry
    from msd.store.neighbours import create_neighbour_tables
    from msd.store.outbox import in_flight_notional
    db, publisher, _ = setup
    stale = aged(signal(), 90)
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        insert_signal(conn, stale, signal_to_wire(stale), "warmup")
        assert in_flight_notional(conn, "BTCUSDT", 120, datetime.now(timezone.utc)) == Decimal(-25)
    Outbox(db, publisher, QUEUE, modes=("warmup",), expiry=Expiry(("warmup",), 60)).flush()
    with db.transaction() as conn:
        assert in_flight_notional(conn, "BTCUSDT", 120, datetime.now(timezone.utc)) == Decimal(0)


def test_signals_of_one_turn_are_recorded_together_and_published_in_order(setup):
    """submit_all: one statement (one commit) for the turn's signals; a signal order-manager
    would reject is left out without holding up the others."""
    from msd.roles.runtime.outbox import Submission
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    assert outbox.flush() == 0          # no backlog: the batch is published directly
    first, second, third = signal("a"), signal("b"), signal("c")
    broken = second.__class__(**{**second.__dict__, "amount": Decimal("-1")})
    results = outbox.submit_all([Submission(first, "warmup"), Submission(broken, "warmup"),
                                 Submission(third, "warmup")])
    assert [(r.recorded, r.published) for r in results] == [(True, True), (False, False), (True, True)]
    assert results[1].error.startswith("invalid")
    assert results[0].done_at <= results[2].done_at
    assert queued_ids(url) == [first.signal_id, third.signal_id]
    assert outbox.commit_marks()
    assert states(db) == {first.signal_id: "sent", third.signal_id: "sent"}


def test_exposure_and_in_flight_read_together_equal_the_two_reads(setup):
    """The signaller reads the shared tables and its own in-flight signals in one round trip."""
    from msd.store.neighbours import create_neighbour_tables, read_open_exposure, read_open_exposure_with
    from msd.store.outbox import IN_FLIGHT_SQL, in_flight_notional, in_flight_params
    db, _, _ = setup
    pending = signal()
    with db.transaction() as conn:
        create_neighbour_tables(conn)
        insert_signal(conn, pending, signal_to_wire(pending), "warmup")
        with conn.cursor() as cur:
            cur.execute("""INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, price, status)
                           VALUES ('o-1', gen_random_uuid(), 'BTCUSDT', 'Buy', 'Limit', 0.002, 90000, 'pending')""")
            cur.execute("""INSERT INTO positions (asset, size, average_entry_price, current_price, mode)
                           VALUES ('BTCUSDT', 0.001, 90000, 95000, 'one-way')""")
    with db.transaction() as conn:
        now = datetime.now(timezone.utc)
        together = read_open_exposure_with(conn, "BTCUSDT", IN_FLIGHT_SQL, in_flight_params("BTCUSDT", 120, now))
        apart = read_open_exposure(conn, "BTCUSDT"), (in_flight_notional(conn, "BTCUSDT", 120, now),)
    assert together == apart
    assert together[1] == (Decimal(-25),) and together[0].open_orders == 1 and together[0].open_positions == 1


def test_a_screen_voids_only_its_own_modes_and_holds_them_while_it_cannot_tell(setup):
    """The exit role screens its pending exits; the signaller's warm-up and model signals are
    never screened, and a screen that cannot tell (None) holds its modes only."""
    db, publisher, url = setup
    warmup, first, second = signal("warm"), signal("exit-engine"), signal("exit-engine")
    with db.transaction() as conn:
        insert_signal(conn, warmup, signal_to_wire(warmup), "warmup")
        insert_signal(conn, first, signal_to_wire(first), "exit")
        insert_signal(conn, second, signal_to_wire(second), "exit")
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup", "exit"))
    answers, seen, after = [None, {first.signal_id: ("position_flat", "closed meanwhile")}], [], []
    outbox.screen_with(Screen(modes=("exit",), check=lambda batch: seen.append([i.mode for i in batch])
                              or answers.pop(0), after_commit=after.extend))
    assert outbox.flush() == 1 and outbox.backlog                   # cannot tell: the exits held, not the rest
    assert queued_ids(url) == [warmup.signal_id]
    assert outbox.flush() == 1                                       # `second`; `first` voided
    assert seen == [["exit", "exit"], ["exit", "exit"]]
    assert queued_ids(url) == [second.signal_id]
    assert [(v.signal_id, v.reason) for v in after] == [(first.signal_id, "position_flat")]
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT outbox_state, last_error FROM msd.signals WHERE signal_id = %s", (first.signal_id,))
        assert cur.fetchone() == ("voided", "closed meanwhile")
    assert (outbox.voided, outbox.expired) == (1, 0)


def unconfirmed_ids(caplog) -> list[str]:
    return [r.signal_id for r in caplog.records if getattr(r, "unconfirmed", False)]


def test_a_confirm_lost_with_the_connection_is_published_again_and_logged_as_unconfirmed(
        fresh_pg_dsn, fresh_vhost, caplog):
    """Regression (a duplicate publish during a broker outage): the broker routes a message before
    it confirms it, so when the connection goes while a publish waits for its confirm, the
    signal is on the queue and still pending; the outbox publishes it again. That second copy is
    inherent to at-least-once delivery (order-manager dedupes by signal_id): the outbox must name
    the signal, count it, and keep everything else exactly once."""
    from tests.integration.tcp_relay import Relay
    from tests.integration.bus_helpers import message_count
    from msd.errors import PublishUnconfirmed
    apply_migrations(fresh_pg_dsn)
    direct = amqp_url(fresh_vhost)
    relay, db = Relay(), Database(fresh_pg_dsn)
    publisher = ConfirmingPublisher(relay.url(fresh_vhost))
    try:
        outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
        before, lost, after = signal(), signal(), signal()
        assert outbox.submit(before, "warmup").published
        relay.hold()                    # the broker's confirm of the next publish will not arrive

        def cut_once_routed():
            wait_for(lambda: message_count(direct, QUEUE) == 2, "the second signal on the queue", timeout=30)
            relay.cut()
        cutter = threading.Thread(target=cut_once_routed)
        cutter.start()
        with caplog.at_level(logging.WARNING, logger="msd.outbox"):
            result = outbox.submit(lost, "warmup")
        cutter.join()
        assert result.recorded and not result.published and outbox.backlog
        assert unconfirmed_ids(caplog) == [lost.signal_id] and outbox.unconfirmed == 1
        assert states(db)[lost.signal_id] == "pending"
        assert outbox.flush() == 1      # the lost confirm's signal goes out again: its second copy
        assert outbox.submit(after, "warmup").published
        assert queued_ids(direct) == [before.signal_id, lost.signal_id, lost.signal_id, after.signal_id]
        assert set(states(db).values()) == {"sent"}
    finally:
        publisher.close()
        relay.close()
        db.close()
    assert issubclass(PublishUnconfirmed, BrokerUnavailable)    # every caller still sees a broker failure


def test_a_connection_closed_between_publishes_sends_nothing_twice(setup, fresh_vhost, caplog):
    """A broker-side close while no publish waits for a confirm is repaired before the next
    signal: nothing is unconfirmed, nothing is sent twice."""
    from tests.fixtures.rabbit import close_vhost_connections
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    sent = [signal() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="msd.outbox"):
        for item in sent:
            assert outbox.submit(item, "warmup").recorded
            close_vhost_connections(fresh_vhost)
        while outbox.backlog:
            outbox.flush()
    assert unconfirmed_ids(caplog) == [] and outbox.unconfirmed == 0
    assert queued_ids(url) == [item.signal_id for item in sent]


def test_a_signal_whose_confirm_was_lost_is_sent_again_not_expired_as_unsent(fresh_pg_dsn, fresh_vhost, caplog):
    """Regression: a signal whose confirm was lost (it may be on the queue) stayed pending and,
    after the outage, expired as "unsent" although order-manager may have it; for an exit that
    meant deciding it again under a new signal_id, which nobody can dedupe. It goes out again
    under its own id instead."""
    import time
    from msd.roles.runtime.outbox import Expiry
    from tests.integration.tcp_relay import Relay
    from tests.integration.bus_helpers import message_count
    apply_migrations(fresh_pg_dsn)
    direct = amqp_url(fresh_vhost)
    relay, db = Relay(), Database(fresh_pg_dsn)
    publisher = ConfirmingPublisher(relay.url(fresh_vhost))
    try:
        outbox = Outbox(db, publisher, QUEUE, modes=("warmup",), expiry=Expiry(("warmup",), 0.5))
        before, lost, stale = signal(), signal(), aged(signal(), 90)
        assert outbox.submit(before, "warmup").published        # connected, queue declared
        relay.hold()
        cutter = threading.Thread(target=lambda: (wait_for(lambda: message_count(direct, QUEUE) == 2,
                                                           "the signal on the queue", timeout=30), relay.cut()))
        cutter.start()
        with caplog.at_level(logging.WARNING, logger="msd.outbox"):
            assert not outbox.submit(lost, "warmup").published
        cutter.join()
        with db.transaction() as conn:
            insert_signal(conn, stale, signal_to_wire(stale), "warmup")     # a plain pending one, too old
        time.sleep(1.0)                 # both are older than the limit now
        assert outbox.flush() == 1
        assert states(db) == {before.signal_id: "sent", lost.signal_id: "sent", stale.signal_id: "expired"}
        assert queued_ids(direct) == [before.signal_id, lost.signal_id, lost.signal_id]
    finally:
        publisher.close()
        relay.close()
        db.close()
