"""1-minute bars from ws-gateway.kline into `msd.market_bars`."""
from __future__ import annotations

from typing import Sequence

from psycopg2.extras import execute_values

from msd.values.messages import Kline

UPSERT_BARS_SQL = """
INSERT INTO msd.market_bars AS bar
       (asset, minute, open, high, low, close, volume, turnover, confirmed, updated_at)
VALUES %s
ON CONFLICT (asset, minute) DO UPDATE
   SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
       volume = EXCLUDED.volume, turnover = EXCLUDED.turnover, confirmed = EXCLUDED.confirmed,
       updated_at = now()
 -- A closed bar is final: a redelivered in-progress update of the same minute must not undo it.
 WHERE NOT (bar.confirmed AND NOT EXCLUDED.confirmed)
"""


def latest_per_minute(klines: Sequence[Kline]) -> list[Kline]:
    """One kline per (asset, minute): the last one given, as one statement cannot update a
    row twice."""
    latest: dict[tuple[str, object], Kline] = {}
    for kline in klines:
        latest[(kline.asset, kline.start)] = kline
    return list(latest.values())


def upsert_bars(conn, klines: Sequence[Kline]) -> int:
    """Insert or update the bars of `klines` in the caller's transaction; returns rows written.

    Confirmed or not, the latest update of a minute wins, except that an unconfirmed update
    never replaces a confirmed bar.
    """
    rows = [(k.asset, k.start, k.open, k.high, k.low, k.close, k.volume, k.turnover,
             k.confirmed) for k in latest_per_minute(klines)]
    if not rows:
        return 0
    with conn.cursor() as cur:
        execute_values(cur, UPSERT_BARS_SQL, rows,
                       template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
                       page_size=len(rows))
        return cur.rowcount


def read_bars(conn, asset: str) -> list[tuple]:
    """The asset's confirmed 1-minute bars, oldest first: (minute, open, high, low, close, volume).
    Read-only: `msd backtest --from-db` replays them."""
    with conn.cursor() as cur:
        cur.execute("""SELECT minute, open, high, low, close, volume FROM msd.market_bars
                        WHERE asset = %s AND confirmed ORDER BY minute""", (asset,))
        return cur.fetchall()
