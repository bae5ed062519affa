"""Training data from PostgreSQL: executed decisions with their decision-time snapshot and the
close the label horizon ended at, the strategy's fills for the cost estimate, and
reconciliation of fills from the shared `orders` table.

One row is one recorded signal of a strategy that decides (mode warmup or model; exits are not
decisions to learn from), filled or not, because the features describe the decision, not each
partial fill, and which decisions fill depends on the path after them and on their side.
The outcome is measured by msd.learning.outcomes from msd's own 1-minute bars: the close of the
first confirmed bar that ends at or after decided_at + horizon, taken only if it ends within
`max_bar_lag_s` of that moment. Fill prices never enter it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from msd.values.messages import OrderSnapshot
from msd.values.records import CostFill, Decision, RowCounts, TradeFill, decision_price
from msd.store.executions import record_order_events
from msd.store.neighbours import SharedSchemaError, missing_columns

RECONCILE_NAME = "orders"
_ORDER_COLUMNS = ("id", "order_id", "signal_id", "asset", "side", "order_type", "quantity",
                  "price", "status", "filled_quantity", "average_price", "fees", "created_at",
                  "updated_at", "executed_at", "is_dry_run")

# Rows whose fills a competing consumer may have taken: anything with a fill that is final or
# still growing. Dry runs never traded; rejected orders never filled.
_RECONCILE_SQL = """
SELECT o.id::text, o.order_id, o.signal_id::text, o.asset, o.side, o.order_type, o.quantity,
       o.price, o.status, o.filled_quantity, o.average_price, o.fees, o.created_at,
       o.updated_at, o.executed_at, o.is_dry_run
  FROM orders o
 WHERE o.filled_quantity > 0 AND o.status IN ('partially_filled', 'filled', 'cancelled')
   AND NOT o.is_dry_run
   AND (%(since)s::timestamp IS NULL OR o.updated_at >= %(since)s::timestamp)
   AND (%(after_at)s::timestamp IS NULL
        OR (o.updated_at, o.order_id) > (%(after_at)s::timestamp, %(after_id)s::text))
   -- only orders of signals msd decided: other producers' orders are not our outcomes
   AND EXISTS (SELECT 1 FROM msd.signals s WHERE s.signal_id = o.signal_id)
 ORDER BY o.updated_at, o.order_id
 LIMIT %(limit)s
"""

DECIDING_MODES = ("warmup", "model")

# One row per recorded decision of the selected strategies, filled or not.
# Review finding 3: this used to JOIN on `fills > 0`. A limit order fills depending on the path
# after the decision and on its side, so keeping only filled decisions leaks the side into the
# labels. Now every decision is a row and its fills are aggregated beside it (count, traded
# notional) for the fill rate and the warm-up budget only; costs and PnL read fills themselves.
# The pieces are shared with the bulk reads of msd.store.training_columns (one labelling rule).
FILLS_JOIN = """
  LEFT JOIN LATERAL (SELECT count(*) AS fills, sum(e.quantity * e.price) AS notional
                       FROM msd.executions e WHERE e.signal_id = s.signal_id) f ON true"""
# The close of the bar that ends the label horizon.
BAR_JOIN = """
  LEFT JOIN LATERAL (
        -- a bar stamped `minute` closes one minute later
        SELECT b.close FROM msd.market_bars b
         WHERE b.asset = s.asset AND b.confirmed
           AND b.minute >= s.created_at + %(horizon)s - interval '1 minute'
           AND b.minute <= s.created_at + %(horizon)s - interval '1 minute' + %(lag)s
         ORDER BY b.minute LIMIT 1) bar ON true"""
DECISIONS_WHERE = """
 WHERE (%(strategy)s::text IS NULL OR s.strategy_id = %(strategy)s::text)
   AND s.mode IN ('warmup', 'model')
   AND s.outbox_state <> 'expired'   -- never sent (it waited out its age): not execution feedback
   AND (%(since)s::timestamptz IS NULL OR s.created_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR s.created_at < %(until)s::timestamptz)
