"""The report's figures, each one formula (README "Before you trade: backtest" writes them out).

- daily returns r_d = E_d / E_{d-1} - 1 on the account equity at the end of each UTC day;
  Sharpe = mean(r) / std(r) x sqrt(365) (population std, n = number of daily returns, printed);
  None with fewer than 2 returns or a zero std.
- max drawdown = max over t of (peak_t - E_t) / peak_t, peak_t the highest equity up to t; for a
  strategy, in quote units: max of (peak PnL - PnL).
- turnover = sum of |fill quantity x price| / starting balance.
- hit rate = closed trades (FIFO lots) with PnL > 0 after fees / closed trades.
- pay rate = labelled calls whose side paid after costs (msd's outcome label) / labelled calls.
- a share's 95 % interval is Wilson's; a mean's is mean +- 1.96 x std / sqrt(n).
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Sequence


def daily_closes(points: Sequence[tuple[datetime, float]]) -> list[tuple[str, float]]:
    """The last value of each UTC day, in day order."""
    days: dict[str, float] = {}
    for at, value in points:
        days[at.date().isoformat()] = value
    return sorted(days.items())


def daily_pnl_returns(curve: Sequence[tuple[datetime, float]], balance: float) -> list[float]:
    """A strategy's or an asset's daily PnL change over the starting balance (it has no capital
    of its own), from its PnL curve."""
    days = [v for _, v in daily_closes(curve)]
    return [(b - a) / balance for a, b in zip([0.0] + days, days)]


def returns(values: Sequence[float], start: float) -> list[float]:
    out, previous = [], start
    for value in values:
        out.append(value / previous - 1.0 if previous else 0.0)
        previous = value
    return out


def sharpe(daily: Sequence[float]) -> float | None:
    if len(daily) < 2:
        return None
    mean = sum(daily) / len(daily)
    std = math.sqrt(sum((r - mean) ** 2 for r in daily) / len(daily))
    return None if std == 0 else mean / std * math.sqrt(365)


def max_drawdown_fraction(values: Sequence[float]) -> float:
    peak, worst = -math.inf, 0.0
    for value in values:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


def max_drawdown_amount(values: Sequence[float]) -> float:
    peak, worst = -math.inf, 0.0
    for value in values:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float] | None:
    """(mean, low, high); None without values."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * std / math.sqrt(n)
    return mean, mean - half, mean + half


def rounded(value, places: int = 6):
    """Floats rounded for the report (None and ints kept), so the JSON is stable and readable."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, places)
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, places) for v in value]
    return value
