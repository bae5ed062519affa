"""Apply `sql/NNN_*.sql` in order, once each, recorded in `msd.schema_migrations`.

Every process may call `apply_migrations` at start: a session advisory lock makes concurrent
callers take turns, and the second one finds nothing left to do. Each file runs in its own
transaction together with its bookkeeping row, so a failing file leaves no half-applied state.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from msd.errors import DatabaseUnavailable, MsdError
from msd.store.db import CONNECTION_LOST_ERRORS, connect, describe

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Arbitrary but fixed: every msd process must use the same key to serialise migrations.
MIGRATION_LOCK_KEY = 0x6D7364_0001  # "msd" + 1
MIGRATION_FILE = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")

BOOTSTRAP_SQL = """
CREATE SCHEMA IF NOT EXISTS msd;
CREATE TABLE IF NOT EXISTS msd.schema_migrations (
    version     text PRIMARY KEY,
    filename    text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: str          # the NNN prefix
    filename: str
    sql: str
    checksum: str         # sha256 hex of the file's bytes


def load_migrations(sql_dir: Path) -> list[Migration]:
    """The migration files of `sql_dir` in version order; other files are ignored."""
    if not sql_dir.is_dir():
        raise MsdError(f"migration directory {sql_dir} does not exist")
    migrations, seen = [], {}
    for path in sorted(sql_dir.iterdir()):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            continue
        version = match.group(1)
        if version in seen:
            raise MsdError(f"migrations {seen[version]} and {path.name} share version {version}")
        seen[version] = path.name
        data = path.read_bytes()
        migrations.append(Migration(version, path.name, data.decode("utf-8"),
                                    hashlib.sha256(data).hexdigest()))
    return migrations


def pending_migrations(available: list[Migration], applied: dict[str, str]) -> list[Migration]:
    """Those not yet applied; refuses if an applied file's content changed since.

    `applied` maps version → recorded checksum.
    """
    for migration in available:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MsdError(
                f"migration {migration.filename} was changed after it was applied "
                f"(recorded sha256 {recorded}, file has {migration.checksum}); "
                f"restore it and put the change in a new numbered file")
    return [m for m in available if m.version not in applied]


def apply_migrations(dsn: str, sql_dir: Path | str | None = None) -> list[str]:
    """Apply the pending migrations; return the file names applied (empty when up to date)."""
    available = load_migrations(Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR)
    conn = connect(dsn, application_name="msd-migrate")
    try:
        return _apply_locked(conn, available)
    except CONNECTION_LOST_ERRORS as exc:
        raise DatabaseUnavailable(f"migration interrupted: {describe(exc)}") from exc
    finally:
        # Closing the session also releases the advisory lock, whatever happened above.
        conn.close()


def _apply_locked(conn, available: list[Migration]) -> list[str]:
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    conn.autocommit = False
    with conn, conn.cursor() as cur:
        cur.execute(BOOTSTRAP_SQL)
        cur.execute("SELECT version, checksum FROM msd.schema_migrations")
        applied = dict(cur.fetchall())
    done = []
    for migration in pending_migrations(available, applied):
        _apply_one(conn, migration)
        done.append(migration.filename)
    return done


def _apply_one(conn, migration: Migration) -> None:
    try:
        with conn, conn.cursor() as cur:
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO msd.schema_migrations (version, filename, checksum)"
                " VALUES (%s, %s, %s)",
                (migration.version, migration.filename, migration.checksum))
    except CONNECTION_LOST_ERRORS:
        raise
    except psycopg2.Error as exc:
        raise MsdError(f"migration {migration.filename} failed: {describe(exc)}") from exc


def unapplied(conn, sql_dir: Path | str | None = None) -> list[str]:
    """The migration files of this code that the database has not applied yet (a newer code
    version than the schema), without applying anything."""
    available = load_migrations(Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('msd.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return [m.filename for m in available]
        cur.execute("SELECT version FROM msd.schema_migrations")
        applied = {version for (version,) in cur.fetchall()}
    return [m.filename for m in available if m.version not in applied]
