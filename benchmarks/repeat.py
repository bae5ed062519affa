"""Median and spread of a figure over repeated benchmark runs (targets apply to the median)."""
from __future__ import annotations

import statistics
from typing import Iterable


def median_spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) of the runs' values."""
    values = sorted(values)
    if not values:
        raise ValueError("median_spread needs at least one value")
    return statistics.median(values), values[0], values[-1]
