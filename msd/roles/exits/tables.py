"""The exit role's reads of the shared tables (CONTRACTS §5): positions rows, what became of its
exit orders, the fills of the fill path, and order-manager's instrument filters.

Each read is one autocommit statement (no BEGIN/COMMIT round trips on the latency path). A
missing or changed shared table is logged and answered with "nothing known" (None), never a
guess; a value the driver cannot send is narrowed down to the one id that carries it. The rows
are handed to the rules as the rules' own types (row_facts, instrument_of, fills_of).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from msd.errors import DatabaseUnavailable
from msd.rules import (
    ORDER_MANAGER_DEFAULTS, ExitState, Fill, Instrument, InvalidPositionData, RowFacts, Side, crossed_zero,
    entry_of_an_earlier_position, fill_path_entry,
)
from msd.store.db import Database
from msd.store.neighbours import (
    FillRow, InstrumentRow, OrderOutcome, PositionRow, SharedSchemaError, read_fills_since, read_instruments,
    read_open_positions, read_order_outcomes, read_positions,
)
from msd.values.parsing import InvalidValue

log = logging.getLogger("msd.exits")
INSTRUMENT_REFRESH_S = 300.0
# The orders of a row's first fill may be stamped just before position-manager inserted the row.
FIRST_FILL_MARGIN = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Contain = Callable[[str, dict[str, Any], Callable[[], None]], None]


class SharedTables:
    def __init__(self, db: Database, contain: Contain, on_error: Callable[[str], None]):
        self.db, self.contain, self.on_error = db, contain, on_error
        self.instruments: dict[str, tuple[Instrument, float]] = {}

    def _unusable(self, exc: SharedSchemaError) -> None:
        self.on_error(str(exc))
        log.error("cannot read the shared tables: %s", exc)

    def rows(self, ids: list[str]) -> dict[str, PositionRow | None] | None:
        """What a read of these positions rows found, by id: the row, or None when the read
        succeeded and there is no such row. An id whose read failed is left out (and the whole
        answer is None when the table is unusable): a failed read says nothing about a position,
        and callers must leave its state as it is rather than take it for closed."""
        try:
            with self.db.autocommit() as conn:
                found = read_positions(conn, ids)
            return {one: found.get(one) for one in ids}
        except SharedSchemaError as exc:
            self._unusable(exc)
            return None
        except DatabaseUnavailable:
            raise
        except Exception:
            if len(ids) == 1:
                raise
        found: dict[str, PositionRow | None] = {}
        for one in ids:
            self.contain("positions row read", {"position_id": ascii(one)[1:-1]},
                         lambda one=one: found.update(self.rows([one]) or {}))
        return found

    def open_rows(self) -> dict[tuple[str, str], PositionRow] | None:
        """Every open position in the table by (asset, id); None when the table is unusable."""
        try:
            with self.db.autocommit() as conn:
                return {(row.asset, row.position_id): row for row in read_open_positions(conn)}
        except SharedSchemaError as exc:
            self._unusable(exc)
            return None

    def order_outcomes(self, signal_ids: list[str]) -> dict[str, OrderOutcome]:
        try:
            with self.db.autocommit() as conn:
                return read_order_outcomes(conn, signal_ids)
        except SharedSchemaError as exc:
            self._unusable(exc)
            return {}

    def fill_path_entry(self, facts: RowFacts, row: PositionRow) -> Decimal | None:
        """The open position's entry from the fills since the row was last flat (CONTRACTS §3.5),
        for a reopen on the websocket path (whose row keeps a stale entry) or a row without one;
        None unless the fills add up to the row's size."""
        since = row.closed_at or (row.created_at - FIRST_FILL_MARGIN if row.created_at else None)
        if since is None:
            return None
        with self.db.autocommit() as conn:
            fills = read_fills_since(conn, facts.asset, since)
        entry, size = fill_path_entry(fills_of(fills))
        return entry if entry is not None and size == facts.size else None

    def closed_between(self, state: ExitState | None, facts: RowFacts) -> bool:
        """Did the fills since the row last read cross zero: a close and a reopen msd did not read
        in between (both fell in one debounce window, or msd was away)? That takes two writes of
        the row; with one write or none the fills are not read.

        A state without row facts (upgraded from the first format, which kept no version or size)
        is of an earlier position when its entry is none of the entries the current position has
        had by its fills (a close and reopen while msd was down, across the upgrade)."""
        if state is not None and state.row is None:
            return self._stored_before_reopen(state, facts)
        if state is None or facts.version < state.row.version + 2:
            return False
        return self.crossed_since(facts.asset, state.row.size, state.row.last_updated)

    def crossed_since(self, asset: str, start: Decimal, since: datetime) -> bool:
        """Did the fills of `asset` after `since` take a position of signed size `start` flat or
        across zero (a close and reopen the row's closed_at does not show on the fill path)?"""
        with self.db.autocommit() as conn:
            fills = read_fills_since(conn, asset, since)
        return crossed_zero(start, fills_of(fills))

    def _stored_before_reopen(self, state: ExitState, facts: RowFacts) -> bool:
        if state.entry_price is None:
            return False
        with self.db.autocommit() as conn:
            fills = read_fills_since(conn, facts.asset, EPOCH)
        return entry_of_an_earlier_position(state.entry_price, facts.size, fills_of(fills))

    def instrument(self, asset: str) -> Instrument:
        """order-manager's rounding inputs for `asset` from `instrument_info` (cached), else its defaults."""
        cached = self.instruments.get(asset)
        if cached is not None and time.monotonic() - cached[1] < INSTRUMENT_REFRESH_S:
            return cached[0]
        try:
            with self.db.autocommit() as conn:
                rows = read_instruments(conn, [asset])
        except SharedSchemaError as exc:
            log.warning("instrument_info unusable, using order-manager's defaults for %s: %s", asset, exc)
            rows = {}
        if rows is None and cached is None:
            log.warning("no instrument_info table: %s exits use order-manager's defaults (lot step 0.001, "
                        "minimum 5 USDT)", asset)
        instrument = instrument_of((rows or {}).get(asset))
        self.instruments[asset] = (instrument, time.monotonic())
        return instrument


