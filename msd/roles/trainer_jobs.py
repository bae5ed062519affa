"""Jobs the trainer process can run (named by `trainer.job` in the config)."""
from __future__ import annotations

from typing import Any

from msd.roles.runtime import RoleContext
from msd.store.db import Database
from msd.store.training import execution_summary


def summarise_executions(ctx: RoleContext, db: Database, request: dict[str, Any]) -> dict[str, Any]:
    """Summarise the executions available for training (counts per asset and side, time range)."""
    with db.transaction() as conn:
        summary = execution_summary(conn)
    ctx.beat()
    return {"request_id": request["id"], "executions": summary}
