"""The leadership lease in `msd.leadership` (sql/013_leadership.sql): acquire, renew, release.

Every change is one conditional UPDATE whose WHERE clause is the rule, with times from the
database's clock (`clock_timestamp()`, so a take-over that waited for the old epoch's writers
is timed after the wait). Taking the lease over increments `epoch`, which fences the previous
holder's writes (the `msd.fence` triggers). Transitions are audited in `msd.leadership_events`
in the same transaction as the change they record.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

CHANNEL = "msd_leadership"      # NOTIFY on release: a standby takes over without waiting a period
LEASE_COLUMNS = """epoch, holder, host, pid, config_hash, acquired_at, renewed_at, expires_at,
                   coalesce(expires_at > clock_timestamp(), false), clock_timestamp()"""


@dataclass(frozen=True)
class Claimant:
    """This instance as it appears in the lease."""
    holder: str              # "<instance>/<supervisor pid>": unique per run of an instance
    host: str
    pid: int
    config_hash: str


@dataclass(frozen=True)
class LeaseRow:
    epoch: int
    holder: str | None
    host: str | None
    pid: int | None
    config_hash: str | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    valid: bool              # held and not expired, by the database's clock
    db_now: datetime

    def view(self) -> dict:
        """For `msd-ctl status` (JSON-friendly)."""
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None
        return {"epoch": self.epoch, "holder": self.holder if self.valid else None, "host": self.host,
                "pid": self.pid, "config_hash": self.config_hash, "since": iso(self.acquired_at),
                "renewed_at": iso(self.renewed_at), "expires_at": iso(self.expires_at)}


def _row(cur) -> LeaseRow | None:
    found = cur.fetchone()
    return LeaseRow(*found) if found is not None else None


def table_exists(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('msd.leadership') IS NOT NULL")
        return cur.fetchone()[0]


def read_lease(conn) -> LeaseRow:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {LEASE_COLUMNS} FROM msd.leadership WHERE name = 'msd'")
        return _row(cur)


def try_acquire(conn, me: Claimant, ttl_s: float) -> LeaseRow | None:
    """Take the lease if it is free, expired or left by an earlier process of ours (same
    holder); the epoch goes up by one. None when another holder's lease is still valid.
    Runs in the caller's transaction, with its audit row."""
    with conn.cursor() as cur:
        cur.execute(f"""UPDATE msd.leadership
                           SET epoch = epoch + 1, holder = %(holder)s, host = %(host)s, pid = %(pid)s,
                               config_hash = %(hash)s, acquired_at = clock_timestamp(),
                               renewed_at = clock_timestamp(), expires_at = clock_timestamp() + %(ttl)s
                         WHERE name = 'msd'
                           AND (holder IS NULL OR expires_at <= clock_timestamp() OR holder = %(holder)s)
                     RETURNING {LEASE_COLUMNS}""",
                    {"holder": me.holder, "host": me.host, "pid": me.pid, "hash": me.config_hash,
                     "ttl": timedelta(seconds=ttl_s)})
        row = _row(cur)
    if row is not None:
        record_event(conn, row.epoch, "acquired", me, None)
    return row


def renew(conn, me: Claimant, epoch: int, ttl_s: float) -> LeaseRow | None:
    """Extend our lease of `epoch`; None when it is no longer ours (someone took it over)."""
    with conn.cursor() as cur:
        cur.execute(f"""UPDATE msd.leadership
                           SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + %(ttl)s,
                               config_hash = %(hash)s
                         WHERE name = 'msd' AND holder = %(holder)s AND epoch = %(epoch)s
                     RETURNING {LEASE_COLUMNS}""",
                    {"holder": me.holder, "epoch": epoch, "hash": me.config_hash,
                     "ttl": timedelta(seconds=ttl_s)})
        return _row(cur)


def release(conn, me: Claimant, epoch: int, event: str, detail: str | None = None) -> bool:
    """Give our lease of `epoch` up at once (graceful stop, step-down); False if it was not ours.
    The epoch stays: the next holder's take-over increments it."""
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.leadership SET holder = NULL, expires_at = NULL
                        WHERE name = 'msd' AND holder = %s AND epoch = %s""", (me.holder, epoch))
        released = cur.rowcount == 1
        if released:    # delivered at commit, to every instance listening
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(epoch)))
    record_event(conn, epoch, event, me, detail)
    return released


def listen(conn) -> None:
    """Hear releases on this connection (after the caller's commit) via `released_since`."""
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {CHANNEL}")


def released_since(conn) -> bool:
    """True when a release was announced since the last call: reads what the server has sent
    without waiting (call it outside a transaction)."""
    conn.poll()
    heard = bool(conn.notifies)
    conn.notifies.clear()
    return heard


def record_event(conn, epoch: int, event: str, me: Claimant, detail: str | None) -> None:
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.leadership_events (epoch, event, holder, host, pid, detail)
                       VALUES (%s, %s, %s, %s, %s, %s)""", (epoch, event, me.holder, me.host, me.pid, detail))