"""
# While bars that would label a decision may still arrive, it is `open`.
OPEN_SQL = "s.created_at + %(horizon)s + %(lag)s > coalesce(%(now)s::timestamptz, now())"

_ROWS_SQL = """
SELECT s.signal_id::text AS signal_id, s.strategy_id, s.asset, s.signal_type, s.created_at,
       {snapshot} AS snapshot, s.amount, s.mode, s.model_version, s.confidence, f.fills,
       bar.close AS horizon_close, """ + OPEN_SQL + """ AS open, f.notional AS filled_notional
  FROM msd.signals s""" + FILLS_JOIN + BAR_JOIN + DECISIONS_WHERE

# The strategy's priced fills with the decision-time price of their signal (cost estimate).
_COST_FILLS_SQL = """
SELECT e.executed_at, e.side, e.quantity, e.price, e.fee, s.snapshot->>'price'
  FROM msd.executions e JOIN msd.signals s ON s.signal_id = e.signal_id
 WHERE e.strategy_id = %(strategy)s AND e.price IS NOT NULL
   AND (%(since)s::timestamptz IS NULL OR e.executed_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR e.executed_at < %(until)s::timestamptz)
 ORDER BY e.executed_at, e.id
"""


@dataclass(frozen=True)
class TrainingRows:
    decisions: list[Decision]        # labelled-ready: a horizon close is recorded
    counts: RowCounts


@dataclass(frozen=True)
class LabelWindow:
    """How labels are measured: horizon and tolerated bar lag in seconds; `now` (aware) is
    the moment that decides whether a horizon is over (None = the database's clock)."""
    horizon_s: float
    max_bar_lag_s: float
    now: datetime | None = None

    def params(self) -> dict:
        return {"horizon": timedelta(seconds=self.horizon_s),
                "lag": timedelta(seconds=self.max_bar_lag_s), "now": self.now}


def reconcile_executions(conn, *, overlap_s: float = 300.0, batch_size: int = 1000) -> int:
    """Record fills of the shared `orders` table the event stream missed; returns how many.

    Reads rows updated since the stored watermark minus `overlap_s` (a row committed late with
    an older `updated_at` is still seen), through the same idempotent path as events, so a
    fill is recorded once whichever source sees it first. Returns 0 when there is no `orders`
    table; raises SharedSchemaError when it lacks a column msd reads.
    """
    if not _orders_table_usable(conn):
        return 0
    watermark = _watermark(conn)
    since = watermark - timedelta(seconds=overlap_s) if watermark else None
    recorded, after, newest = 0, (None, None), watermark
    while True:
        rows = _fetch(conn, _RECONCILE_SQL, {"since": since, "after_at": after[0],
                                             "after_id": after[1], "limit": batch_size})
        if not rows:
            break
        recorded += len(record_order_events(conn, [_order_snapshot(r) for r in rows]).executions)
        after = (rows[-1][13], rows[-1][1])
        newest = after[0] if newest is None else max(newest, after[0])
        if len(rows) < batch_size:
            break
    if newest is not None and newest != watermark:
        _set_watermark(conn, newest)
    return recorded


def iter_training_rows(conn, strategy_id: str, window: LabelWindow, *,
                       since: datetime | None = None, until: datetime | None = None,
                       chunk_size: int = 20_000) -> Iterator[TrainingRows]:
    """Executed decisions of a strategy in decision-time order, `chunk_size` at a time.

    Streams through a server-side cursor so memory stays bounded whatever the history.
    Decisions without a horizon close (yet) are only counted.
    """
    sql = _ROWS_SQL.format(snapshot="s.snapshot") + " ORDER BY s.created_at, s.signal_id"
    with conn.cursor(name="msd_training_rows") as cur:
        cur.itersize = chunk_size
        cur.execute(sql, {**window.params(), "strategy": strategy_id, "since": since,
                          "until": until})
        while True:
            rows = cur.fetchmany(chunk_size)
            if not rows:
                return
            yield _chunk(rows)


def load_training_rows(conn, strategy_id: str, window: LabelWindow, *,
                       since: datetime | None = None,
                       until: datetime | None = None) -> TrainingRows:
    """All of iter_training_rows at once (fine for thousands of rows, not millions)."""
    decisions, counts = [], RowCounts()
    for chunk in iter_training_rows(conn, strategy_id, window, since=since, until=until):
        decisions.extend(chunk.decisions)
        counts += chunk.counts
    return TrainingRows(decisions, counts)


def iter_cost_fills(conn, strategy_id: str, *, since: datetime | None = None,
                    until: datetime | None = None, chunk_size: int = 50_000) -> Iterator[CostFill]:
    """The strategy's priced fills in execution order with their signal's decision price."""
    with conn.cursor(name="msd_cost_fills") as cur:
        cur.itersize = chunk_size
        cur.execute(_COST_FILLS_SQL, {"strategy": strategy_id, "since": since, "until": until})
        for executed_at, side, quantity, price, fee, snapshot_price in cur:
            reference = decision_price({"price": snapshot_price})
            if reference is not None:
                yield CostFill(executed_at, side, float(quantity), float(price), float(fee),
                               reference)


def load_cost_fills(conn, strategy_id: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> list[CostFill]:
    return list(iter_cost_fills(conn, strategy_id, since=since, until=until))


def dataset_sizes(conn, window: LabelWindow) -> dict[str, dict[str, int]]:
    """{strategy: {"executions", "signals", "labelled", "pending_label", "no_price",
    "no_bars"}} for `msd-ctl status`. One bar lookup per executed signal: seconds for 10^6."""
    sql = f"""SELECT strategy_id, sum(fills)::bigint, count(*),
                     count(*) FILTER (WHERE price_ok AND horizon_close IS NOT NULL),
                     count(*) FILTER (WHERE price_ok AND horizon_close IS NULL AND open),
                     count(*) FILTER (WHERE NOT price_ok),
                     count(*) FILTER (WHERE price_ok AND horizon_close IS NULL AND NOT open),
                     count(*) FILTER (WHERE fills > 0)
                FROM (SELECT r.*, CASE WHEN jsonb_typeof(r.snapshot->'price') = 'number'
                                       THEN (r.snapshot->>'price')::numeric > 0
                                       ELSE false END AS price_ok
                        FROM ({_ROWS_SQL.format(snapshot="s.snapshot")}) r) r
               GROUP BY strategy_id ORDER BY strategy_id"""
    rows = _fetch(conn, sql, {**window.params(), "strategy": None, "since": None, "until": None})
    return {strategy: RowCounts(*counts).as_dict() for strategy, *counts in rows}


def strategies_with_executions(conn) -> list[str]:
    """Every strategy with fills, exits included (for listings)."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT strategy_id FROM msd.executions"
                    " WHERE strategy_id IS NOT NULL ORDER BY strategy_id")
        return [row[0] for row in cur.fetchall()]


def trainable_strategies(conn) -> list[str]:
    """Strategies with recorded decisions (warm-up or model signals, filled or not): only
    these have outcomes to learn from. The exit engine's signals are not decisions (mode
    'exit')."""
    with conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT s.strategy_id FROM msd.signals s
                        WHERE s.mode IN ('warmup', 'model') ORDER BY s.strategy_id""")
        return [row[0] for row in cur.fetchall()]


