"""apply_migrations against the real server: once per file, serialised, tamper-evident."""
import shutil
import threading

import pytest

from msd.errors import MsdError
from msd.store.db import Database
from msd.store.migrate import DEFAULT_SQL_DIR, apply_migrations

pytestmark = pytest.mark.integration


def tables_in_msd(dsn: str) -> set[str]:
    db = Database(dsn)
    try:
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = 'msd'")
            return {name for (name,) in cur.fetchall()}
    finally:
        db.close()


def recorded_versions(dsn: str) -> list[str]:
    db = Database(dsn)
    try:
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("SELECT version FROM msd.schema_migrations ORDER BY version")
            return [version for (version,) in cur.fetchall()]
    finally:
        db.close()


@pytest.fixture
def sql_dir(tmp_path):
    """A private copy of the repository's migrations that a test may add to or alter."""
    directory = tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, directory)
    return directory


def test_applies_every_file_once(fresh_pg_dsn):
    first = apply_migrations(fresh_pg_dsn)
    second = apply_migrations(fresh_pg_dsn)

    assert first == sorted(p.name for p in DEFAULT_SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    assert second == []
    assert {"signals", "order_events", "order_fill_state", "executions", "market_bars",
            "training_runs", "model_versions", "quality_metrics", "mode_transitions",
            "position_exit_state", "dead_letters", "schedule_state",
            "schema_migrations"} <= tables_in_msd(fresh_pg_dsn)


def test_concurrent_callers_apply_each_file_once(fresh_pg_dsn, sql_dir):
    # A slow file keeps the first caller inside the lock while the second one arrives.
    (sql_dir / "900_slow.sql").write_text("SELECT pg_sleep(0.3); CREATE TABLE msd.slow (x int);")
    start = threading.Barrier(2)
    results, errors = [], []

    def migrate():
        start.wait()
        try:
            results.append(apply_migrations(fresh_pg_dsn, sql_dir))
        except Exception as exc:  # collected so the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(len(r) for r in results) == [0, len(list(sql_dir.glob("*.sql")))]
    assert recorded_versions(fresh_pg_dsn) == sorted(p.name[:3] for p in sql_dir.glob("*.sql"))


def test_changed_file_is_refused_with_its_name(fresh_pg_dsn, sql_dir):
    apply_migrations(fresh_pg_dsn, sql_dir)
    schema = sql_dir / "001_schema.sql"
    schema.write_text(schema.read_text() + "\n-- edited after release\n")

    with pytest.raises(MsdError, match="001_schema.sql"):
        apply_migrations(fresh_pg_dsn, sql_dir)


def test_failing_file_is_named_and_leaves_no_trace(fresh_pg_dsn, sql_dir):
    (sql_dir / "901_broken.sql").write_text("CREATE TABLE msd.half (x int); SELECT no_such_column;")

    with pytest.raises(MsdError, match="901_broken.sql"):
        apply_migrations(fresh_pg_dsn, sql_dir)

    assert "half" not in tables_in_msd(fresh_pg_dsn)
    assert "901" not in recorded_versions(fresh_pg_dsn)
    assert "001" in recorded_versions(fresh_pg_dsn)


def test_missing_directory_is_named(fresh_pg_dsn, tmp_path):
    with pytest.raises(MsdError, match="nowhere"):
        apply_migrations(fresh_pg_dsn, tmp_path / "nowhere")
