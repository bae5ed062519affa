"""Database: lost and refused connections surface as DatabaseUnavailable, then recover."""
import socket

import pytest

from msd.errors import DatabaseUnavailable
from msd.store.db import Database
from tests.fixtures.pg import ADMIN_DSN

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend_pid(db: Database) -> int:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def terminate(pid: int) -> None:
    admin = Database(ADMIN_DSN)
    try:
        with admin.transaction() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        admin.close()


@pytest.fixture
def db(pg_dsn):
    database = Database(pg_dsn)
    yield database
    database.close()


def test_closed_port_raises_database_unavailable():
    db = Database(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres", connect_timeout=2)

    with pytest.raises(DatabaseUnavailable):
        with db.transaction():
            pass
    assert db.degraded_reason is not None


def test_reconnects_after_its_backend_is_terminated(db):
    old_pid = backend_pid(db)
    terminate(old_pid)

    with pytest.raises(DatabaseUnavailable):
        backend_pid(db)
    assert db.degraded_reason is not None

    assert backend_pid(db) != old_pid
    assert db.degraded_reason is None


def test_statement_timeout_raises_database_unavailable(pg_dsn):
    db = Database(pg_dsn, statement_timeout_ms=50)
    try:
        with pytest.raises(DatabaseUnavailable, match="statement timeout"):
            with db.transaction() as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(5)")
        assert backend_pid(db) > 0
    finally:
        db.close()


def test_other_errors_propagate_unchanged_and_roll_back(db):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS db_rollback_probe (x int)")

    with pytest.raises(ValueError, match="boom"):
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO db_rollback_probe VALUES (1)")
            raise ValueError("boom")

    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM db_rollback_probe")
        assert cur.fetchone()[0] == 0
