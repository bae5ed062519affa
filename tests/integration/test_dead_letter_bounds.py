"""A flood of junk cannot fill the disk: bodies cut, a per-source cap, retention (real PostgreSQL)."""
import queue
from datetime import timedelta

import pytest
import yaml

from msd.bus.consumer import Delivery
from msd.config import load_config
from msd.roles.consumer.main import BatchProcessor
from msd.store.db import Database
from msd.store.deadletters import purge_dead_letters

pytestmark = pytest.mark.integration
ORDERS = "order-manager.order_events"


class FakeContext:
    """What BatchProcessor uses of a RoleContext."""
    name = "consumer"

    def __init__(self, config):
        self.config = config
        self.queues = {"market": queue.Queue(), "exit_prices": queue.Queue(), "positions": queue.Queue()}
        self.status = {}

    def set_status(self, **fields):
        self.status.update(fields)

    def beat(self):
        pass


@pytest.fixture
def processor(fresh_pg_dsn, tmp_path):
    path = tmp_path / "msd.yaml"
    path.write_text(yaml.safe_dump({"database": {"dsn": fresh_pg_dsn}, "consumer": {
        "dead_letters": {"max_stored_per_source": 5, "max_payload_bytes": 300, "retention_days": 1}}}))
    ctx = FakeContext(load_config(path, env={}))
    db = Database(fresh_pg_dsn)
    yield BatchProcessor(ctx, db, {ORDERS: "order_events"}), db
    db.close()


def junk(n, start=0, body=b"{not json"):
    return [Delivery(ORDERS, body + b" " * 500, {}, start + i + 1, False, 0.0) for i in range(n)]


def rows(db, sql):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_beyond_the_per_source_cap_dead_letters_are_counted_not_stored(processor):
    process, db = processor
    process(junk(3))
    process(junk(4, 3) + junk(2, 7, b"[1]"))
    assert rows(db, "SELECT count(*) FROM msd.dead_letters") == [(5,)]
    assert dict((r, n) for r, n in rows(db, "SELECT reason, count FROM msd.dead_letter_overflow")) == {
        "bad_json": 2, "not_object": 2}
    assert process.ctx.status["invalid"] == 9 and process.ctx.status["dead_letters_not_stored"] == 4


def test_a_stored_body_is_cut_and_its_length_kept(processor):
    process, db = processor
    process(junk(1))
    assert rows(db, "SELECT length(payload), payload_bytes FROM msd.dead_letters") == [(300, 509)]


def test_retention_deletes_old_dead_letters_and_gives_the_cap_back(processor):
    process, db = processor
    process(junk(5))
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("UPDATE msd.dead_letters SET received_at = now() - interval '2 days' WHERE id <= 3")
    process.maybe_purge()
    assert rows(db, "SELECT count(*) FROM msd.dead_letters") == [(2,)]
    process(junk(3, 10))
    assert rows(db, "SELECT count(*) FROM msd.dead_letters") == [(5,)]
    with db.transaction() as conn:
        assert purge_dead_letters(conn, timedelta(days=1)) == 0
