"""Training runs (`msd.training_runs`) and the execution summary a run works from."""
from __future__ import annotations

from typing import Any, Mapping

from msd.store.jsonb import to_json

FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out", "skipped"})


def start_run(conn, trigger: str, reason: str | None, pid: int | None,
              strategy_id: str | None = None) -> int:
    """Record a run as running; returns its id."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO msd.training_runs (strategy_id, trigger, reason, pid)
               VALUES (%s, %s, %s, %s) RETURNING id""",
            (strategy_id, trigger, reason, pid))
        return cur.fetchone()[0]


def running_run_of(conn, pid: int) -> int | None:
    """The run a trainer process with `pid` recorded as running (the trainer starts one run
    per process), so what a job writes can point at the run that produced it."""
    with conn.cursor() as cur:
        cur.execute("""SELECT max(id) FROM msd.training_runs WHERE status = 'running' AND pid = %s""",
                    (pid,))
        return cur.fetchone()[0]


def finish_run(conn, run_id: int, status: str, summary: Mapping[str, Any] | None = None,
               error: str | None = None) -> bool:
    """Close a running run with a final status; returns False if it was already closed.

    The supervisor (cancel, timeout) and the trainer (result) may both try to close a run;
    whichever commits first decides, and the other learns it lost from the False.
    """
    if status not in FINISHED_STATUSES:
        raise ValueError(f"status must be one of {sorted(FINISHED_STATUSES)}, got {status!r}")
    with conn.cursor() as cur:
        cur.execute(
            """UPDATE msd.training_runs
                  SET status = %s, summary = %s, error = %s, finished_at = now()
                WHERE id = %s AND status = 'running'""",
            (status, to_json(dict(summary)) if summary is not None else None, error, run_id))
        return cur.rowcount == 1


def get_run(conn, run_id: int) -> dict[str, Any] | None:
    """The run's row as a dict, or None if there is no such run."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT id, strategy_id, trigger, reason, status, started_at, finished_at, pid,
                      summary, error
                 FROM msd.training_runs WHERE id = %s""", (run_id,))
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row)) if row else None


def execution_summary(conn) -> dict[str, Any]:
    """What executions exist, JSON-ready (numbers as decimal strings, times ISO-8601).

    {"executions": n, "first_executed_at", "last_executed_at",
     "by_asset_side": [{"asset", "side", "executions", "quantity", "notional"}, ...]}
    where notional sums quantity × price over executions with a known price.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), min(executed_at), max(executed_at) FROM msd.executions")
        total, first, last = cur.fetchone()
        cur.execute(
            """SELECT asset, side, count(*), sum(quantity), coalesce(sum(quantity * price), 0)
                 FROM msd.executions GROUP BY asset, side ORDER BY asset, side""")
        groups = [{"asset": asset, "side": side, "executions": count,
                   "quantity": str(quantity), "notional": str(notional)}
                  for asset, side, count, quantity, notional in cur.fetchall()]
    return {"executions": total,
            "first_executed_at": first.isoformat() if first else None,
            "last_executed_at": last.isoformat() if last else None,
            "by_asset_side": groups}


def mark_abandoned_runs(conn) -> int:
    """Close runs left `running` by a trainer that was killed before it could record an outcome.

    The supervisor runs one trainer at a time and calls this as the next one starts, so any run
    still marked running belongs to a process that no longer exists.
    """
    with conn.cursor() as cur:
        cur.execute("""UPDATE msd.training_runs
                          SET status = 'cancelled', finished_at = now(),
                              error = 'abandoned: the trainer process ended without recording an outcome'
                        WHERE status = 'running'""")
        return cur.rowcount
