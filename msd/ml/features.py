"""Features and labels: the one place that says what a model sees and what it is asked.

Features come only from the signal's `market_data_snapshot` (taken at decision time, FR-003)
plus context known at that moment. They are scale-free so that one model can serve assets whose
prices differ by orders of magnitude. A feature that cannot be computed yields `MissingFeature`
naming it: the caller then falls back to heuristics instead of feeding the model a made-up 0.

The model answers one question about each decision: which side, if any, would have paid after
costs over the horizon (`LABELS`: sell pays, buy pays, neither). The decided side never enters a
feature or a label: the outcome is measured from the decision-time price (msd.learning.outcomes),
so the same market move gets the same label whatever was decided.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from msd.values.parsing import epoch_microseconds, float_or_nan

# Bump whenever a name, its order or its formula changes: stored models record the version they
# were trained with and must not be fed vectors built by a different recipe.
FEATURE_VERSION = "1"

FEATURE_NAMES: tuple[str, ...] = (
    "spread_pct",        # (ask - bid) / mid * 100, as the snapshot carries it
    "log_volatility",    # ln(std of 1-min log returns over the last hour)
    "book_imbalance",    # (bid_depth - ask_depth) / (bid_depth + ask_depth), in [-1, 1]
    "return_1m",         # fractional price change over the last minute
    "return_5m",
    "return_15m",
    "ma_deviation_z",    # ln(price / sma_60m) in units of the hour's return std
    "hour_sin",          # time of day of the decision, on the unit circle so 23h is near 0h
    "hour_cos",
)
# Not used: volume_24h is in base units (BTC vs. DOGE differ by 10^5) and has no reference in the
# snapshot to make it a ratio; price enters only through the moving-average deviation.

# Keys msd's own signaller writes into `technical_indicators` (it builds the snapshot itself,
# so these names are ours to fix; CONTRACTS.md §1.5 leaves the dict open).
RETURN_KEYS = ("return_1m", "return_5m", "return_15m")
MOVING_AVERAGE_KEY = "sma_60m"

# ln(0) is -inf; a dead market with zero measured volatility is real, so the floor keeps the
# feature finite while still putting such moments far below any normal reading.
VOLATILITY_FLOOR = 1e-6
MINUTES_PER_HOUR_WINDOW = 60

# The single label encoding used by features, models, metrics and the gate. An outcome class says
# which side would have paid after costs over the horizon; a call is one of the first two.
SELL, BUY, NEITHER = 0, 1, 2
NO_CALL = -1                      # the one tie rule: P(buy pays) == P(sell pays) calls nothing
LABELS: Mapping[str, int] = {"sell": SELL, "buy": BUY, "neither": NEITHER}
N_CLASSES = len(LABELS)
SIDES: Mapping[int, str] = {SELL: "sell", BUY: "buy"}


@dataclass(frozen=True)
class MissingFeature:
    """A feature could not be computed: `name` is always one of FEATURE_NAMES (a bounded metric
    label), `reason` names the snapshot field and what was wrong with it (for logs)."""
    name: str
    reason: str

    def __str__(self) -> str:
        return f"missing feature {self.name}: {self.reason}"


def side_from_label(label: int) -> str:
    """A call's direction as a side: 1 -> "buy", 0 -> "sell" ("neither" is not a side)."""
    side = SIDES.get(int(label)) if isinstance(label, (int, np.integer)) else None
    if side is None:
        raise ValueError(f"label: {label!r} is invalid; expected one of {sorted(SIDES)}")
    return side


# --- inputs: what the features read -----------------------------------------------------------
# The snapshot numbers the features read, by path, in the column order of an input matrix. The
# live path reads them from one snapshot (`snapshot_inputs`), the training store straight from
# the database in bulk; both then go through the same `feature_matrix`.
NUMBER_PATHS: tuple[tuple[str, ...], ...] = (
    ("price",), ("volatility",), ("spread",),
    ("orderbook_depth", "bid_depth"), ("orderbook_depth", "ask_depth"),
    *(("technical_indicators", key) for key in RETURN_KEYS),
    ("technical_indicators", MOVING_AVERAGE_KEY),
)
# Whether `technical_indicators` is an object matters on its own: it is checked before the
# spread, each of its numbers only after the order book.
OBJECT_PATHS: tuple[tuple[str, ...], ...] = (("technical_indicators",),)
(PRICE, VOLATILITY, SPREAD, BID_DEPTH, ASK_DEPTH, RETURN_1M, RETURN_5M, RETURN_15M, SMA,
 INDICATORS_OBJECT, DAY_SECONDS) = range(11)
N_INPUTS = 11
# An input column holds a finite float, or NaN when the field is absent or not a finite
# number (a bool is never a number); object columns hold 1.0 for an object and 0.0 otherwise;
# DAY_SECONDS is the decision's UTC time of day (NaN: no aware decision time).

# The checks in the order they apply: the first that fails names the missing feature. Each
# says what it requires and which snapshot paths it reads (for the reason in logs).
_INDICATORS = OBJECT_PATHS[0]
_CHECKS: tuple[tuple[str, str, tuple[tuple[str, ...], ...]], ...] = (
    ("ma_deviation_z", "a price > 0", (NUMBER_PATHS[PRICE],)),
    ("log_volatility", "a volatility >= 0", (NUMBER_PATHS[VOLATILITY],)),
    ("return_1m", "technical_indicators as an object", (_INDICATORS,)),
    ("hour_sin", "an aware decision time", ()),
    ("spread_pct", "a spread >= 0", (NUMBER_PATHS[SPREAD],)),
    ("book_imbalance", "depths >= 0 with a sum > 0", NUMBER_PATHS[BID_DEPTH:ASK_DEPTH + 1]),
    *((key, f"a finite {key}", (NUMBER_PATHS[column],))
      for key, column in zip(RETURN_KEYS, (RETURN_1M, RETURN_5M, RETURN_15M))),
    ("ma_deviation_z", f"a {MOVING_AVERAGE_KEY} > 0", (NUMBER_PATHS[SMA],)),
)
MISSING_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _CHECKS)   # by missing code
NOT_MISSING = -1


