"""The outbox shared by the signaller and the exit role, on the real database and broker."""
import logging
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pika
import pytest

from msd.bus.publisher import ConfirmingPublisher
from msd.bus.signal_format import signal_to_wire
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
    exits = Outbox(db, ConfirmingPublisher(url), QUEUE, modes=("exit",))     # each role has its own
    try:
        assert signaller.flush() == 1 and exits.flush() == 1
        assert signaller.settle(10) and exits.settle(10)
        assert signaller.flush() == 0 and exits.flush() == 0
    finally:
        exits.close()
    assert sorted(queued_ids(url)) == sorted([warmup.signal_id, exit_.signal_id])


def test_a_signal_goes_out_once_and_is_marked_sent(setup):
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    first = signal()
    assert outbox.submit(first, "warmup").recorded
    assert outbox.flush() == 0          # in flight: not sent again while its confirm is awaited
    assert outbox.settle(10)
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
    assert signaller.settle(10)
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
    assert [(r.recorded, r.dispatched) for r in results] == [(True, True), (False, False), (True, True)]
    assert results[1].error.startswith("invalid")
    assert results[0].written_at == results[2].written_at       # one statement for the turn
    assert outbox.settle(10)
    assert queued_ids(url) == [first.signal_id, third.signal_id]
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
    assert outbox.settle(10)
    assert queued_ids(url) == [warmup.signal_id]
    assert outbox.flush() == 1                                       # `second`; `first` voided
    assert outbox.settle(10)
    assert seen == [["exit", "exit"], ["exit", "exit"]]
    assert queued_ids(url) == [second.signal_id]
    assert [(v.signal_id, v.reason) for v in after] == [(first.signal_id, "position_flat")]
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT outbox_state, last_error FROM msd.signals WHERE signal_id = %s", (first.signal_id,))
        assert cur.fetchone() == ("voided", "closed meanwhile")
    assert (outbox.voided, outbox.expired) == (1, 0)


def unconfirmed_ids(caplog) -> list[str]:
    return [r.signal_id for r in caplog.records if getattr(r, "unconfirmed", False)]


def settled(outbox, what="the verdicts applied"):
    """Apply verdicts until none is awaited (a liveness bound, not a speed check)."""
    wait_for(lambda: (outbox.service_connection(), not outbox.in_flight)[1], what, timeout=30)
    assert outbox.commit_marks()


def column(db, name, signal_ids):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT signal_id::text, {name} FROM msd.signals WHERE signal_id = ANY(%s::uuid[])",
                    (list(signal_ids),))
        return dict(cur.fetchall())


@pytest.fixture
def relayed(fresh_pg_dsn, fresh_vhost):
    """An outbox whose broker connection runs through a relay (replies held or paused, line cut)."""
    from tests.integration.tcp_relay import Relay
    apply_migrations(fresh_pg_dsn)
    relay, db = Relay(), Database(fresh_pg_dsn)
    outboxes = []

    def make(**kwargs):
        outboxes.append(Outbox(db, ConfirmingPublisher(relay.url(fresh_vhost)), QUEUE, modes=("warmup",), **kwargs))
        return outboxes[-1]
    yield make, relay, db, amqp_url(fresh_vhost)
    for outbox in outboxes:
        outbox.publisher.close()
    relay.close()
    db.close()


