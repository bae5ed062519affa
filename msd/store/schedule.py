"""Next due times of periodic jobs (`msd.schedule_state`), so a restart neither skips nor repeats them."""
from __future__ import annotations

from datetime import datetime


def next_run_at(conn, name: str) -> datetime | None:
    with conn.cursor() as cur:
        cur.execute("SELECT next_run_at FROM msd.schedule_state WHERE name = %s", (name,))
        row = cur.fetchone()
        return row[0] if row else None


def set_next_run(conn, name: str, next_run: datetime, ran_at: datetime | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.schedule_state (name, next_run_at, last_run_at) VALUES (%s, %s, %s)
                       ON CONFLICT (name) DO UPDATE SET next_run_at = EXCLUDED.next_run_at,
                           last_run_at = coalesce(EXCLUDED.last_run_at, msd.schedule_state.last_run_at)""",
                    (name, next_run, ran_at))
