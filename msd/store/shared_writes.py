"""Writes to the shared tables `orders`, `signal_order_relationships` and `positions` (CONTRACTS.md
§5) exactly as order-manager and position-manager make them.

msd itself never writes these tables: the paper exchange (msd.sim), which plays those
neighbours, does, through these public functions. Every function runs
inside the caller's transaction and returns rows (as dicts) read back with RETURNING, because
the neighbours publish their events from the stored row: decimals then carry 8 places.
Timestamps are naive UTC (sim time), as the TIMESTAMP columns hold them.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import psycopg2.extras

Row = dict[str, Any]


class PositionFields(Protocol):
    """What position-manager stores of a one-way position (the paper exchange's PositionState)."""
    asset: str
    size: Decimal
    average_entry_price: Decimal | None
    current_price: Decimal | None
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    last_updated: datetime
    closed_at: datetime | None


def _one(conn, sql: str, params: tuple) -> Row | None:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return dict(row) if row is not None else None


def _all(conn, sql: str, params: tuple = ()) -> list[Row]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(row) for row in cur.fetchall()]


def linked_order_status(conn, signal_id: str) -> str | None:
    """Status of the newest order linked to `signal_id`, None when there is none."""
    row = _one(conn, """SELECT o.status FROM signal_order_relationships r
                          JOIN orders o ON o.id = r.order_id
                         WHERE r.signal_id = %s ORDER BY r.created_at DESC LIMIT 1""", (signal_id,))
    return row["status"] if row else None


def insert_order(conn, *, order_id: str, signal_id: str, asset: str, side: str, order_type: str,
                 quantity: Decimal, price: Decimal | None, status: str, trace_id: str,
                 rejection_reason: str | None, now: datetime) -> Row:
    """Insert an order and link it to its signal (one_to_one); a retried rejection replaces the
    earlier `REJECTED-{signal_id}` row, whose order_id is unique."""
    row = _one(conn, """
        INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, price, status,
                            trace_id, rejection_reason, created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (order_id) DO UPDATE
           SET quantity = EXCLUDED.quantity, price = EXCLUDED.price, status = EXCLUDED.status,
               trace_id = EXCLUDED.trace_id, rejection_reason = EXCLUDED.rejection_reason,
               updated_at = EXCLUDED.updated_at
        RETURNING *""",
        (order_id, signal_id, asset, side, order_type, quantity, price, status, trace_id,
         rejection_reason, now, now))
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO signal_order_relationships (signal_id, order_id, relationship_type, created_at)
                       VALUES (%s, %s, 'one_to_one', %s) ON CONFLICT (signal_id, order_id) DO NOTHING""",
                    (signal_id, row["id"], now))
    return row


def record_fill(conn, order_pk: str, *, status: str, filled_quantity: Decimal,
                average_price: Decimal, fees: Decimal, now: datetime) -> Row:
    """Cumulative fill state; `executed_at` is set when the order becomes filled."""
    return _one(conn, """
        UPDATE orders SET status = %s, filled_quantity = %s, average_price = %s, fees = %s,
                          updated_at = %s,
                          executed_at = CASE WHEN %s = 'filled' THEN %s ELSE executed_at END
         WHERE id = %s RETURNING *""",
        (status, filled_quantity, average_price, fees, now, status, now, order_pk))


def cancel_order(conn, order_pk: str, now: datetime) -> Row:
    return _one(conn, "UPDATE orders SET status = 'cancelled', updated_at = %s WHERE id = %s RETURNING *",
                (now, order_pk))


def open_orders(conn) -> list[Row]:
    """Orders still working, oldest first (resumed after a restart)."""
    return _all(conn, "SELECT * FROM orders WHERE status IN ('pending', 'partially_filled') "
                      "ORDER BY created_at, order_id")


def position_row(conn, asset: str) -> Row | None:
    return _one(conn, "SELECT * FROM positions WHERE asset = %s AND mode = 'one-way'", (asset,))


def open_position_rows(conn) -> list[Row]:
    return _all(conn, "SELECT * FROM positions WHERE mode = 'one-way' AND size != 0 ORDER BY asset")


def save_position(conn, state: PositionFields) -> Row:
    """Write the one-way row of `state.asset`, bumping `version`; returns the stored row.

    As position-manager does (CONTRACTS §3.5): the row is INSERTed on the asset's first fill,
    `created_at` then, and never again: every later position on the asset keeps that row, its
    id and its `created_at`.
    """
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO positions (asset, size, mode, last_updated, created_at)
                       VALUES (%s, 0, 'one-way', %s, %s) ON CONFLICT (asset, mode) DO NOTHING""",
                    (state.asset, state.last_updated, state.last_updated))
    return _one(conn, """
        UPDATE positions
           SET size = %s, average_entry_price = %s, current_price = %s, unrealized_pnl = %s,
               realized_pnl = %s, last_updated = %s, closed_at = %s, version = version + 1
         WHERE asset = %s AND mode = 'one-way'
        RETURNING *""",
        (state.size, state.average_entry_price, state.current_price, state.unrealized_pnl,
         state.realized_pnl, state.last_updated, state.closed_at, state.asset))


def ensure_instruments(conn, rows: list[tuple[str, Decimal, Decimal, Decimal, Decimal]]) -> None:
    """An `instrument_info` row per symbol (symbol, lot size, min qty, min order value, tick), as
    order-manager caches Bybit's filters; a row already there (e.g. written by a test) is kept."""
    with conn.cursor() as cur:
        for symbol, lot, min_qty, min_value, tick in rows:
            cur.execute("""INSERT INTO instrument_info (symbol, lot_size, min_order_qty, max_order_qty,
                                                        min_order_value, price_tick_size)
                           VALUES (%s, %s, %s, 1000000, %s, %s) ON CONFLICT (symbol) DO NOTHING""",
                        (symbol, lot, min_qty, min_value, tick))


def instrument_row(conn, symbol: str) -> Row | None:
    return _one(conn, "SELECT lot_size, min_order_qty, min_order_value FROM instrument_info WHERE symbol = %s",
                (symbol,))