def test_a_turns_signals_are_in_flight_together_and_marked_sent_as_their_confirms_arrive(relayed):
    """Pipelined confirms: submit_all returns once the turn's signals are handed to the broker;
    while their confirms are awaited they are in flight (pending, never sent again by a flush),
    and each is marked sent when its confirm is applied."""
    from msd.roles.runtime.outbox import Submission
    from tests.integration.bus_helpers import message_count
    make, relay, db, direct = relayed
    outbox = make()
    first, turn = signal(), [signal(f"s{n}") for n in range(5)]
    assert outbox.submit(first, "warmup").dispatched     # connected, queue declared
    settled(outbox)
    relay.pause()
    results = outbox.submit_all([Submission(item, "warmup") for item in turn])
    assert all(r.recorded and r.dispatched for r in results)
    wait_for(lambda: message_count(direct, QUEUE) == 6, "the turn's signals routed", timeout=30)
    outbox.service_connection()
    assert list(outbox.in_flight) == [item.signal_id for item in turn]
    assert outbox.flush() == 0                       # in flight: not sent a second time
    assert [states(db)[item.signal_id] for item in turn] == ["pending"] * 5
    settled_at = []
    outbox.attach(lambda sid, at: settled_at.append((sid, at)), outbox.clock)
    relay.resume()
    settled(outbox)
    assert set(states(db).values()) == {"sent"} and outbox.published == 6
    assert sorted(sid for sid, at in settled_at if at is not None) == sorted(item.signal_id for item in turn)
    assert queued_ids(direct) == [first.signal_id] + [item.signal_id for item in turn]


def test_a_confirm_lost_with_the_connection_is_published_again_and_logged_as_unconfirmed(relayed, caplog):
    """Regression (a duplicate publish during a broker outage): the broker routes a message before
    it confirms it, so when the connection goes while confirms are outstanding, those signals are
    on the queue and still pending; the outbox publishes them again. That second copy is inherent
    to at-least-once delivery (order-manager dedupes by signal_id): the outbox must name exactly
    those signals, count them, and keep everything else exactly once."""
    from msd.roles.runtime.outbox import Submission
    from tests.integration.bus_helpers import message_count
    make, relay, db, direct = relayed
    outbox = make()
    before, lost, after = signal(), [signal() for _ in range(3)], signal()
    assert outbox.submit(before, "warmup").dispatched
    settled(outbox)                                     # confirmed and marked before the outage
    relay.hold()                        # the broker's confirms of the next publishes will not arrive
    with caplog.at_level(logging.WARNING, logger="msd.outbox"):
        assert all(r.dispatched for r in outbox.submit_all([Submission(item, "warmup") for item in lost]))
        wait_for(lambda: message_count(direct, QUEUE) == 4, "the three signals on the queue", timeout=30)
        relay.cut()
        settled(outbox, "the lost confirms applied")
    lost_ids = [item.signal_id for item in lost]
    assert outbox.backlog and sorted(unconfirmed_ids(caplog)) == sorted(lost_ids) and outbox.unconfirmed == 3
    assert states(db) == {before.signal_id: "sent", **{sid: "pending" for sid in lost_ids}}
    unconfirmed_at = column(db, "unconfirmed_at", [before.signal_id, *lost_ids])
    assert unconfirmed_at[before.signal_id] is None and all(unconfirmed_at[sid] for sid in lost_ids)
    assert outbox.flush() == 3          # the lost confirms' signals go out again, in order: their second copies
    settled(outbox)
    assert outbox.submit(after, "warmup").dispatched
    settled(outbox)
    assert queued_ids(direct) == [before.signal_id, *lost_ids, *lost_ids, after.signal_id]
    assert set(states(db).values()) == {"sent"} and outbox.unconfirmed == 3


def test_a_connection_closed_between_publishes_sends_nothing_twice(setup, fresh_vhost, caplog):
    """A broker-side close while no confirm is awaited is repaired before the next signal:
    nothing is unconfirmed, nothing is sent twice."""
    from tests.fixtures.rabbit import close_vhost_connections
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    sent = [signal() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="msd.outbox"):
        for item in sent:
            assert outbox.submit(item, "warmup").recorded
            settled(outbox)
            close_vhost_connections(fresh_vhost)
        while outbox.backlog or outbox.in_flight:
            outbox.flush()
            settled(outbox)
    assert unconfirmed_ids(caplog) == [] and outbox.unconfirmed == 0
    assert queued_ids(url) == [item.signal_id for item in sent]