def iter_fills(conn, strategy_id: str, chunk_size: int = 50_000) -> Iterator[TradeFill]:
    """The strategy's priced fills in execution order, for FIFO round trips (streamed)."""
    with conn.cursor(name="msd_strategy_fills") as cur:
        cur.itersize = chunk_size
        cur.execute("""SELECT asset, side, quantity, price, fee, executed_at FROM msd.executions
                        WHERE strategy_id = %s AND price IS NOT NULL
                        ORDER BY executed_at, id""", (strategy_id,))
        yield from map(TradeFill._make, cur)


def _chunk(rows: list[tuple]) -> TrainingRows:
    decisions, counts = [], [0] * 7
    for (signal_id, strategy, asset, side, decided_at, snapshot, amount, mode, version,
         confidence, fills, close, is_open, notional) in rows:
        counts[0] += fills
        counts[1] += 1
        counts[6] += fills > 0
        if decision_price(snapshot or {}) is None:
            counts[4] += 1
        elif close is None:
            counts[3 if is_open else 5] += 1
        else:
            counts[2] += 1
            decisions.append(Decision(signal_id, strategy, asset, side, decided_at, snapshot,
                                      float(amount), mode, version, float(confidence),
                                      float(close), int(fills),
                                      None if notional is None else float(notional)))
    return TrainingRows(decisions, RowCounts(*counts))


