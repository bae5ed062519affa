"""A role's connections to the outside, opened the same way by every role."""
from __future__ import annotations

from typing import Any

from msd.roles.runtime.process import DependencyHealth
from msd.store.db import Database


def open_database(config: Any, application_name: str, deps: DependencyHealth | None = None, *,
                  statement_timeout_ms: int = 10_000) -> Database:
    """A connection to `config.database` (named in pg_stat_activity); with `deps`, its outcomes
    are the role's `database` dependency."""
    return Database(config.database.url, connect_timeout=config.database.connect_timeout_s,
                    application_name=application_name, statement_timeout_ms=statement_timeout_ms,
                    on_result=deps.reporter("database") if deps is not None else None)
