"""The shared tables of the neighbour services: `orders` and `positions` (CONTRACTS.md §5).

msd only reads them. Their owners may change them without telling us, so every read first
checks that the columns msd relies on exist and otherwise raises SharedSchemaError naming what
is missing: callers fail closed (no signal) rather than act on a guess.
Names are left unqualified so they resolve through the connection's search_path, as the
neighbour services' own queries do.
"""
from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Mapping

import psycopg2

from msd.errors import MsdError
from msd.store.db import describe, execute_prepared

NEIGHBOUR_TABLES_SQL = Path(__file__).with_name("neighbours.sql")
# Serialises concurrent creators (paper exchange and tests): CREATE TABLE IF NOT EXISTS alone
# can still collide on the catalog when two sessions run it at once.
NEIGHBOUR_TABLES_LOCK_KEY = 0x6D7364_0002

REQUIRED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "orders": ("asset", "side", "status", "quantity", "filled_quantity", "price", "average_price"),
    "positions": ("asset", "size", "average_entry_price", "current_price", "version", "closed_at", "mode",
                  "long_size", "short_size"),
}


class SharedSchemaError(MsdError):
    """A shared table or column msd reads is missing or unusable; `missing` names them."""

    def __init__(self, missing: tuple[str, ...], detail: str | None = None):
        self.missing = missing
        what = ", ".join(missing) if missing else "shared tables"
        super().__init__(f"shared schema unusable: {what}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Exposure:
    """What is already committed on one asset: open orders and the open position."""
    asset: str
    open_orders: int
    open_buy_notional: Decimal      # remaining quantity × (limit price, else average price)
    open_sell_notional: Decimal
    unpriced_open_orders: int       # open orders with neither price: notional unknown
    open_positions: int             # rows with size != 0 (hedge mode may have two)
    position_size: Decimal          # signed base units, negative = short
    position_notional: Decimal      # |size| × (current price, else average entry price)
    unpriced_positions: int         # open positions with neither price
    # Base quantities that have no price in the tables (e.g. a pending Market order): the
    # caller prices them at the market, rather than treating the exposure as unknown.
    unpriced_buy_quantity: Decimal = Decimal(0)
    unpriced_sell_quantity: Decimal = Decimal(0)
    unpriced_position_size: Decimal = Decimal(0)     # signed

    @property
    def is_flat(self) -> bool:
        """No open order and no open position."""
        return self.open_orders == 0 and self.open_positions == 0


def create_neighbour_tables(conn) -> None:
    """Create orders, signal_order_relationships, positions and instrument_info if absent (caller commits)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (NEIGHBOUR_TABLES_LOCK_KEY,))
        cur.execute(NEIGHBOUR_TABLES_SQL.read_text(encoding="utf-8"))


def missing_columns(required: Mapping[str, tuple[str, ...]],
                    found: Mapping[str, set[str] | None]) -> tuple[str, ...]:
    """Names of required tables (`found` None) and `table.column`s that do not exist."""
    missing = []
    for table, columns in required.items():
        present = found.get(table)
        if present is None:
            missing.append(table)
        else:
            missing.extend(f"{table}.{column}" for column in columns if column not in present)
    return tuple(missing)


def verify_shared_schema(conn) -> None:
    """Raise SharedSchemaError unless every column in REQUIRED_COLUMNS can be read."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT t.name, to_regclass(t.name) IS NOT NULL, a.attname
                 FROM unnest(%s::text[]) AS t(name)
                 LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(t.name)
                                         AND a.attnum > 0 AND NOT a.attisdropped""",
            (list(REQUIRED_COLUMNS),))
        found: dict[str, set[str] | None] = {}
        for table, exists, column in cur.fetchall():
            if exists:
                found.setdefault(table, set()).add(column)
    missing = missing_columns(REQUIRED_COLUMNS, found)
    if missing:
        raise SharedSchemaError(missing)


# One round trip: open orders and open positions of an asset, side by side (each one row).
OPEN_EXPOSURE_SQL = """
SELECT o.*, p.* FROM (
  SELECT count(*),
         coalesce(sum((quantity - filled_quantity) * coalesce(price, average_price))
                  FILTER (WHERE lower(side) = 'buy'), 0),
         coalesce(sum((quantity - filled_quantity) * coalesce(price, average_price))
                  FILTER (WHERE lower(side) = 'sell'), 0),
         count(*) FILTER (WHERE coalesce(price, average_price) IS NULL),
         coalesce(sum(quantity - filled_quantity)
                  FILTER (WHERE coalesce(price, average_price) IS NULL AND lower(side) = 'buy'), 0),
         coalesce(sum(quantity - filled_quantity)
                  FILTER (WHERE coalesce(price, average_price) IS NULL AND lower(side) = 'sell'), 0)
    FROM orders
   WHERE asset = %(asset)s AND status IN ('pending', 'partially_filled')) AS o,
 (SELECT count(*),
         coalesce(sum(size), 0),
         coalesce(sum(abs(size) * coalesce(current_price, average_entry_price)), 0),
         count(*) FILTER (WHERE coalesce(current_price, average_entry_price) IS NULL),
         coalesce(sum(size) FILTER (WHERE coalesce(current_price, average_entry_price) IS NULL), 0)
    FROM positions
   WHERE asset = %(asset)s AND size != 0) AS p
"""


def read_open_exposure(conn, asset: str) -> Exposure:
    """Open orders and positions of `asset` from the shared tables.

    Raises SharedSchemaError when they are missing or malformed (the schema is inspected only
    after a failure, to name what is missing); the caller's transaction is then aborted.
    """
    return read_open_exposure_with(conn, asset)[0]


def read_open_exposure_with(conn, asset: str, with_sql: str | None = None,
                            with_params: Mapping | None = None) -> tuple[Exposure, tuple]:
    """`read_open_exposure`, and the columns of `with_sql` (a one-row query of the caller's, e.g.
    msd's own in-flight signals) read in the same round trip: `(exposure, its columns)`."""
    sql, params = OPEN_EXPOSURE_SQL, {"asset": asset}
    if with_sql is not None:
        sql = f"SELECT e.*, w.* FROM ({OPEN_EXPOSURE_SQL}) AS e, ({with_sql}) AS w"
        params = {**params, **(with_params or {})}
    name = f"msd_open_exposure_{zlib.crc32(sql.encode()):08x}"     # one per text: a new release's is new
    try:
        with conn.cursor() as cur:
            execute_prepared(cur, name, sql, params)
            row = cur.fetchone()
    except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
        conn.rollback()
        verify_shared_schema(conn)
        raise SharedSchemaError((), describe(exc)) from exc
    (orders, buy_notional, sell_notional, unpriced_orders, unpriced_buy, unpriced_sell,
     positions, size, position_notional, unpriced_positions, unpriced_size) = row[:11]
    return Exposure(asset, orders, buy_notional, sell_notional, unpriced_orders,
                    positions, size, position_notional, unpriced_positions,
                    unpriced_buy_quantity=unpriced_buy, unpriced_sell_quantity=unpriced_sell,
                    unpriced_position_size=unpriced_size), tuple(row[11:])


@dataclass(frozen=True)
class PositionRow:
    """One row of the shared `positions` table; times are aware UTC (the columns are naive UTC).

    One row per asset and mode, forever (CONTRACTS §3.5): `created_at` is when the row was first
    inserted, not when the current position opened; `version` increments on every write.
    """
    position_id: str
    asset: str
    size: Decimal                       # signed base units, negative = short (one-way mode)
    average_entry_price: Decimal | None
    current_price: Decimal | None
    last_updated: datetime
    created_at: datetime | None         # NULL when position-manager never set it
    mode: str
    version: int = 1
    closed_at: datetime | None = None
    long_size: Decimal | None = None    # hedge mode legs
    short_size: Decimal | None = None


_POSITION_SELECT = """SELECT id::text, asset, size, average_entry_price, current_price, last_updated, created_at, mode,
                             version, closed_at, long_size, short_size
                        FROM positions"""


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _position_rows(conn, sql: str, args: tuple) -> list[PositionRow]:
    """Run a positions query; a missing table or column (the owner changed it) is SharedSchemaError."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
    except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
        raise SharedSchemaError((), describe(exc)) from exc
    return [PositionRow(pid, asset, size, entry, price, _utc(updated), _utc(created), mode, version, _utc(closed),
                        long_size, short_size)
            for pid, asset, size, entry, price, updated, created, mode, version, closed, long_size, short_size in rows]


def read_positions(conn, position_ids: list[str]) -> dict[str, PositionRow]:
    """The rows with these ids. Canonical uuids use the primary key; anything else is compared as
    text, so a malformed id finds nothing instead of failing."""
    ids = list(position_ids)
    try:
        canonical = all(str(uuid.UUID(i)) == i for i in ids)
    except (ValueError, TypeError, AttributeError):
        canonical = False
    where = " WHERE id = ANY(%s::uuid[])" if canonical else " WHERE id::text = ANY(%s)"
    rows = _position_rows(conn, _POSITION_SELECT + where, (ids,))
    return {row.position_id: row for row in rows}


def read_open_positions(conn) -> list[PositionRow]:
    """Every open position: size != 0, or a hedge-mode row with an open leg (its `size` alone
    does not say what is held, so it is never read by its sign)."""
    return _position_rows(conn, _POSITION_SELECT + """
        WHERE size != 0 OR coalesce(long_size, 0) != 0 OR coalesce(short_size, 0) != 0 ORDER BY asset, id""", ())


def read_open_position_assets(conn) -> set[str]:
    """The assets of every open position (as read_open_positions counts them open), as the
    `positions` table spells them; the caller checks them before it uses one."""
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT DISTINCT asset FROM positions
                            WHERE size != 0 OR coalesce(long_size, 0) != 0 OR coalesce(short_size, 0) != 0""")
            return {row[0] for row in cur.fetchall()}
    except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
        raise SharedSchemaError((), describe(exc)) from exc


@dataclass(frozen=True)
class InstrumentRow:
    """order-manager's cached Bybit lot size filter for one symbol (`instrument_info`, CONTRACTS §5)."""
    symbol: str
    lot_size: Decimal | None
    min_order_qty: Decimal | None
    min_order_value: Decimal | None


def read_instruments(conn, symbols: list[str]) -> dict[str, InstrumentRow] | None:
    """The `instrument_info` rows of these symbols; None when the table does not exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('instrument_info') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        try:
            cur.execute("""SELECT symbol, lot_size, min_order_qty, min_order_value FROM instrument_info
                            WHERE symbol = ANY(%s)""", (list(symbols),))
            rows = cur.fetchall()
        except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
            raise SharedSchemaError(("instrument_info",), describe(exc)) from exc
    return {symbol: InstrumentRow(symbol, lot, min_qty, min_value) for symbol, lot, min_qty, min_value in rows}


@dataclass(frozen=True)
class OrderOutcome:
    """The latest known state of the order a signal became."""
    signal_id: str
    status: str
    filled_quantity: Decimal
    source: str                          # "orders" (the shared table) or "order_events" (msd's record)


def read_order_outcomes(conn, signal_ids: list[str]) -> dict[str, OrderOutcome]:
    """What became of these signals: the shared `orders` row, else the newest order event msd
    recorded (a rejection order-manager never saved exists only as an event, CONTRACTS §1.3)."""
    found: dict[str, OrderOutcome] = {}
    with conn.cursor() as cur:
        # Events arrive out of order and their filled_quantity is cumulative: the furthest one wins
        # (the most filled, an ended status over an open one), not the last received.
        cur.execute("""SELECT signal_id::text, status, filled_quantity FROM msd.order_events
                        WHERE signal_id = ANY(%s::uuid[])
                        ORDER BY filled_quantity, status IN ('filled', 'cancelled', 'rejected', 'dry_run'), id""",
                    (list(signal_ids),))
        for signal_id, status, filled in cur.fetchall():
            found[signal_id] = OrderOutcome(signal_id, status, filled, "order_events")
        try:
            cur.execute("""SELECT signal_id::text, status, filled_quantity FROM orders
                            WHERE signal_id = ANY(%s::uuid[]) ORDER BY updated_at, created_at""", (list(signal_ids),))
            rows = cur.fetchall()
        except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
            raise SharedSchemaError(("orders",), describe(exc)) from exc
    for signal_id, status, filled in rows:
        found[signal_id] = OrderOutcome(signal_id, status, filled, "orders")
    return found


@dataclass(frozen=True)
class FillRow:
    """What one order of one asset filled after a given time (the shared `orders` table shows
    cumulative figures per order; see read_fills_since)."""
    side: str                            # "buy" / "sell"
    filled_quantity: Decimal             # filled after `since`, not the order's cumulative total
    average_price: Decimal | None        # the order's average price (all of its fills)
    updated_at: datetime


# `orders.filled_quantity` is cumulative per order (CONTRACTS §2.2, §5): an order that had filled
# part of its quantity before `since` and the rest after counts only the rest. What it had filled
# by then is known from msd's own records of the order (its executions and order events, both
# cumulative per order); without a record, all of it is taken as after `since`.
_FILLS_SINCE_SQL = """
SELECT lower(o.side), o.filled_quantity - coalesce(before.quantity, 0), o.average_price, o.updated_at
  FROM orders o
  LEFT JOIN LATERAL (
       SELECT greatest((SELECT max(e.cumulative_quantity) FROM msd.executions e
                         WHERE e.order_id = o.order_id AND e.executed_at <= %(since)s),
                       (SELECT max(v.filled_quantity) FROM msd.order_events v
                         WHERE v.order_id = o.order_id AND v.occurred_at <= %(since)s)) AS quantity) before ON true
 WHERE o.asset = %(asset)s AND o.filled_quantity > 0 AND o.updated_at > %(since_naive)s
   AND o.filled_quantity > coalesce(before.quantity, 0)
 ORDER BY o.updated_at, o.created_at"""


def read_fills_since(conn, asset: str, since: datetime) -> list[FillRow]:
    """What each order of `asset` filled after `since`, oldest first: the fill path of
    position-manager (CONTRACTS §3.5), replayed to find an entry price or a close msd missed."""
    try:
        with conn.cursor() as cur:
            cur.execute(_FILLS_SINCE_SQL, {"asset": asset, "since": since, "since_naive": _naive_utc(since)})
            rows = cur.fetchall()
    except (psycopg2.ProgrammingError, psycopg2.DataError) as exc:
        raise SharedSchemaError(("orders",), describe(exc)) from exc
    return [FillRow(side, filled, price, _utc(updated)) for side, filled, price, updated in rows]
