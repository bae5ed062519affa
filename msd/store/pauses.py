"""Paused strategies (`msd.strategy_pauses`) and warm-up budgets (`msd.warmup_budgets`).

A pause and its audit row (`msd.mode_transitions`, event 'pause' / 'resume') are written in
the caller's transaction, so one never exists without the other. `paused_at` and a budget's
`started_at` are the caller's `now` (its injected clock), never the database's: the budget's
duration is measured from it against the same clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from msd.store.modes import latest_modes, record_transition
from msd.values.parsing import check_aware

PAUSE_CAUSES = ("budget", "duration", "operator")


@dataclass(frozen=True)
class Pause:
    cause: str
    reason: str
    paused_at: datetime


def pauses(conn) -> dict[str, Pause]:
    with conn.cursor() as cur:
        cur.execute("SELECT strategy_id, cause, reason, paused_at FROM msd.strategy_pauses")
        return {sid: Pause(cause, reason, at) for sid, cause, reason, at in cur.fetchall()}


def pause(conn, strategy_id: str, cause: str, reason: str, *, now: datetime,
          parameters: dict | None = None) -> bool:
    """Pause the strategy at `now` (audited); False when it already was paused (nothing written)."""
    if cause not in PAUSE_CAUSES:
        raise ValueError(f"cause: {cause!r} is invalid; expected one of {PAUSE_CAUSES}")
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.strategy_pauses (strategy_id, cause, reason, paused_at)
                       VALUES (%s, %s, %s, %s) ON CONFLICT (strategy_id) DO NOTHING""",
                    (strategy_id, cause, reason, check_aware("now", now)))
        if cur.rowcount == 0:
            return False
    before = latest_modes(conn).get(strategy_id)
    record_transition(conn, strategy_id, before.mode if before else None, "paused", reason,
                      {"cause": cause, **(parameters or {})},
                      before.model_version if before else None, event="pause")
    return True


def resume(conn, strategy_id: str, to_mode: str, reason: str,
           model_version: int | None, *, now: datetime) -> bool:
    """End the strategy's pause, start a new warm-up budget at `now`, audit both; False when it
    was not paused (the budget still restarts: an operator asked for a fresh one)."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM msd.strategy_pauses WHERE strategy_id = %s RETURNING cause",
                    (strategy_id,))
        row = cur.fetchone()
    start_budget(conn, strategy_id, reason, now=now)
    before = latest_modes(conn).get(strategy_id)
    record_transition(conn, strategy_id, before.mode if before else None, to_mode, reason,
                      {"previous_pause": row[0] if row else None, "new_warmup_budget": True},
                      model_version, event="resume")
    return row is not None


def end_budget_pause(conn, strategy_id: str) -> bool:
    """Drop a pause caused by the warm-up budget or duration (a model now serves)."""
    with conn.cursor() as cur:
        cur.execute("""DELETE FROM msd.strategy_pauses
                        WHERE strategy_id = %s AND cause IN ('budget', 'duration')""",
                    (strategy_id,))
        return cur.rowcount == 1


def budget_starts(conn) -> dict[str, datetime]:
    with conn.cursor() as cur:
        cur.execute("SELECT strategy_id, started_at FROM msd.warmup_budgets")
        return dict(cur.fetchall())


def start_budget(conn, strategy_id: str, reason: str, *, now: datetime,
                 only_if_missing: bool = False) -> None:
    """Start the strategy's warm-up budget at `now` (or keep an existing one with only_if_missing)."""
    conflict = "NOTHING" if only_if_missing else \
        "UPDATE SET started_at = EXCLUDED.started_at, reason = EXCLUDED.reason"
    with conn.cursor() as cur:
        cur.execute(f"""INSERT INTO msd.warmup_budgets (strategy_id, reason, started_at) VALUES (%s, %s, %s)
                        ON CONFLICT (strategy_id) DO {conflict}""",
                    (strategy_id, reason, check_aware("now", now)))
