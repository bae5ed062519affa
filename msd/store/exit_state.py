"""Per-position exit state in `msd.position_exit_state`, one row per (asset, position id).

The row holds `ExitState.to_dict()` as jsonb; the rules package owns the format and its version,
this module only moves it. The primary key also has the side: a position that flips is a new
position on the same row id, so saving a state removes the row of the other side.
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
    """Upsert states given as `ExitState.to_dict()` mappings (dropping a flipped position's row of
    the other side); returns how many were written."""
    rows = [(s["asset"], s["side"], s["position_id"], to_json(s)) for s in states]
    if not rows:
        return 0
    with conn.cursor() as cur:
        execute_values(cur, """
            DELETE FROM msd.position_exit_state s USING (VALUES %s) AS v(asset, side, position_key)
             WHERE s.asset = v.asset AND s.position_key = v.position_key AND s.side <> v.side""",
                       [row[:3] for row in rows])
        execute_values(cur, """
            INSERT INTO msd.position_exit_state (asset, side, position_key, state)
            VALUES %s
            ON CONFLICT (asset, side, position_key)
            DO UPDATE SET state = EXCLUDED.state, updated_at = now()""",
                       rows, template="(%s, %s, %s, %s::jsonb)")
    return len(rows)


def delete_states(conn, keys: Iterable[tuple[str, str]]) -> None:
    """Delete every row of these (asset, position_key): the positions are flat."""
    keys = list(keys)
    if not keys:
        return
    with conn.cursor() as cur:
        execute_values(cur, """
            DELETE FROM msd.position_exit_state s USING (VALUES %s) AS v(asset, position_key)
             WHERE s.asset = v.asset AND s.position_key = v.position_key""", keys)
