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
            (_text(source), _text(reason), _text(detail), psycopg2.Binary(bytes(payload)),
             _headers_json(headers), _text(trace_id)))
        return cur.fetchone()[0]


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a hostile header must not make parking itself fail."""
    return None if value is None else str(value).replace("\x00", "\ufffd")


def _headers_json(headers: Mapping[str, Any] | None) -> str | None:
    if headers is None:
        return None
    # jsonb refuses \u0000 too; the payload itself is kept byte for byte in bytea.
    return to_json({_text(str(k)): _text(v) if isinstance(v, str) else
                    (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                    for k, v in dict(headers).items()}).replace("\\u0000", "\ufffd")


def count_dead_letters(conn, *, source: str | None = None) -> int:
    """Number of parked inputs, optionally from one source."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM msd.dead_letters WHERE %s IS NULL OR source = %s",
                    (source, source))
        return cur.fetchone()[0]
