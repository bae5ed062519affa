"""A strategy's training data in bulk, as numpy columns (no Python object per row).

The same rows as msd.store.datasets (one per recorded decision, filled or not, with its
aggregated fills and the close that ends its label horizon; the same SQL), read through
binary COPY (msd.store.bulk). The snapshot numbers the caller names by path come from the
columns sql/009_training_columns.sql stores beside each signal (`snap_<path keys joined by _>`,
NaN: absent or not a number), which hold what msd.values.parsing.float_or_nan makes of the
JSON value; the rare row whose value SQL cannot read that way (`snap_unusual`: text with
spaces or underscores, a magnitude beyond float64's range) is read again here, in Python, from
its snapshot.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Callable, Sequence

import numpy as np

from msd.store.bulk import copy_records, float8_or_nan
from msd.store.datasets import BAR_JOIN, DECISIONS_WHERE, OPEN_SQL, LabelWindow
from msd.values.parsing import float_or_nan

Path = tuple[str, ...]

_DECISIONS_FROM = "\n  FROM msd.signals s" + BAR_JOIN + DECISIONS_WHERE
_DECISION_ORDER = " ORDER BY s.created_at, s.signal_id"
_EPOCH_US = "(extract(epoch FROM {0}) * 1000000)::int8"
_IDENTIFIER = re.compile(r"^[a-z0-9_]+$")


def snapshot_column(path: Path, suffix: str = "") -> str:
    """The stored column of a snapshot path (see sql/009_training_columns.sql)."""
    name = "snap_" + "_".join(path) + suffix
    if not _IDENTIFIER.match(name):
        raise ValueError(f"snapshot path: {path!r} is invalid; expected lower-case keys")
    return f"s.{name}"


def decision_columns(conn, strategy_id: str, window: LabelWindow, number_paths: Sequence[Path],
                     object_paths: Sequence[Path] = (), *, since: datetime | None = None,
                     until: datetime | None = None,
                     progress: Callable[[], None] = lambda: None) -> dict[str, np.ndarray]:
    """The strategy's decisions in decision-time order (created_at, signal_id) as columns:
    `signal_id` (S36), `decided_us` (epoch microseconds), `horizon_close` (NaN: none
    recorded or not a float), `close_recorded` (a bar close was found), `open` (bars that
    would label it may still arrive), `numbers` (a float64 column per number path) and
    `objects` (a bool column per object path: is the value at that path a JSON object)."""
    columns = ([("signal_id", "S36"), ("decided_us", "int8"), ("horizon_close", "float8"), ("close_recorded", "bool"), ("open", "bool"),
                ("unusual", "bool")]
               + [(f"n{i}", "float8") for i in range(len(number_paths))]
               + [(f"o{i}", "bool") for i in range(len(object_paths))])
    select = ["s.signal_id::text", _EPOCH_US.format("s.created_at"),
              float8_or_nan("bar.close"), "bar.close IS NOT NULL", OPEN_SQL, "s.snap_unusual",
              *(snapshot_column(p) for p in number_paths),
              *(snapshot_column(p, "_is_object") for p in object_paths)]
    params = {**window.params(), "strategy": strategy_id, "since": since, "until": until}
    raw = copy_records(conn, "SELECT " + ", ".join(select) + _DECISIONS_FROM + _DECISION_ORDER,
                       params, columns, progress)
    # kept as separate columns: stacking them would hold a second copy of the biggest part
    numbers = [raw.pop(f"n{i}") for i in range(len(number_paths))]
    objects = [raw.pop(f"o{i}") for i in range(len(object_paths))]
    unusual = np.flatnonzero(raw.pop("unusual"))
    if unusual.size:
        reread = _read_unusual(
            conn, f"SELECT s.snapshot {_DECISIONS_FROM} AND s.snap_unusual {_DECISION_ORDER}",
            params, number_paths)
        for i, column in enumerate(numbers):
            column[unusual] = reread[:, i]
    return {**raw, "numbers": numbers, "objects": objects}


def decision_fill_counts(conn, strategy_id: str, *, since: datetime | None = None,
                         until: datetime | None = None) -> tuple[int, int]:
    """(fills, decisions with at least one fill) of the decisions decision_columns reads:
    set-based, instead of counting each decision's fills beside it."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT e.signal_id) FROM msd.signals s"
                    " JOIN msd.executions e ON e.signal_id = s.signal_id" + DECISIONS_WHERE,
                    {"strategy": strategy_id, "since": since, "until": until})
        fills, filled = cur.fetchone()
    return int(fills), int(filled)


def _read_unusual(conn, rows_sql: str, params: dict, paths: Sequence[Path]) -> np.ndarray:
    """The number columns of the rows SQL could not read exactly (`rows_sql` selects their
    snapshots in the order of the bulk read), read from their snapshots in Python."""
    with conn.cursor() as cur:
        cur.execute(rows_sql, params)
        snapshots = [row[0] for row in cur.fetchall()]
    out = np.full((len(snapshots), len(paths)), np.nan)
    for row, snapshot in enumerate(snapshots):
        for column, path in enumerate(paths):
            node = snapshot
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            out[row, column] = float_or_nan(node)
    return out


_COST_FILLS_FROM = """
  FROM msd.executions e JOIN msd.signals s ON s.signal_id = e.signal_id
 WHERE e.strategy_id = %(strategy)s AND e.price IS NOT NULL
   AND (%(since)s::timestamptz IS NULL OR e.executed_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR e.executed_at < %(until)s::timestamptz)
"""
_COST_FILLS_ORDER = " ORDER BY e.executed_at, e.id"
PRICE_PATH: Path = ("price",)


def cost_fill_columns(conn, strategy_id: str, *, since: datetime | None = None,
                      until: datetime | None = None,
                      progress: Callable[[], None] = lambda: None) -> dict[str, np.ndarray]:
    """The strategy's priced fills in execution order as columns: `executed_us`, `buy` (the
    executed side is buy), `quantity`, `price`, `fee` and `snapshot_price` (the decision-time
    price of the fill's signal, NaN when its snapshot has none) as float64 (NaN: unreadable)."""
    select = [_EPOCH_US.format("e.executed_at"), "coalesce(e.side = 'buy', false)",
              *(float8_or_nan(f"e.{name}") for name in ("quantity", "price", "fee")),
              snapshot_column(PRICE_PATH), "s.snap_unusual"]
    columns = [("executed_us", "int8"), ("buy", "bool"), ("quantity", "float8"),
               ("price", "float8"), ("fee", "float8"), ("snapshot_price", "float8"),
               ("unusual", "bool")]
    params = {"strategy": strategy_id, "since": since, "until": until}
    raw = copy_records(conn, "SELECT " + ", ".join(select) + _COST_FILLS_FROM + _COST_FILLS_ORDER,
                       params, columns, progress)
    unusual = np.flatnonzero(raw.pop("unusual"))
    if unusual.size:
        raw["snapshot_price"][unusual] = _read_unusual(
            conn, f"SELECT s.snapshot {_COST_FILLS_FROM} AND s.snap_unusual {_COST_FILLS_ORDER}",
            params, [PRICE_PATH])[:, 0]
    return raw
