"""Order events → `msd.order_events` (all of them) and `msd.executions` (one row per fill delta).

order-manager reports cumulative fill figures per order, and may repeat, reorder or skip
events (CONTRACTS.md §2.3). An execution is therefore the difference between an order's
cumulative figures and those already turned into executions (`msd.order_fill_state`), never
the event itself. The same path takes OrderSnapshot rows reconciled from the shared `orders`
table, so fills missed by the event stream are recorded once, whichever source sees them first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from psycopg2.extras import execute_values

from msd.values.messages import OrderEvent, OrderSnapshot
from msd.store.jsonb import to_json

ZERO = Decimal(0)
_EXECUTION_COLUMNS = ("id, order_id, signal_id::text, strategy_id, asset, side, quantity,"
                      " price, fee, cumulative_quantity, executed_at, source, trace_id")


@dataclass(frozen=True)
class FillState:
    """Cumulative figures of one order already turned into executions."""
    filled_quantity: Decimal
    average_price: Decimal | None
    fees: Decimal | None


@dataclass(frozen=True)
class FillDelta:
    """The part of an order's cumulative fill that has no execution yet."""
    quantity: Decimal
    price: Decimal | None
    fee: Decimal
    cumulative_quantity: Decimal


@dataclass(frozen=True)
class Execution:
    id: int
    order_id: str
    signal_id: str
    strategy_id: str | None
    asset: str
    side: str
    quantity: Decimal
    price: Decimal | None
    fee: Decimal
    cumulative_quantity: Decimal
    executed_at: datetime
    source: str                     # 'event' | 'reconcile'
    trace_id: str | None


@dataclass(frozen=True)
class RecordResult:
    events_recorded: int            # new rows in msd.order_events
    duplicates: int                 # events whose natural key was already recorded
    executions: tuple[Execution, ...]


@dataclass(frozen=True)
class _Observation:
    """An order's state as seen by one source, with what an execution row needs besides."""
    order: OrderSnapshot
    executed_at: datetime
    source: str
    trace_id: str | None
    strategy_id: str | None


def delta_price(previous: FillState, order: OrderSnapshot, quantity: Decimal) -> Decimal | None:
    """Average price of the newly filled `quantity`, from the two cumulative averages.

    Falls back to the cumulative average (then the limit price) when the earlier average is
    unknown or rounding of the 8-dp averages makes the derived price non-positive.
    """
    new_average = order.average_price
    if new_average is not None:
        if previous.filled_quantity == ZERO:
            return new_average
        if previous.average_price is not None:
            derived = (new_average * order.filled_quantity
                       - previous.average_price * previous.filled_quantity) / quantity
            if derived > ZERO:
                return derived
        return new_average
    return order.price


def fill_delta(previous: FillState | None, order: OrderSnapshot) -> FillDelta | None:
    """The fill not yet recorded, or None when the order reports no more than `previous`.

    A lower cumulative quantity than recorded is an event that arrived late: nothing to add.
    Fees are cumulative too; null means zero (order-manager turns 0 into null).
    """
    previous = previous or FillState(ZERO, None, None)
    quantity = order.filled_quantity - previous.filled_quantity
    if quantity <= ZERO:
        return None
    # order-manager sends null for a zero *or unknown* cumulative fee: null means "no news",
    # never "the fees went back to zero" (which would book a negative fee for this delta).
    fee = ZERO if order.fees is None else order.fees - (previous.fees or ZERO)
    return FillDelta(quantity, delta_price(previous, order, quantity), fee, order.filled_quantity)


def record_order_events(conn, events: Sequence[OrderEvent | OrderSnapshot]) -> RecordResult:
    """Record events (and reconciled order rows) in the caller's transaction.

    OrderEvents are logged in msd.order_events (a repeated natural key counts as a duplicate
    and is otherwise ignored); OrderSnapshots, read from the shared `orders` table, are not
    events and only contribute fills (source 'reconcile'). Recording the same input twice
    creates nothing new. The work is done per batch, a fixed handful of statements however
    many events there are, because one round trip per event caps ingestion at ~1,000/s.
    """
    with conn.cursor() as cur:
        fresh = _insert_events(cur, [e for e in events if isinstance(e, OrderEvent)])
        observations, duplicates = [], 0
        for item in events:
            if isinstance(item, OrderEvent):
                key = _natural_key(item.order)
                if key not in fresh:
                    duplicates += 1
                    continue
                fresh.discard(key)          # a repeat later in the same batch is a duplicate
            observations.append(_observe(item))
        executions = _record_fills(cur, [o for o in observations if o.order.filled_quantity > ZERO])
    recorded = sum(isinstance(e, OrderEvent) for e in events) - duplicates
    return RecordResult(recorded, duplicates, tuple(executions))


def count_executions(conn, *, order_id: str | None = None, signal_id: str | None = None,
                     source: str | None = None) -> int:
    """Number of executions, optionally of one order, one signal and/or one source."""
    return _count(conn, "msd.executions",
                  {"order_id": order_id, "signal_id": signal_id, "source": source})


def count_order_events(conn, *, order_id: str | None = None) -> int:
    """Number of recorded order events, optionally of one order."""
    return _count(conn, "msd.order_events", {"order_id": order_id})


