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


def load_position_state(conn, asset: str, position_key: str) -> StoredState | None:
    """The stored state of one position (the newest row, whatever its side), or None."""
    with conn.cursor() as cur:
        cur.execute("""SELECT asset, side, position_key, state FROM msd.position_exit_state
                        WHERE asset = %s AND position_key = %s ORDER BY updated_at DESC LIMIT 1""",
                    (asset, position_key))
        row = cur.fetchone()
    return None if row is None else StoredState(*row)


def signal_recorded(conn, signal_id: str) -> bool:
    """Whether the outbox holds this signal (whatever became of it since)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM msd.signals WHERE signal_id = %s", (signal_id,))
        return cur.fetchone() is not None


_SAVE_SQL = """
WITH v(asset, side, position_key, state) AS (VALUES {values}),
     other_side AS (DELETE FROM msd.position_exit_state s USING v
                     WHERE s.asset = v.asset AND s.position_key = v.position_key AND s.side <> v.side)
INSERT INTO msd.position_exit_state (asset, side, position_key, state)
SELECT asset, side, position_key, state::jsonb FROM v
    ON CONFLICT (asset, side, position_key) DO UPDATE SET state = EXCLUDED.state, updated_at = now()"""


def save_states_sql(cur, states: Iterable[Mapping[str, Any]]) -> bytes | None:
    """One statement upserting states given as `ExitState.to_dict()` mappings and dropping a
    flipped position's row of the other side; None when there is nothing to save. Returned as
    SQL text so a caller can send it together with another statement in one round trip."""
    rows = [cur.mogrify("(%s, %s, %s, %s)", (s["asset"], s["side"], s["position_id"], to_json(s)))
            for s in states]
    if not rows:
        return None
    return _SAVE_SQL.format(values=b", ".join(rows).decode()).encode()


def save_states(conn, states: Iterable[Mapping[str, Any]]) -> int:
    """Upsert states (see save_states_sql) in the caller's transaction; returns how many."""
    states = list(states)
    with conn.cursor() as cur:
        sql = save_states_sql(cur, states)
        if sql is not None:
            cur.execute(sql)
    return len(states)


def delete_states(conn, keys: Iterable[tuple[str, str]]) -> None:
    """Delete every row of these (asset, position_key): the positions are flat."""
    keys = list(keys)
    if not keys:
        return
    with conn.cursor() as cur:
        execute_values(cur, """
            DELETE FROM msd.position_exit_state s USING (VALUES %s) AS v(asset, position_key)
             WHERE s.asset = v.asset AND s.position_key = v.position_key""", keys)