def row_facts(row: PositionRow) -> RowFacts:
    """The rules' view of a positions row (raises InvalidPositionData for an unusable one).

    `current_price` has no constraint in the table and is only a fallback quote: one that is not
    a price (zero, negative, NaN) is left out instead of making the whole row, and with it every
    exit of the position, unusable."""
    mark = row.current_price
    if mark is not None and not (mark.is_finite() and mark > 0):
        mark = None
    return RowFacts(position_id=row.position_id, asset=row.asset, size=row.size,
                    average_entry_price=row.average_entry_price, current_price=mark,
                    version=row.version, last_updated=row.last_updated, closed_at=row.closed_at, mode=row.mode)


def instrument_of(row: InstrumentRow | None) -> Instrument:
    """The symbol's rounding inputs; order-manager's own defaults for a missing row or column."""
    if row is None:
        return ORDER_MANAGER_DEFAULTS
    d = ORDER_MANAGER_DEFAULTS
    try:
        return Instrument(row.lot_size if row.lot_size else d.lot_size,
                          row.min_order_qty if row.min_order_qty else d.min_order_qty,
                          row.min_order_value if row.min_order_value is not None else d.min_order_value)
    except InvalidValue as exc:
        # A bad row is this position's problem (skipped and reported), like a bad positions row.
        raise InvalidPositionData(exc.key, exc.value, exc.allowed) from exc


def fills_of(rows: list[FillRow]) -> list[Fill]:
    """Orders with fills as the rules replay them (CONTRACTS §3.5 fill path)."""
    return [Fill(Side.LONG if row.side == "buy" else Side.SHORT, row.filled_quantity,
                 row.average_price if row.average_price and row.average_price > 0 else None)
            for row in rows]