def executions_of_order(conn, order_id: str) -> list[Execution]:
    """The executions of one order, in fill order."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM msd.executions WHERE order_id = %s"
            " ORDER BY cumulative_quantity", (order_id,))
        return [_execution_from_row(row) for row in cur.fetchall()]


def _observe(item: OrderEvent | OrderSnapshot) -> _Observation:
    if isinstance(item, OrderEvent):
        # executed_at is only set once filled; otherwise the event time is the best bound.
        return _Observation(item.order, item.order.executed_at or item.timestamp, "event",
                            item.trace_id, item.strategy_id)
    return _Observation(item, item.executed_at or item.updated_at, "reconcile", None, None)


def _natural_key(order: OrderSnapshot) -> tuple[str, str, Decimal]:
    return (order.order_id, order.status, order.filled_quantity)


def _insert_events(cur, events: Sequence[OrderEvent]) -> set[tuple[str, str, Decimal]]:
    """Insert the events; returns the natural keys that were new (not already recorded)."""
    if not events:
        return set()
    rows = [(e.event_id, e.event_type, e.order.order_id, e.order.status, e.order.filled_quantity,
             e.order.signal_id, e.order.asset, e.order.side, e.timestamp, e.trace_id,
             to_json(_event_payload(e))) for e in events]
    inserted = execute_values(
        cur, """INSERT INTO msd.order_events (event_id, event_type, order_id, status, filled_quantity,
                                              signal_id, asset, side, occurred_at, trace_id, payload)
                VALUES %s
                ON CONFLICT ON CONSTRAINT order_events_natural_key DO NOTHING
                RETURNING order_id, status, filled_quantity""",
        rows, template="(%s, %s, %s, %s, %s, %s::uuid, %s, %s, %s, %s, %s::jsonb)", fetch=True,
        page_size=len(rows))
    return {(order_id, status, quantity) for order_id, status, quantity in inserted}


def _event_payload(event: OrderEvent) -> dict:
    """The wire JSON when the codec kept it, else the typed fields (events built in code)."""
    if event.raw:
        return dict(event.raw)
    fields = asdict(event)
    fields.pop("raw")
    return fields


def _record_fills(cur, observations: list[_Observation]) -> list[Execution]:
    """Turn each observation's unrecorded fill into an execution, updating the fill states."""
    if not observations:
        return []
    states = _lock_fill_states(cur, [o.order for o in observations])
    pending, changed = [], set()
    for observation in observations:
        order = observation.order
        delta = fill_delta(states[order.order_id], order)
        if delta is not None:
            pending.append((observation, delta))
            changed.add(order.order_id)
            states[order.order_id] = FillState(order.filled_quantity, order.average_price,
                                               order.fees if order.fees is not None else states[order.order_id].fees)
    if not pending:
        return []
    executions = _insert_executions(cur, pending)
    execute_values(
        cur, """UPDATE msd.order_fill_state f
                   SET filled_quantity = v.filled_quantity, average_price = v.average_price,
                       fees = v.fees, updated_at = now()
                  FROM (VALUES %s) AS v(order_id, filled_quantity, average_price, fees)
                 WHERE f.order_id = v.order_id""",
        [(oid, states[oid].filled_quantity, states[oid].average_price, states[oid].fees) for oid in sorted(changed)],
        template="(%s, %s::numeric, %s::numeric, %s::numeric)", page_size=len(changed))
    return executions


def _lock_fill_states(cur, orders: list[OrderSnapshot]) -> dict[str, FillState]:
    """The recorded fill state of each order, row-locked so concurrent recorders take turns.

    Zero rows are created first because FOR UPDATE cannot lock a row that does not exist;
    locking in order_id order keeps two recorders of overlapping batches from deadlocking.
    """
    first = {o.order_id: o for o in reversed(orders)}
    execute_values(
        cur, """INSERT INTO msd.order_fill_state (order_id, signal_id, asset, side, filled_quantity)
                VALUES %s ON CONFLICT (order_id) DO NOTHING""",
        sorted((o.order_id, o.signal_id, o.asset, o.side, 0) for o in first.values()),
        template="(%s, %s::uuid, %s, %s, %s)", page_size=len(first))
    cur.execute("""SELECT order_id, filled_quantity, average_price, fees FROM msd.order_fill_state
                    WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE""", (sorted(first),))
    return {order_id: FillState(*rest) for order_id, *rest in cur.fetchall()}


def _insert_executions(cur, pending: list[tuple[_Observation, FillDelta]]) -> list[Execution]:
    # Fill events carry no strategy; the signal msd recorded when it decided does.
    rows = [(o.order.order_id, o.order.signal_id, o.strategy_id, o.order.signal_id, o.order.asset,
             o.order.side, d.quantity, d.price, d.fee, d.cumulative_quantity, o.executed_at, o.source,
             o.trace_id) for o, d in pending]
    inserted = execute_values(
        cur, f"""INSERT INTO msd.executions (order_id, signal_id, strategy_id, asset, side, quantity,
                                             price, fee, cumulative_quantity, executed_at, source,
                                             trace_id)
                 VALUES %s
                 ON CONFLICT ON CONSTRAINT executions_order_cumulative_key DO NOTHING
                 RETURNING {_EXECUTION_COLUMNS}""",
        rows, fetch=True, page_size=len(rows),
        template="(%s, %s::uuid, COALESCE(%s, (SELECT strategy_id FROM msd.signals WHERE signal_id = %s::uuid)),"
                 " %s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s, %s, %s)")
    return sorted((_execution_from_row(row) for row in inserted), key=lambda e: e.id)


def _execution_from_row(row: tuple) -> Execution:
    return Execution(*row)


def _count(conn, table: str, filters: dict[str, str | None]) -> int:
    present = {column: value for column, value in filters.items() if value is not None}
    where = " AND ".join(f"{column} = %s" for column in present) or "TRUE"
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table} WHERE {where}", tuple(present.values()))
        return cur.fetchone()[0]
