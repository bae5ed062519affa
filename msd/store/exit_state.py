"""Per-position exit state in `msd.position_exit_state`, one row per (asset, side, position id).

The row holds `ExitState.to_dict()` as jsonb; the rules package owns the format and its version,
this module only moves it. Rows are keyed by position, never by asset alone, so a new position
on the same asset can never read an old position's peak.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from psycopg2.extras import execute_values

from msd.store.jsonb import to_json


@dataclass(frozen=True)
class StoredState:
    """A row as read back: the key columns and the raw jsonb (the caller validates it)."""
    asset: str
    side: str
    position_key: str
    state: Mapping[str, Any]


def load_states(conn) -> list[StoredState]:
    with conn.cursor() as cur:
        cur.execute("SELECT asset, side, position_key, state FROM msd.position_exit_state ORDER BY updated_at")
        return [StoredState(asset, side, key, state) for asset, side, key, state in cur.fetchall()]


def save_states(conn, states: Iterable[Mapping[str, Any]]) -> int:
    """Upsert states given as `ExitState.to_dict()` mappings; returns how many were written."""
    rows = [(s["asset"], s["side"], s["position_id"], to_json(s)) for s in states]
    if not rows:
        return 0
    with conn.cursor() as cur:
        execute_values(cur, """
            INSERT INTO msd.position_exit_state (asset, side, position_key, state)
            VALUES %s
            ON CONFLICT (asset, side, position_key)
            DO UPDATE SET state = EXCLUDED.state, updated_at = now()""",
                       rows, template="(%s, %s, %s, %s::jsonb)")
    return len(rows)


def delete_states(conn, keys: Iterable[tuple[str, str | None, str]]) -> None:
    """Delete rows by (asset, side, position_key); a side of None deletes every side of that position."""
    with conn.cursor() as cur:
        for asset, side, position_key in keys:
            if side is None:
                cur.execute("DELETE FROM msd.position_exit_state WHERE asset = %s AND position_key = %s",
                            (asset, position_key))
            else:
                cur.execute("DELETE FROM msd.position_exit_state WHERE asset = %s AND side = %s"
                            " AND position_key = %s", (asset, side, position_key))
