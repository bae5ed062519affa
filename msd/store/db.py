"""One PostgreSQL connection per process role, with loss turned into `DatabaseUnavailable`.

psycopg2 reports a dropped server, a refused connect, a statement timeout and a deadlock all as
OperationalError/InterfaceError. Each means "try again later" to a role, so all of them leave
this module as `DatabaseUnavailable` and the connection is discarded; the next use reconnects.
A Database is not thread-safe: give every thread its own.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from msd.errors import DatabaseUnavailable, Fenced

CONNECTION_LOST_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
FENCED_SQLSTATE = "MF001"       # raised by msd.fence() (sql/013_leadership.sql)


@dataclass(frozen=True)
class WriterSession:
    """What every connection of a leader's process says about its writer (set once per process,
    msd.roles.runtime.process): the epoch its writes are fenced by, the instance (in
    application_name, so an operator sees whose connection it is) and how long the server lets
    a session sit idle inside a transaction, so a dead host's open transaction cannot hold the
    lease's key lock (and block the next leader's take-over) until TCP gives up."""
    epoch: int
    instance: str
    idle_in_transaction_ms: int


_writer: WriterSession | None = None


def set_writer_session(session: WriterSession | None) -> None:
    """Every connection this process opens from now on writes as `session` (None: unfenced)."""
    global _writer
    _writer = session


def translate_fenced(exc: BaseException) -> None:
    """Raise `Fenced` if `exc` is the fence refusing a write of a superseded epoch."""
    if isinstance(exc, psycopg2.Error) and exc.pgcode == FENCED_SQLSTATE:
        raise Fenced(describe(exc)) from exc
# Told the outcome of every use: (True, None) after a commit, (False, reason) when the database
# could not be used. Roles pass msd.roles.runtime.process.DependencyHealth.reporter("database").
OnResult = Callable[[bool, "str | None"], None]


def retry_backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based): doubling, capped, jittered.

    The jitter keeps half of the capped delay fixed so waits still grow, and randomises the
    other half so that roles restarted together do not reconnect in lockstep.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


def connect(dsn: str, *, connect_timeout: int = 5,
            statement_timeout_ms: int | None = None,
            application_name: str = "msd") -> psycopg2.extensions.connection:
    """Open a connection with msd's session settings (UTC, timeouts, TCP keepalives)."""
    options = "-c TimeZone=UTC"
    if statement_timeout_ms is not None:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    if _writer is not None:
        options += (f" -c msd.epoch={_writer.epoch}"
                    f" -c idle_in_transaction_session_timeout={_writer.idle_in_transaction_ms}")
        application_name = f"{application_name} [{_writer.instance} epoch {_writer.epoch}]"
    try:
        return psycopg2.connect(
            dsn, connect_timeout=connect_timeout, application_name=application_name,
            options=options, keepalives=1, keepalives_idle=5, keepalives_interval=2, tcp_user_timeout=10_000,
            keepalives_count=3)
    except CONNECTION_LOST_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {describe(exc)}") from exc


def execute_prepared(cur, name: str, sql: str, params: Mapping[str, Any]) -> None:
    """Run `sql` (named `%(key)s` parameters) as the session's prepared statement `name`,
    preparing it on first use in each session: a query on a latency path planned once per
    connection instead of on every call (the exposure read's plan took 0.3 ms against 0.1 ms
    to run it). Only on an autocommit connection, where a failed EXECUTE aborts no transaction;
    otherwise the statement runs plainly."""
    keys = list(params)
    if not cur.connection.autocommit:
        cur.execute(sql, params)
        return
    execute = f"EXECUTE {name} ({', '.join(['%s'] * len(keys))})" if keys else f"EXECUTE {name}"
    values = [params[key] for key in keys]
    text = sql
    for position, key in enumerate(keys, 1):
        text = text.replace(f"%({key})s", f"${position}")
    if "%" in text:                 # `%%` or a positional `%s`: not something PREPARE can take
        cur.execute(sql, params)
        return
    try:
        cur.execute(execute, values)
    except psycopg2.errors.InvalidSqlStatementName:     # a new session: not prepared yet
        cur.execute(f"PREPARE {name} AS {text}")
        cur.execute(execute, values)
    except psycopg2.errors.FeatureNotSupported:
        # "cached plan must not change result type": a column the statement reads changed type
        # (the neighbours own those tables); prepared again, it follows the new type.
        cur.execute(f"DEALLOCATE {name}")
        cur.execute(f"PREPARE {name} AS {text}")
        cur.execute(execute, values)


