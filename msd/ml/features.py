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
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from msd.values.parsing import finite_float

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


class _Missing(Exception):
    """Internal carrier so that helpers can bail out from deep inside one computation."""

    def __init__(self, missing: MissingFeature):
        super().__init__(str(missing))
        self.missing = missing


def side_from_label(label: int) -> str:
    """A call's direction as a side: 1 -> "buy", 0 -> "sell" ("neither" is not a side)."""
    side = SIDES.get(int(label)) if isinstance(label, (int, np.integer)) else None
    if side is None:
        raise ValueError(f"label: {label!r} is invalid; expected one of {sorted(SIDES)}")
    return side


def features_from_snapshot(snapshot: Mapping[str, Any],
                           context: Mapping[str, Any]) -> np.ndarray | MissingFeature:
    """Feature vector in FEATURE_NAMES order, or the first feature that cannot be computed.

    `snapshot` is a signal's market_data_snapshot (numbers, Decimals or numeric strings, as on
    the wire). `context` holds state known at decision time; it must carry `decided_at`, an
    aware datetime (the signal timestamp).
    """
    try:
        price = _positive(snapshot, "price", "ma_deviation_z")
        volatility = _number(snapshot, "volatility", "log_volatility")
        if volatility < 0:
            raise _Missing(MissingFeature("log_volatility", f"volatility {volatility} < 0"))
        indicators = _mapping(snapshot, "technical_indicators", "return_1m")
        hour_sin, hour_cos = _time_of_day(context)
        values = [
            _spread(snapshot),
            math.log(max(volatility, VOLATILITY_FLOOR)),
            _book_imbalance(snapshot),
            *(_number(indicators, key, key) for key in RETURN_KEYS),
            _ma_deviation(price, volatility, indicators),
            hour_sin,
            hour_cos,
        ]
    except _Missing as exc:
        return exc.missing
    return np.asarray(values, dtype=np.float64)


def _spread(snapshot: Mapping[str, Any]) -> float:
    spread = _number(snapshot, "spread", "spread_pct")
    if spread < 0:
        raise _Missing(MissingFeature("spread_pct", f"spread {spread} < 0"))
    return spread


def _book_imbalance(snapshot: Mapping[str, Any]) -> float:
    depth = _mapping(snapshot, "orderbook_depth", "book_imbalance")
    bid = _number(depth, "bid_depth", "book_imbalance")
    ask = _number(depth, "ask_depth", "book_imbalance")
    if bid < 0 or ask < 0 or bid + ask <= 0:
        raise _Missing(MissingFeature("book_imbalance", f"depths bid={bid} ask={ask} unusable"))
    return (bid - ask) / (bid + ask)


def _ma_deviation(price: float, volatility: float, indicators: Mapping[str, Any]) -> float:
    average = _positive(indicators, MOVING_AVERAGE_KEY, "ma_deviation_z")
    # The hour's return std is the per-minute std scaled by sqrt(60) (random-walk scaling), so
    # the ratio reads as "how many typical hourly moves is the price away from its average".
    hourly_std = max(volatility, VOLATILITY_FLOOR) * math.sqrt(MINUTES_PER_HOUR_WINDOW)
    return math.log(price / average) / hourly_std


def _time_of_day(context: Mapping[str, Any]) -> tuple[float, float]:
    decided_at = context.get("decided_at")
    if not isinstance(decided_at, datetime) or decided_at.utcoffset() is None:
        raise _Missing(MissingFeature("hour_sin", f"context decided_at {decided_at!r} is not "
                                                  "an aware datetime"))
    utc = decided_at.astimezone(timezone.utc)
    seconds = utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1e6
    angle = 2.0 * math.pi * seconds / 86400.0
    return math.sin(angle), math.cos(angle)


def _mapping(source: Mapping[str, Any], key: str, feature: str) -> Mapping[str, Any]:
    value = source.get(key)
    if not isinstance(value, Mapping):
        raise _Missing(MissingFeature(feature, f"{key} is {type(value).__name__}, not an object"))
    return value


def _positive(source: Mapping[str, Any], key: str, feature: str) -> float:
    value = _number(source, key, feature)
    if value <= 0:
        raise _Missing(MissingFeature(feature, f"{key} {value} is not > 0"))
    return value


def _number(source: Mapping[str, Any], key: str, feature: str) -> float:
    """A finite float from a JSON number, Decimal or numeric string; anything else is missing."""
    raw = source.get(key)
    if raw is None:
        raise _Missing(MissingFeature(feature, f"{key} is absent"))
    if isinstance(raw, bool):  # bool is an int subclass; True is not a price
        raise _Missing(MissingFeature(feature, f"{key} is a bool"))
    value = finite_float(raw)
    if value is None:
        raise _Missing(MissingFeature(feature, f"{key} {raw!r} is not a finite number"))
    return value
