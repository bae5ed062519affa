"""Inputs msd could not use, parked for inspection (DESIGN.md §8: park, never crash or block).

Bounded, so that a flood of junk cannot fill the disk: a stored body is cut to
`max_payload_bytes` (its full length is kept in `payload_bytes`), rows older than the retention
period are deleted (`purge_dead_letters`), and once a source has `max_stored_per_source` rows,
further dead letters of that source are only counted in `msd.dead_letter_overflow`
(`DeadLetterBudget` decides which).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Mapping

import psycopg2
from psycopg2.extras import execute_values

from msd.store.jsonb import to_json


@dataclass(frozen=True)
class DeadLetter:
    source: str                     # where it came from: a queue name
    reason: str                     # the short metric label of InvalidMessage
    detail: str | None              # the human explanation
    payload: bytes
    headers: Mapping[str, Any] | None
    trace_id: str | None


def record_dead_letter(conn, source: str, reason: str, detail: str | None, payload: bytes,
                       headers: Mapping[str, Any] | None, trace_id: str | None,
                       max_payload_bytes: int | None = None) -> int:
    """Store one unusable input in the caller's transaction; returns its id."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.dead_letters (source, reason, detail, payload, headers, trace_id, payload_bytes)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            _row(DeadLetter(source, reason, detail, payload, headers, trace_id), max_payload_bytes))
        return cur.fetchone()[0]


def record_dead_letters(conn, letters: Iterable[DeadLetter], max_payload_bytes: int | None = None) -> None:
    """Store many in one statement (a flood of junk costs one round trip per batch, not per message)."""
    rows = [_row(letter, max_payload_bytes) for letter in letters]
    if rows:
        with conn.cursor() as cur:
            execute_values(cur, """INSERT INTO msd.dead_letters
                                   (source, reason, detail, payload, headers, trace_id, payload_bytes) VALUES %s""",
                           rows, page_size=1000)


def record_overflow(conn, counts: Mapping[tuple[str, str], int]) -> None:
    """Count dead letters that were not stored, by (source, reason)."""
    rows = [(_text(source), _text(reason), n) for (source, reason), n in sorted(counts.items()) if n > 0]
    if rows:
        with conn.cursor() as cur:
            execute_values(cur, """INSERT INTO msd.dead_letter_overflow AS o (source, reason, count) VALUES %s
                                   ON CONFLICT (source, reason)
                                   DO UPDATE SET count = o.count + EXCLUDED.count, last_at = now()""", rows)


def stored_per_source(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM msd.dead_letters GROUP BY source")
        return dict(cur.fetchall())


def purge_dead_letters(conn, retention: timedelta, limit: int = 10_000) -> int:
    """Delete up to `limit` dead letters older than `retention` (oldest first); returns how many."""
    with conn.cursor() as cur:
        cur.execute("""DELETE FROM msd.dead_letters WHERE id IN (
                           SELECT id FROM msd.dead_letters WHERE received_at < now() - %s
                            ORDER BY received_at LIMIT %s)""", (retention, limit))
        return cur.rowcount


def count_dead_letters(conn, *, source: str | None = None) -> int:
    """Number of parked inputs, optionally from one source."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM msd.dead_letters WHERE %s IS NULL OR source = %s",
                    (source, source))
        return cur.fetchone()[0]


class DeadLetterBudget:
    """Which dead letters of a batch are stored and which only counted, per source (pure).

    `stored` is what the table holds per source (read at start and after each purge); a
    batch is split by `split`, and `committed` is called once the batch's transaction is in.
    """

    def __init__(self, max_stored_per_source: int, stored: Mapping[str, int] | None = None):
        self.limit = max_stored_per_source
        self.stored: Counter[str] = Counter(stored or {})

    def split(self, letters: Iterable[DeadLetter]) -> tuple[list[DeadLetter], Counter]:
        keep, overflow, planned = [], Counter(), Counter()
        for letter in letters:
            if self.stored[letter.source] + planned[letter.source] < self.limit:
                keep.append(letter)
                planned[letter.source] += 1
            else:
                overflow[(letter.source, letter.reason)] += 1
        return keep, overflow

    def committed(self, kept: Iterable[DeadLetter]) -> None:
        for letter in kept:
            self.stored[letter.source] += 1

    def reset(self, stored: Mapping[str, int]) -> None:
        self.stored = Counter(stored)


def _row(letter: DeadLetter, max_payload_bytes: int | None) -> tuple:
    payload = bytes(letter.payload)
    kept = payload if max_payload_bytes is None else payload[:max_payload_bytes]
    return (_text(letter.source), _text(letter.reason), _text(letter.detail), psycopg2.Binary(kept),
            _headers_json(letter.headers), _text(letter.trace_id), len(payload))


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds neither NUL nor lone surrogates; a hostile value must not make parking fail."""
    if value is None:
        return None
    return str(value).replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _headers_json(headers: Mapping[str, Any] | None) -> str | None:
    """AMQP headers as jsonb; any value a hostile producer can put there becomes storable JSON."""
    if headers is None:
        return None
    return to_json(_storable(dict(headers)))


def _storable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_text(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _text(str(value))
