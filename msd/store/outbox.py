"""The signal outbox in `msd.signals`: a signal is written here before it is published.

A row is `pending` until the broker confirms it, then `sent`. Pending rows are published
oldest first, so an outage delays signals but never reorders or loses them. A pending row of an
expiring mode older than the age limit becomes `expired` instead (`expire_stale`): it is never
sent, and it is not a publish failure. A pending row its role found obsolete just before sending
it (an exit whose position closed meanwhile) becomes `voided` (`void_pending`), with the reason.

A row's `created_at` is its decision's time, and every age, expiry and stamp a decision reads
is measured at the caller's `now` (its injected clock, issue 12), never the database's `now()`:
in a replay the two are years apart. `sent_at` and `unconfirmed_at` are the publisher's
bookkeeping (when the broker answered), in the database's clock; no decision reads their values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping

from msd.values.messages import TradingSignal
from msd.values.parsing import check_aware
from msd.store.jsonb import to_json


@dataclass(frozen=True)
class PendingSignal:
    signal_id: str
    strategy_id: str
    body: bytes
    trace_id: str | None
    mode: str = "warmup"
    amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class ExpiredSignal:
    """A pending signal that waited too long; `body` is its wire JSON (exits read metadata from it)."""
    signal_id: str
    strategy_id: str
    mode: str
    asset: str
    signal_type: str
    amount: Decimal
    created_at: datetime
    age_s: float
    body: Mapping[str, Any]


@dataclass(frozen=True)
class VoidedSignal(ExpiredSignal):
    """A pending signal voided instead of sent; `reason` is the label its role gave."""
    reason: str = ""


def insert_signal_sql(cur, signal: TradingSignal, wire: Mapping[str, Any], mode: str) -> bytes:
    """The INSERT recording a signal as pending (its full wire JSON included), as SQL text."""
    return cur.mogrify(
        """INSERT INTO msd.signals (signal_id, strategy_id, asset, signal_type, amount, confidence, mode,
                                    model_version, body, snapshot, trace_id, created_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)""",
        (signal.signal_id, signal.strategy_id, signal.asset, signal.signal_type, signal.amount,
         signal.confidence, mode, signal.model_version, to_json(dict(wire)),
         to_json(dict(wire["market_data_snapshot"])), signal.trace_id, signal.timestamp))


def insert_signal(conn, signal: TradingSignal, wire: Mapping[str, Any], mode: str, *,
                  before: bytes | None = None) -> None:
    """Record a signal as pending. With `before` (SQL text), both go in one statement string: in
    autocommit that is one round trip and one implicit transaction (both or neither)."""
    with conn.cursor() as cur:
        sql = insert_signal_sql(cur, signal, wire, mode)
        cur.execute(sql if before is None else before + b";\n" + sql)


def pending_signals(conn, modes: tuple[str, ...], limit: int = 500, *,
                    exclude: list[str] | None = None) -> list[PendingSignal]:
    """Unsent signals of the given modes, oldest first, but those in `exclude` (in flight).

    Each publishing role owns the modes it writes (the signaller warm-up and model signals, the
    exit role exits), so two roles never send the same pending row.
    """
    with conn.cursor() as cur:
        cur.execute("""SELECT signal_id::text, strategy_id, body, trace_id, mode, amount FROM msd.signals
                        WHERE outbox_state = 'pending' AND mode = ANY(%s) AND signal_id <> ALL(%s::uuid[])
                        ORDER BY created_at, signal_id LIMIT %s""", (list(modes), list(exclude or ()), limit))
        return [PendingSignal(sid, strategy, json.dumps(body, separators=(",", ":")).encode(), trace, mode, amount)
                for sid, strategy, body, trace, mode, amount in cur.fetchall()]


def expire_stale(conn, modes: tuple[str, ...], max_age: timedelta, *, now: datetime,
                 exclude: list[str] | None = None) -> list[ExpiredSignal]:
    """Mark pending signals of `modes` decided longer than `max_age` before `now` (the caller's
    clock, the one that stamped their `created_at`) as expired at `now`; returns them.
    A signal whose confirm was lost (`unconfirmed_at`) never expires: it may be out already; nor
    does one in `exclude` (in flight: sent, its confirm not heard yet).

    In the caller's transaction, so that whatever the caller undoes for them (an exit's ladder
    step and in-flight state) commits or rolls back together with the expiry.
    """
    if not modes:
        return []
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.signals
                          SET outbox_state = 'expired', expired_at = %(now)s,
                              last_error = 'expired unsent after ' || round(extract(epoch FROM %(now)s - created_at))
                                           || 's (limit ' || %(limit)s || 's)'
                        WHERE outbox_state = 'pending' AND mode = ANY(%(modes)s) AND created_at < %(now)s - %(age)s
                          AND unconfirmed_at IS NULL AND signal_id <> ALL(%(exclude)s::uuid[])
                    RETURNING signal_id::text, strategy_id, mode, asset, signal_type, amount, created_at,
                              extract(epoch FROM %(now)s - created_at)::float8, body""",
                    {"modes": list(modes), "age": max_age, "limit": round(max_age.total_seconds(), 3),
                     "exclude": list(exclude or ()), "now": check_aware("now", now)})
        return sorted((ExpiredSignal(*row) for row in cur.fetchall()), key=lambda e: (e.created_at, e.signal_id))