def _orders_table_usable(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("""SELECT a.attname FROM pg_attribute a
                        WHERE a.attrelid = to_regclass('orders') AND a.attnum > 0
                          AND NOT a.attisdropped""")
        present = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT to_regclass('orders') IS NOT NULL")
        exists = cur.fetchone()[0]
    if not exists:
        return False
    missing = missing_columns({"orders": _ORDER_COLUMNS}, {"orders": present})
    if missing:
        raise SharedSchemaError(missing)
    return True


def _order_snapshot(row: tuple) -> OrderSnapshot:
    (id_, order_id, signal_id, asset, side, order_type, quantity, price, status, filled,
     average, fees, created_at, updated_at, executed_at, dry_run) = row
    # The shared table keeps naive UTC times and 'Buy'/'SELL' (CONTRACTS.md §5).
    return OrderSnapshot(id_, order_id, signal_id, asset, side.lower(), order_type, quantity,
                         price, status, filled, average, fees, _utc(created_at),
                         _utc(updated_at), _utc(executed_at) if executed_at else None, dry_run)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _watermark(conn) -> datetime | None:
    rows = _fetch(conn, "SELECT watermark FROM msd.reconcile_state WHERE name = %(name)s",
                  {"name": RECONCILE_NAME})
    return rows[0][0] if rows else None


def _set_watermark(conn, watermark: datetime) -> None:
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO msd.reconcile_state (name, watermark) VALUES (%s, %s)
                       ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark,
                                                        updated_at = now()""",
                    (RECONCILE_NAME, watermark))


def _fetch(conn, sql: str, params: dict) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def recent_decisions(conn, strategy_id: str, window: LabelWindow, *, since: datetime | None = None,
                     model_version: str | None = None, mode: str | None = None,
                     limit: int | None = None) -> list[Decision]:
    """Labelled-ready decisions of a strategy decided at or after `since` (None: ever), oldest first;
    optionally only one model version's (or one mode's), and only the newest `limit`."""
    sql = (_ROWS_SQL.format(snapshot="s.snapshot")
           + " AND (%(version)s::text IS NULL OR (s.mode = 'model' AND s.model_version = %(version)s))"
             " AND (%(mode)s::text IS NULL OR s.mode = %(mode)s)"
             " ORDER BY s.created_at DESC, s.signal_id DESC LIMIT %(limit)s")
    rows = _fetch(conn, sql, {**window.params(), "strategy": strategy_id, "since": since,
                              "until": None, "limit": limit, "version": model_version,
                              "mode": mode})
    return list(reversed(_chunk(rows).decisions))


def labelled_since_last_training(conn, horizon_s: float, now: datetime) -> dict[str, int]:
    """Per strategy: recorded decisions (filled or not) whose label horizon ended by `now` since its
    last training attempt (trained or skipped), or ever when it was never trained. Cheap: no bar
    lookups. Exit signals are not decisions and are not counted. `now` is the caller's clock (a
    replay passes event time), never the database's."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT s.strategy_id, count(*) FROM msd.signals s
                LEFT JOIN (SELECT strategy_id, max(at) AS at FROM msd.training_outcomes
                            GROUP BY strategy_id) t ON t.strategy_id = s.strategy_id
                WHERE s.created_at + %(horizon)s <= %(now)s
                  AND s.mode IN ('warmup', 'model') AND s.outbox_state <> 'expired'
                  AND (t.at IS NULL OR s.created_at + %(horizon)s > t.at)
                GROUP BY s.strategy_id""", {"horizon": timedelta(seconds=horizon_s), "now": now})
        return dict(cur.fetchall())


def warmup_budget_decisions(conn, strategy_id: str, window: LabelWindow, *,
                            since: datetime) -> tuple[list[Decision], list[Decision]]:
    """The strategy's warm-up decisions since `since` (oldest first), filled or not, with their
    fills aggregated: (labelled-ready ones, overdue ones). Overdue: the horizon and bar lag are
    over but there is no horizon close or no usable price, so no label will come; the warm-up
    budget charges them at a stated worst case (review finding 6)."""
    sql = (_ROWS_SQL.format(snapshot="s.snapshot") + " AND s.mode = 'warmup'"
           " ORDER BY s.created_at, s.signal_id")
    rows = _fetch(conn, sql, {**window.params(), "strategy": strategy_id, "since": since,
                              "until": None})
    ready, overdue = [], []
    for (signal_id, strategy, asset, side, decided_at, snapshot, amount, mode, version,
         confidence, fills, close, is_open, notional) in rows:
        decision = Decision(signal_id, strategy, asset, side, decided_at, snapshot, float(amount),
                            mode, version, float(confidence),
                            None if close is None else float(close), int(fills),
                            None if notional is None else float(notional))
        if close is not None and decision_price(snapshot or {}) is not None:
            ready.append(decision)
        elif not is_open:
            overdue.append(decision)
    return ready, overdue