def test_a_signal_whose_confirm_was_lost_is_sent_again_not_expired_as_unsent(relayed, caplog):
    """Regression: a signal whose confirm was lost (it may be on the queue) stayed pending and,
    after the outage, expired as "unsent" although order-manager may have it; for an exit that
    meant deciding it again under a new signal_id, which nobody can dedupe. It goes out again
    under its own id instead; nor does a signal expire while its confirm is awaited."""
    import time
    from msd.roles.runtime.outbox import Expiry
    from tests.integration.bus_helpers import message_count
    make, relay, db, direct = relayed
    outbox = make(expiry=Expiry(("warmup",), 0.5))
    before, lost, stale = signal(), signal(), aged(signal(), 90)
    assert outbox.submit(before, "warmup").dispatched        # connected, queue declared
    settled(outbox)
    relay.hold()
    with caplog.at_level(logging.WARNING, logger="msd.outbox"):
        assert outbox.submit(lost, "warmup").dispatched
        wait_for(lambda: message_count(direct, QUEUE) == 2, "the signal on the queue", timeout=30)
        time.sleep(1.0)                 # older than the limit while its confirm is awaited
        assert outbox.flush() == 0 and states(db)[lost.signal_id] == "pending"     # in flight: kept
        relay.cut()
        settled(outbox, "the lost confirm applied")
    with db.transaction() as conn:
        insert_signal(conn, stale, signal_to_wire(stale), "warmup")     # a plain pending one, too old
    assert outbox.flush() == 1
    settled(outbox)
    assert states(db) == {before.signal_id: "sent", lost.signal_id: "sent", stale.signal_id: "expired"}
    assert queued_ids(direct) == [before.signal_id, lost.signal_id, lost.signal_id]


def test_signals_the_broker_nacks_stay_pending_and_go_out_again_in_order(setup, fresh_vhost, caplog):
    """A nack (here: a full queue that rejects publishes) is a refusal, not a lost confirm: the
    signals stay pending, are not counted unconfirmed, and the next flush sends them, oldest first."""
    from msd.roles.runtime.outbox import Submission
    from tests.fixtures.rabbit import rabbitmqctl
    db, publisher, url = setup
    rabbitmqctl("set_policy", "-p", fresh_vhost, "full-at-two", f"^{QUEUE}$",
                '{"max-length": 2, "overflow": "reject-publish"}', "--apply-to", "queues")
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    turn = [signal(f"s{n}") for n in range(4)]
    ids = [item.signal_id for item in turn]
    with caplog.at_level(logging.WARNING, logger="msd.outbox"):
        assert all(r.dispatched for r in outbox.submit_all([Submission(item, "warmup") for item in turn]))
        settled(outbox)
    assert [states(db)[sid] for sid in ids] == ["sent", "sent", "pending", "pending"]
    assert outbox.backlog and outbox.unconfirmed == 0 and unconfirmed_ids(caplog) == []
    errors = column(db, "last_error", ids[2:])
    assert all("nacked" in errors[sid] for sid in ids[2:])
    assert column(db, "unconfirmed_at", ids[2:]) == {sid: None for sid in ids[2:]}
    assert queued_ids(url) == ids[:2]           # the queue has room again
    assert outbox.flush() == 2
    settled(outbox)
    assert queued_ids(url) == ids[2:] and set(states(db).values()) == {"sent"}


def test_a_signal_returned_as_unroutable_stays_pending_until_the_queue_is_back(setup):
    """A mandatory publish nobody's queue takes is returned, then acked: refused, not sent; the
    next flush declares the queue again and sends it."""
    db, publisher, url = setup
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",))
    first, second = signal(), signal()
    assert outbox.submit(first, "warmup").dispatched
    settled(outbox)
    assert queued_ids(url) == [first.signal_id]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_delete(QUEUE)
    conn.close()
    assert outbox.submit(second, "warmup").dispatched
    settled(outbox)
    assert states(db)[second.signal_id] == "pending" and outbox.backlog
    assert "unroutable" in column(db, "last_error", [second.signal_id])[second.signal_id]
    assert outbox.flush() == 1
    settled(outbox)
    assert queued_ids(url) == [second.signal_id] and states(db)[second.signal_id] == "sent"