def void_pending(conn, reasons: Mapping[str, tuple[str, str]], *, now: datetime) -> list[VoidedSignal]:
    """Mark these pending signals `voided` at `now`, the caller's clock (signal_id -> (reason,
    text for last_error)); returns those that were still pending, oldest first, with their age at
    `now`. In the caller's transaction, like expire_stale."""
    if not reasons:
        return []
    ids = sorted(reasons)
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.signals s
                          SET outbox_state = 'voided', voided_at = %(now)s, last_error = v.text
                         FROM unnest(%(ids)s::uuid[], %(texts)s::text[]) AS v(signal_id, text)
                        WHERE s.signal_id = v.signal_id AND s.outbox_state = 'pending'
                    RETURNING s.signal_id::text, s.strategy_id, s.mode, s.asset, s.signal_type, s.amount, s.created_at,
                              extract(epoch FROM %(now)s - s.created_at)::float8, s.body""",
                    {"ids": ids, "texts": [reasons[one][1][:1000] for one in ids], "now": check_aware("now", now)})
        rows = cur.fetchall()
    return sorted((VoidedSignal(*row, reason=reasons[row[0]][0]) for row in rows),
                  key=lambda e: (e.created_at, e.signal_id))


def pending_backlog(conn, modes: tuple[str, ...], now: datetime) -> tuple[int, float | None]:
    """(number of pending signals of `modes`, age in seconds at `now` (the caller's clock) of the
    oldest, None when there is none)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*), extract(epoch FROM %s - min(created_at))::float8 FROM msd.signals
                        WHERE outbox_state = 'pending' AND mode = ANY(%s)""", (check_aware("now", now), list(modes)))
        count, oldest = cur.fetchone()
        return count, oldest


def mark_sent(conn, signal_ids: list[str]) -> None:
    """Record that the broker confirmed these signals.

    Committed without waiting for the WAL flush (one statement string: autocommit runs it as one
    implicit transaction, in which SET LOCAL holds): the flush was the largest single cost on the
    signal path, and a mark lost to a PostgreSQL crash only leaves the row pending, so it is
    published again with the same signal_id, which order-manager dedupes (CONTRACTS.md §1.3):
    the same outcome as a crash of msd between the confirm and the mark.
    """
    with conn.cursor() as cur:
        cur.execute(b"SET LOCAL synchronous_commit TO off;\n" + mark_sent_sql(cur, signal_ids))


def mark_sent_sql(cur, signal_ids: list[str]) -> bytes:
    """The UPDATE marking these signals sent, as SQL text (to go with another statement's commit)."""
    return cur.mogrify("""UPDATE msd.signals SET outbox_state = 'sent', sent_at = now(), attempts = attempts + 1,
                                 last_error = NULL WHERE signal_id = ANY(%s::uuid[])""", (list(signal_ids),))


def record_failed_attempt(conn, signal_id: str, error: str, *, unconfirmed: bool = False) -> None:
    """A failed publish; `unconfirmed`: the connection was lost while its confirm was awaited, so
    it may be on the queue already (`unconfirmed_at` set: it is sent again, never expired)."""
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.signals SET attempts = attempts + 1, last_error = %s,
                              unconfirmed_at = CASE WHEN %s THEN coalesce(unconfirmed_at, now()) ELSE unconfirmed_at END
                        WHERE signal_id = %s""", (error[:1000], unconfirmed, signal_id))


# msd's decisions that count toward exposure until an order row shows them (in_flight_notional)
RECENT_DECISIONS = """s.mode IN ('warmup', 'model') AND s.created_at > %(now)s - %(window)s
   AND s.outbox_state <> 'expired'"""
SIGNED_AMOUNT = "CASE WHEN s.signal_type = 'buy' THEN s.amount ELSE -s.amount END"
IN_FLIGHT_SQL = f"""SELECT coalesce(sum({SIGNED_AMOUNT}), 0)
  FROM msd.signals s
  LEFT JOIN orders o ON o.signal_id = s.signal_id AND s.outbox_state <> 'pending'
 WHERE s.asset = %(asset)s AND {RECENT_DECISIONS} AND o.signal_id IS NULL"""
# Which of the given signals order-manager has written an order row for (a one-row query)
ORDERED_AMONG_SQL = """SELECT coalesce(array_agg(DISTINCT signal_id::text), '{}')
  FROM orders WHERE signal_id = ANY(%(in_flight_ids)s::text[]::uuid[])"""


def in_flight_params(asset: str, recent_s: float, now: datetime) -> dict[str, Any]:
    return {"asset": asset, "window": timedelta(seconds=recent_s), "now": now}


def in_flight_notional(conn, asset: str, recent_s: float, now: datetime) -> Decimal:
    """Signed USDT of msd's own decisions on `asset` that the shared tables do not show yet:
    waiting in the outbox, or sent within `recent_s` before `now` (the caller's clock) with no
    order row (order-manager has not taken it yet). Buys count positive, sells negative. Exits
    are left out: they only reduce; expired signals too: they were never sent.

    The two cases are two branches, so that "no order row" is an anti-join (orders read once,
    hashed): written as `pending OR NOT EXISTS (...)` it was a subplan scanning all of `orders`
    (no index on signal_id there) once per recent signal, which grows with the table's age.
    """
    with conn.cursor() as cur:
        cur.execute(IN_FLIGHT_SQL, in_flight_params(asset, recent_s, now))
        return cur.fetchone()[0]


def recent_decisions(conn, recent_s: float, now: datetime) -> list[tuple[str, str, Decimal, datetime]]:
    """Every asset's signals that `in_flight_notional` counts but for the order check, as
    (signal_id, asset, signed amount, created_at): what msd.strategies.in_flight is seeded with."""
    with conn.cursor() as cur:
        cur.execute(f"""SELECT s.signal_id::text, s.asset, {SIGNED_AMOUNT}, s.created_at FROM msd.signals s
                         WHERE {RECENT_DECISIONS} ORDER BY s.created_at""",
                    {"window": timedelta(seconds=recent_s), "now": now})
        return cur.fetchall()


def published_signals(conn, signal_ids: list[str]) -> set[str]:
    """Which of these signals the broker confirmed (`sent`): a pending one may still go out."""
    with conn.cursor() as cur:
        cur.execute("""SELECT signal_id::text FROM msd.signals
                        WHERE signal_id = ANY(%s::uuid[]) AND outbox_state = 'sent'""", (list(signal_ids),))
        return {row[0] for row in cur.fetchall()}
