"""Strategy modes (warm-up / model) and their audit trail in `msd.mode_transitions`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from msd.store.jsonb import to_json


@dataclass(frozen=True)
class ModeRecord:
    mode: str
    model_version: int | None
    parameters: Mapping[str, Any] | None
    event: str | None = None        # who wrote the row (None: the signaller's own mode rows)


def latest_modes(conn) -> dict[str, ModeRecord]:
    """Each strategy's mode, model version and parameters as of its most recent transition."""
    with conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT ON (strategy_id) strategy_id, to_mode, model_version, parameters, event
                         FROM msd.mode_transitions ORDER BY strategy_id, at DESC, id DESC""")
        return {strategy: ModeRecord(mode, version, params, event)
                for strategy, mode, version, params, event in cur.fetchall()}


def record_transition(conn, strategy_id: str, from_mode: str | None, to_mode: str, reason: str,
                      parameters: Mapping[str, Any] | None = None, model_version: int | None = None,
                      event: str | None = None) -> int:
    """Append one audited mode change (or a restatement at start-up) in the caller's transaction.

    `event` (sql/002) says what kind of row it is: 'activation', 'rollback', 'deactivation' or
    'mode_change'; NULL for rows that predate it.
    """
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.mode_transitions (strategy_id, from_mode, to_mode, reason, parameters,
                                                         model_version, event)
                       VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING id""",
                    (strategy_id, from_mode, to_mode, reason,
                     to_json(dict(parameters)) if parameters is not None else None, model_version, event))
        return cur.fetchone()[0]
