"""Synthetic executed signals, fills and bars in msd's own tables, for learning tests and the
training benchmark.

Feature values come from `msd.ml.synthetic.make_dataset` and are turned back into the
market_data_snapshot msd's signaller writes, so the real feature code recovers them; the bar
that ends the label horizon closes at the decision price × (1 + the synthetic forward return).
The decided side is a seeded coin (warm-up randomness), and the execution price carries a
little random slippage and a 0.1 % fee, so the strategy's own fills estimate a round-trip cost
near the 0.2 % default; neither the side nor the fill can stand in for the outcome.
"""
from __future__ import annotations

import io
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from msd.ml.features import FEATURE_NAMES
from msd.ml.synthetic import make_dataset

# Minute-aligned (1_699_999_980 = 28_333_333 × 60), so each decision's horizon ends on a bar.
START = datetime.fromtimestamp(1_699_999_980, timezone.utc)
HORIZON_S = 900
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True)
class Synthetic:
    signals: list[tuple]
    executions: list[tuple]
    bars: list[tuple]
    sides: list[str]
    returns: np.ndarray


def snapshot_of(row: np.ndarray, price: float) -> dict:
    """The snapshot whose features are `row` (hour features follow from the decision time)."""
    volatility = math.exp(row[COLUMN["log_volatility"]])
    imbalance = row[COLUMN["book_imbalance"]]
    hourly_std = max(volatility, 1e-6) * math.sqrt(60)
    return {"price": price, "spread": row[COLUMN["spread_pct"]], "volume_24h": 1234.5,
            "volatility": volatility,
            "orderbook_depth": {"bid_depth": 100 * (1 + imbalance),
                                "ask_depth": 100 * (1 - imbalance)},
            "technical_indicators": {
                "return_1m": row[COLUMN["return_1m"]], "return_5m": row[COLUMN["return_5m"]],
                "return_15m": row[COLUMN["return_15m"]],
                "sma_60m": price / math.exp(row[COLUMN["ma_deviation_z"]] * hourly_std)}}


DECISIVE_MOVE = 0.004


def synthetic(n: int, *, strength: float, drift: float = 0.0, seed: int = 0,
              strategy: str = "momentum_v1", asset: str = "BTCUSDT", start: datetime = START,
              shuffle_outcomes: bool = False, order_prefix: str | None = None,
              step_s: float = 60.0) -> Synthetic:
    """`n` decisions `step_s` apart (a minute by default) from `start`, each filled once, with
    its horizon's bar."""
    order_prefix = order_prefix or f"o{seed}-{int(start.timestamp())}"
    data = make_dataset(n, strength=strength, drift=drift, seed=seed,
                        start=start.timestamp(), step=step_s)
    rng = np.random.default_rng(seed + 1)
    returns = rng.permutation(data.returns) if shuffle_outcomes else data.returns
    # Every synthetic move clears the ~0.2 % round-trip cost, so the learnable signal decides
    # each outcome (a move inside the cost band would be the outcome "neither").
    returns = np.sign(returns) * np.maximum(np.abs(returns), DECISIVE_MOVE)
    sides = np.where(rng.random(n) < 0.5, "buy", "sell")
    slippage = rng.normal(0.0, 2e-4, n)
    signals, executions, bars = [], [], []
    for i in range(n):
        decided = datetime.fromtimestamp(data.timestamps[i], timezone.utc)
        signal_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{strategy}/{order_prefix}/{seed}/{i}"))
        price = 100.0
        snapshot = snapshot_of(data.X[i], price)
        entry = price * (1 + float(slippage[i]))
        exit_ = price * (1 + float(returns[i]))
        body = {"signal_id": signal_id, "signal_type": str(sides[i]), "asset": asset,
                "strategy_id": strategy, "market_data_snapshot": snapshot}
        signals.append((signal_id, strategy, asset, str(sides[i]), 100, 0.5, "warmup",
                        json.dumps(body), json.dumps(snapshot), decided.isoformat(), "sent"))
        executions.append((f"{order_prefix}-{i}", signal_id, strategy, asset, str(sides[i]),
                           0.01, entry, entry * 0.01 * 0.001, 0.01,
                           (decided + timedelta(seconds=2)).isoformat(), "event"))
        minute = decided + timedelta(seconds=HORIZON_S - 60)
        bars.append((asset, minute.isoformat(), exit_, exit_, exit_, exit_, 1, 1, "t"))
    return Synthetic(signals, executions, bars, [str(s) for s in sides], returns)


# History: these signals went out long ago (a pending row would be published again).
SIGNAL_COLUMNS = ("signal_id, strategy_id, asset, signal_type, amount, confidence, mode, body, "
                  "snapshot, created_at, outbox_state")
EXECUTION_COLUMNS = ("order_id, signal_id, strategy_id, asset, side, quantity, price, fee, "
                     "cumulative_quantity, executed_at, source")
BAR_COLUMNS = "asset, minute, open, high, low, close, volume, turnover, confirmed"


def copy_rows(conn, table: str, columns: str, rows: list[tuple]) -> None:
    """COPY rows in text format (our values hold no tabs, newlines or backslashes)."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_text(value) for value in row))
        buffer.write("\n")
    buffer.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)


def insert(conn, data: Synthetic) -> None:
    copy_rows(conn, "msd.signals", SIGNAL_COLUMNS, data.signals)
    copy_rows(conn, "msd.executions", EXECUTION_COLUMNS, data.executions)
    copy_rows(conn, "msd.market_bars", BAR_COLUMNS, data.bars)


def _text(value) -> str:
    # repr of a float is the shortest text that reads back to the same double
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def params(**overrides) -> dict:
    """Training params for tests: the real defaults except a gate sized for ~1,000 rows."""
    base = {"horizon_s": float(HORIZON_S), "max_bar_lag_s": 120.0, "min_new_rows": 200,
            "min_samples": 200, "validation_fraction": 0.25, "keep_files": 20,
            "min_emitted_calls": 30}
    base.update(overrides)
    return base
