"""position-manager stand-in: the row read back and the event (CONTRACTS.md §3, §3.5).

The arithmetic of both write paths (fill and websocket) is position-manager's own rules in
`msd.exchange.positions`, shared with the backtest.

`created_at` is not here: the row's INSERT sets it once and no write changes it (`msd.store.
shared_writes.save_position`). Pure; the DB round trip and publishing are in `msd.sim.exchange`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from msd.exchange.positions import ZERO, PositionState, apply_fill, apply_websocket, mark, time_held_minutes
from msd.sim.outbound import Outbound, aware_iso, json_body

POSITION_UPDATED_QUEUE = "position-manager.position_updated"
# The arithmetic lives in msd.exchange.positions, shared with the backtest; re-exported here.
__all__ = ["POSITION_UPDATED_QUEUE", "PositionState", "apply_fill", "apply_websocket", "mark", "position_event",
           "state_from_row"]


def state_from_row(row: Mapping[str, Any]) -> PositionState:
    return PositionState(
        asset=row["asset"], size=row["size"], average_entry_price=row["average_entry_price"],
        current_price=row["current_price"], unrealized_pnl=row["unrealized_pnl"] or ZERO,
        realized_pnl=row["realized_pnl"] or ZERO, closed_at=row["closed_at"], last_updated=row["last_updated"])


def _pnl_percent(row: Mapping[str, Any]) -> str | None:
    size, entry = row["size"], row["average_entry_price"]
    if not size or not entry:
        return None
    return str((row["unrealized_pnl"] or ZERO) / (abs(size) * entry) * 100)


def position_event(row: Mapping[str, Any], *, update_source: str, trace_id: str | None,
                   now: datetime) -> Outbound:
    """`publish_position_updated` from a row read back after the write; persistent, no headers."""
    held = time_held_minutes(row["created_at"], row["last_updated"], now)
    event = {
        "event_type": "position_updated", "position_id": str(row["id"]), "asset": row["asset"],
        "size": str(row["size"]), "unrealized_pnl": str(row["unrealized_pnl"] if row["unrealized_pnl"] is not None else "0"),
        "realized_pnl": str(row["realized_pnl"] if row["realized_pnl"] is not None else "0"),
        "mode": row["mode"], "unrealized_pnl_pct": _pnl_percent(row), "time_held_minutes": held,
        "position_size_norm": None, "update_source": update_source, "trace_id": trace_id,
        "timestamp": aware_iso(now),
    }
    return Outbound(queue=POSITION_UPDATED_QUEUE, body=json_body(event), persistent=True, payload=event)
