"""Inputs msd could not use, parked byte for byte (DESIGN.md §8: park, never crash or block)."""
from __future__ import annotations

from typing import Any, Mapping

import psycopg2

from msd.store.jsonb import to_json


def record_dead_letter(conn, source: str, reason: str, detail: str | None, payload: bytes,
                       headers: Mapping[str, Any] | None, trace_id: str | None) -> int:
    """Store one unusable input in the caller's transaction; returns its id.

    `source` names where it came from (a queue name), `reason` is the short metric label of
    InvalidMessage, `detail` the human explanation.
    """
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.dead_letters (source, reason, detail, payload, headers, trace_id)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (source, reason, detail, psycopg2.Binary(bytes(payload)),
             to_json(dict(headers)) if headers is not None else None, trace_id))
        return cur.fetchone()[0]


def count_dead_letters(conn, *, source: str | None = None) -> int:
    """Number of parked inputs, optionally from one source."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM msd.dead_letters WHERE %s IS NULL OR source = %s",
                    (source, source))
        return cur.fetchone()[0]
