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


def test_a_prepared_statement_is_prepared_once_per_session_and_survives_a_new_session_and_ddl(db):
    from msd.store.db import execute_prepared

    def run(value, *, autocommit=True):
        with (db.autocommit() if autocommit else db.transaction()) as conn, conn.cursor() as cur:
            execute_prepared(cur, "msd_test_prepared", "SELECT count(*) + %(n)s FROM msd_test_prepared_t", {"n": value})
            result = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'msd_test_prepared'")
            return result, cur.fetchone()[0]

    with db.autocommit() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS msd_test_prepared_t; CREATE TABLE msd_test_prepared_t (x int)")
    try:
        assert run(1) == (1, 1) and run(2) == (2, 1)          # prepared on first use, then reused
        with db.autocommit() as conn, conn.cursor() as cur:   # the table replaced under the statement
            cur.execute("DROP TABLE msd_test_prepared_t; CREATE TABLE msd_test_prepared_t (x int);"
                        "INSERT INTO msd_test_prepared_t VALUES (1)")
        assert run(0) == (1, 1)
        terminate(backend_pid(db))                             # a new session prepares it again
        with pytest.raises(DatabaseUnavailable):
            backend_pid(db)
        assert run(5) == (6, 1)
        assert run(7, autocommit=False)[0] == 8                # in a transaction: run plainly
    finally:
        with db.autocommit() as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS msd_test_prepared_t")


def test_prepared_statement_broke_for_good_when_a_column_changed_type(db):
    """Regression: a neighbour altering a column's type made every EXECUTE of the session's
    prepared statement fail ("cached plan must not change result type") until a reconnect."""
    from msd.store.db import execute_prepared

    def run():
        with db.autocommit() as conn, conn.cursor() as cur:
            execute_prepared(cur, "msd_test_retyped", "SELECT sum(x) FROM msd_test_retyped_t WHERE x > %(n)s",
                             {"n": 0})
            return cur.fetchone()[0]

    with db.autocommit() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS msd_test_retyped_t; CREATE TABLE msd_test_retyped_t (x int);"
                    "INSERT INTO msd_test_retyped_t VALUES (2), (3)")
    try:
        assert run() == 5
        with db.autocommit() as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE msd_test_retyped_t ALTER COLUMN x TYPE double precision")
        assert run() == 5.0 and isinstance(run(), float)
    finally:
        with db.autocommit() as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS msd_test_retyped_t")


def test_a_statement_with_a_literal_percent_is_run_plainly(db):
    from msd.store.db import execute_prepared
    with db.autocommit() as conn, conn.cursor() as cur:
        execute_prepared(cur, "msd_test_percent", "SELECT 7 %% 4 + %(n)s", {"n": 1})
        assert cur.fetchone()[0] == 4
        cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'msd_test_percent'")
        assert cur.fetchone()[0] == 0