def describe(exc: BaseException) -> str:
    """One line for logs and `degraded_reason` (psycopg2 messages span several lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Database:
    """Lazily connected holder of one connection; reconnects on the first use after a loss.

    `on_result`, when given, hears the outcome of every transaction: so "the database is back"
    is only ever said after something was committed, never because a retry was due.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 5,
                 statement_timeout_ms: int | None = 10_000, application_name: str = "msd",
                 on_result: OnResult | None = None):
        self._on_result = on_result
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._application_name = application_name
        self._conn: psycopg2.extensions.connection | None = None
        self._degraded_reason: str | None = None

    @property
    def degraded_reason(self) -> str | None:
        """Why the last attempt failed; None once a transaction has committed again."""
        return self._degraded_reason

    def connection(self) -> psycopg2.extensions.connection:
        """The open connection, connecting first if there is none or it was closed."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self._dsn, connect_timeout=self._connect_timeout,
                                     statement_timeout_ms=self._statement_timeout_ms,
                                     application_name=self._application_name)
            except DatabaseUnavailable as exc:
                self._degraded_reason = str(exc)
                self._tell(False, str(exc))
                raise
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.connection]:
        """Yield the connection inside a transaction: commit on success, roll back on error.

        A lost connection (during the body or the commit) raises DatabaseUnavailable; any
        other exception from the body propagates unchanged after the rollback.
        """
        conn = self.connection()
        try:
            yield conn
            conn.commit()
        except CONNECTION_LOST_ERRORS as exc:
            self._discard(exc)
            raise self._lost(exc) from exc
        except BaseException as exc:
            self._rollback_or_discard(conn)
            translate_fenced(exc)
            raise
        self._degraded_reason = None
        self._tell(True, None)

    @contextmanager
    def autocommit(self) -> Iterator[psycopg2.extensions.connection]:
        """Yield the connection with each statement committed on its own.

        For reads and single-statement writes on a latency path: psycopg2 sends BEGIN and
        COMMIT as round trips of their own, which a lone statement does not need (it is atomic
        by itself). Errors are translated as in `transaction`.
        """
        conn = self.connection()
        conn.autocommit = True
        try:
            yield conn
        except CONNECTION_LOST_ERRORS as exc:
            self._discard(exc)
            raise self._lost(exc) from exc
        except psycopg2.Error as exc:
            translate_fenced(exc)
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False
        self._degraded_reason = None
        self._tell(True, None)

    def _lost(self, exc: BaseException) -> DatabaseUnavailable:
        error = DatabaseUnavailable(f"PostgreSQL connection lost: {describe(exc)}")
        self._tell(False, str(error))
        return error

    def _tell(self, ok: bool, reason: str | None) -> None:
        if self._on_result is not None:
            self._on_result(ok, reason)

    def sibling(self, application_name: str | None = None) -> "Database":
        """Another holder with the same settings and a connection of its own (for a read run
        on a thread beside this one: one psycopg2 connection serves one transaction at a
        time)."""
        return Database(self._dsn, connect_timeout=self._connect_timeout,
                        statement_timeout_ms=self._statement_timeout_ms,
                        application_name=application_name or self._application_name,
                        on_result=self._on_result)

    def close(self) -> None:
        """Close the connection if open; a later use reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()

    def _discard(self, exc: BaseException) -> None:
        self._degraded_reason = describe(exc)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except CONNECTION_LOST_ERRORS:
                pass  # already unusable; dropping our reference is what matters

    def _rollback_or_discard(self, conn: psycopg2.extensions.connection) -> None:
        try:
            conn.rollback()
        except CONNECTION_LOST_ERRORS as exc:
            self._discard(exc)
