"""The leadership lease and fencing against the real PostgreSQL (sql/013_leadership.sql)."""
import threading
import time

import psycopg2
import pytest

from msd.errors import Fenced
from msd.store import db as dbmod
from msd.store import leadership as lease
from msd.store.db import Database, WriterSession

A = lease.Claimant("box-a/1", "box-a", 1, "h1")
B = lease.Claimant("box-b/2", "box-b", 2, "h1")


def tx(database, fn, *args):
    with database.transaction() as conn:
        return fn(conn, *args)


def events(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT epoch, event, holder FROM msd.leadership_events ORDER BY id")
        return cur.fetchall()


def test_one_holder_at_a_time_and_each_take_over_increments_the_epoch(db, fresh_pg_dsn):
    first = tx(db, lease.try_acquire, A, 30)
    assert (first.epoch, first.holder, first.valid) == (1, "box-a/1", True)
    assert tx(db, lease.try_acquire, B, 30) is None                 # A's lease is valid
    assert tx(db, lease.renew, A, 1, 30).epoch == 1
    assert tx(db, lease.renew, B, 1, 30) is None                    # not B's to renew
    assert tx(db, lease.release, A, 1, "stepped_down", "test")
    second = tx(db, lease.try_acquire, B, 30)
    assert (second.epoch, second.holder) == (2, "box-b/2")
    assert tx(db, lease.renew, A, 1, 30) is None                    # A's epoch is gone
    assert events(fresh_pg_dsn) == [(1, "acquired", "box-a/1"), (1, "stepped_down", "box-a/1"),
                                     (2, "acquired", "box-b/2")]


def test_an_expired_lease_is_taken_over_by_the_database_clock(db):
    tx(db, lease.try_acquire, A, 0.2)
    assert tx(db, lease.try_acquire, B, 30) is None
    time.sleep(0.3)
    assert tx(db, lease.read_lease).valid is False
    assert tx(db, lease.try_acquire, B, 30).epoch == 2


def _writer(dsn, epoch):
    dbmod.set_writer_session(WriterSession(epoch, "box-a", 5000))
    try:
        database = Database(dsn)
        database.connection()              # the session is fixed when the connection opens
        return database
    finally:
        dbmod.set_writer_session(None)


def _write_schedule(database, name):
    with database.transaction() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO msd.schedule_state (name, next_run_at) VALUES (%s, now())", (name,))


def test_a_superseded_epoch_cannot_write_an_effect_and_the_current_one_can(db, fresh_pg_dsn):
    tx(db, lease.try_acquire, A, 0.1)
    old = _writer(fresh_pg_dsn, 1)
    _write_schedule(old, "while-leading")
    time.sleep(0.2)
    tx(db, lease.try_acquire, B, 30)       # epoch 2
    with pytest.raises(Fenced, match="epoch 1"):
        _write_schedule(old, "after-take-over")
    new = _writer(fresh_pg_dsn, 2)
    _write_schedule(new, "new-leader")
    _write_schedule(db, "operator")        # no writer session: not fenced


def test_a_take_over_waits_for_the_old_epochs_open_write_and_renewal_does_not(db, fresh_pg_dsn):
    """The fence's key-share lock: the epoch-changing UPDATE waits until the old leader's write
    has committed; renewal (no key change) passes while it is open."""
    tx(db, lease.try_acquire, A, 0.1)
    old = _writer(fresh_pg_dsn, 1)
    conn = old.connection()
    with conn.cursor() as cur:              # an open transaction that has passed the fence
        cur.execute("INSERT INTO msd.schedule_state (name, next_run_at) VALUES ('open', now())")
    assert tx(db, lease.renew, A, 1, 0.1) is not None
    time.sleep(0.2)
    took = {}
    other = Database(fresh_pg_dsn)
    thread = threading.Thread(target=lambda: took.update(row=tx(other, lease.try_acquire, B, 30)))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and not took        # waiting for the old epoch's write
    conn.commit()
    thread.join(10)
    assert took["row"].epoch == 2
    with psycopg2.connect(fresh_pg_dsn) as check, check.cursor() as cur:
        cur.execute("""SELECT (SELECT at FROM msd.leadership_events WHERE epoch = 2 AND event = 'acquired')
                              > clock_timestamp() - interval '1 hour'""")
        assert cur.fetchone()[0]
    other.close()


def test_a_newer_codes_migrations_are_listed_without_being_applied(db, tmp_path):
    """What a standby started with newer code reports while it waits for a step-down."""
    from msd.store.migrate import DEFAULT_SQL_DIR, unapplied
    for path in DEFAULT_SQL_DIR.glob("*.sql"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "999_newer.sql").write_text("CREATE TABLE msd.newer (id int);")
    with db.transaction() as conn:
        assert unapplied(conn) == []
        assert unapplied(conn, tmp_path) == ["999_newer.sql"]
        cur = conn.cursor()
        cur.execute("SELECT to_regclass('msd.newer')")
        assert cur.fetchone()[0] is None


def test_signals_are_stamped_on_insert_and_on_becoming_sent_only(db, fresh_pg_dsn):
    """sql/014: the update trigger fires only when a row becomes 'sent' under an epoch; the
    stamps are those 013 defined (epoch and written_at on insert, sent_epoch and written_at once
    sent), and any other update (a failed attempt, a second mark) leaves them alone."""
    import uuid
    from msd.store.outbox import mark_sent, record_failed_attempt
    tx(db, lease.try_acquire, A, 30)
    writer = _writer(fresh_pg_dsn, 1)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    with writer.transaction() as conn, conn.cursor() as cur:
        for sid in ids:
            cur.execute("""INSERT INTO msd.signals (signal_id, strategy_id, asset, signal_type, amount, confidence,
                                                    mode, body, snapshot, created_at)
                           VALUES (%s, 's', 'BTCUSDT', 'buy', 10, 0.5, 'warmup', '{}', '{}', now())""", (sid,))

    def stamps(sid):
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("SELECT epoch, sent_epoch, written_at FROM msd.signals WHERE signal_id = %s", (sid,))
            return cur.fetchone()
    inserted = stamps(ids[0])
    assert inserted[:2] == (1, None) and inserted[2] is not None
    with writer.transaction() as conn:
        record_failed_attempt(conn, ids[0], "nacked")
    assert stamps(ids[0]) == inserted                               # not a move to 'sent'
    with writer.transaction() as conn:
        mark_sent(conn, [ids[0]])
    sent = stamps(ids[0])
    assert sent[:2] == (1, 1) and sent[2] > inserted[2]
    with writer.transaction() as conn:
        mark_sent(conn, [ids[0]])                                   # already sent: no new stamp
    assert stamps(ids[0]) == sent
    with db.transaction() as conn:
        mark_sent(conn, [ids[1]])                                   # no writer epoch: nothing stamped
    assert stamps(ids[1])[:2] == (1, None)