def seconds_of_day(epoch_us: np.ndarray) -> np.ndarray:
    """UTC seconds since midnight of epoch microseconds (int64), as float64."""
    us = np.asarray(epoch_us, dtype=np.int64)
    return ((us // 1_000_000) % 86_400).astype(np.float64) + (us % 1_000_000) / 1e6


def snapshot_inputs(snapshot: Any, decided_at: Any) -> np.ndarray:
    """The input row of one snapshot decided at `decided_at` (see NUMBER_PATHS)."""
    row = np.full(N_INPUTS, np.nan)
    for column, path in enumerate(NUMBER_PATHS):
        row[column] = float_or_nan(_at(snapshot, path[:-1]).get(path[-1]))
    row[INDICATORS_OBJECT] = float(isinstance(_at(snapshot, ())
                                              .get(OBJECT_PATHS[0][0]), Mapping))
    epoch_us = epoch_microseconds(decided_at)
    if epoch_us is not None:
        row[DAY_SECONDS] = seconds_of_day(np.array([epoch_us]))[0]
    return row


def _at(snapshot: Any, path: tuple[str, ...]) -> Mapping[str, Any]:
    """The object at `path` ({} where something on the way is not an object)."""
    node = snapshot
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


# --- the features: one vectorised definition --------------------------------------------------

def feature_matrix(inputs: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(X, missing) of an (n, N_INPUTS) input matrix or of its N_INPUTS columns: X
    (n, len(FEATURE_NAMES)) float64 in FEATURE_NAMES order, and per row the index into
    MISSING_NAMES of the first feature that cannot be computed (NOT_MISSING when all can; such
    a row's X is meaningless)."""
    col = (np.asarray(inputs, dtype=np.float64).T if isinstance(inputs, np.ndarray)
           else [np.asarray(c, dtype=np.float64) for c in inputs])
    if len(col) != N_INPUTS:
        raise ValueError(f"inputs: {len(col)} columns is invalid; expected {N_INPUTS}")
    price, volatility, spread, bid, ask, sma = (col[PRICE], col[VOLATILITY], col[SPREAD],
                                                col[BID_DEPTH], col[ASK_DEPTH], col[SMA])
    with np.errstate(all="ignore"):       # rows that fail a check compute garbage, never used
        failed = np.stack([
            ~(price > 0), ~(volatility >= 0), col[INDICATORS_OBJECT] != 1.0,
            np.isnan(col[DAY_SECONDS]), ~(spread >= 0),
            ~((bid >= 0) & (ask >= 0) & (bid + ask > 0)),
            np.isnan(col[RETURN_1M]), np.isnan(col[RETURN_5M]), np.isnan(col[RETURN_15M]),
            ~(sma > 0)], axis=1)
        floored = np.maximum(volatility, VOLATILITY_FLOOR)
        # ln(0) is -inf: the floor keeps a dead market's features finite (see VOLATILITY_FLOOR)
        # and the hour's return std is the per-minute std scaled by sqrt(60) (random walk), so
        # the deviation reads as "how many typical hourly moves from the average".
        hourly_std = floored * math.sqrt(MINUTES_PER_HOUR_WINDOW)
        angle = 2.0 * math.pi * col[DAY_SECONDS] / 86400.0
        X = np.empty((len(price), len(FEATURE_NAMES)))      # filled column by column (memory)
        X[:, 0] = spread
        X[:, 1] = np.log(floored)
        X[:, 2] = (bid - ask) / (bid + ask)
        for column in (RETURN_1M, RETURN_5M, RETURN_15M):
            X[:, 3 + column - RETURN_1M] = col[column]
        X[:, 6] = np.log(price / sma) / hourly_std
        X[:, 7] = np.sin(angle)
        X[:, 8] = np.cos(angle)
    missing = np.where(failed.any(axis=1), failed.argmax(axis=1), NOT_MISSING)
    return X, missing.astype(np.int8)


def features_from_snapshot(snapshot: Mapping[str, Any],
                           context: Mapping[str, Any]) -> np.ndarray | MissingFeature:
    """Feature vector in FEATURE_NAMES order, or the first feature that cannot be computed.

    `snapshot` is a signal's market_data_snapshot (numbers, Decimals or numeric strings, as on
    the wire). `context` holds state known at decision time; it must carry `decided_at`, an
    aware datetime (the signal timestamp).
    """
    X, missing = feature_matrix(snapshot_inputs(snapshot, context.get("decided_at"))[None, :])
    code = int(missing[0])
    if code != NOT_MISSING:
        return MissingFeature(MISSING_NAMES[code], _reason(code, snapshot, context))
    return X[0]


def _reason(code: int, snapshot: Any, context: Mapping[str, Any]) -> str:
    """What was required and the values read (for logs)."""
    _, requirement, paths = _CHECKS[code]
    if not paths:
        return f"expected {requirement}; context decided_at is {context.get('decided_at')!r}"
    read = ", ".join(f"{'.'.join(p)}={_at(snapshot, p[:-1]).get(p[-1])!r}" for p in paths)
    return f"expected {requirement}; read {read}"
