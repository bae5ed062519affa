"""The spread of the candle feature profile: fixed by --spread-bps, or estimated from the candles
(--spread-from-candles) with Corwin and Schultz's high-low estimator (J. Finance 2012), pure.

Over two adjacent candles t-1 and t, with the second shifted by the gap between t-1's close
and t's range (the paper's overnight adjustment: the move between candles is not spread),
    beta  = ln(H1/L1)^2 + ln(H2/L2)^2
    gamma = ln(max(H1, H2) / min(L1, L2))^2
    alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))
    S     = 2 (e^alpha - 1) / (1 + e^alpha),   clipped at 0
S is the full spread as a fraction of price. --spread-bps is the floor: the spread in force is
max(S, --spread-bps), and --spread-bps alone where there is no estimate (the first candle, a
gap before the candle, a zero-volume candle on either side). The estimate of candles t-1 and t
is known at t's close: it prices the decision at that close and the fills during candle t+1,
never a fill inside t (no look-ahead).
"""
from __future__ import annotations

import math
from decimal import Decimal

from msd.backtest.candles import Candle
from msd.values.parsing import finite_decimal

_K = 3 - 2 * math.sqrt(2)
# A half spread must stay a fraction below 1 (CostModel); a pair of candles whose ranges imply
# more than a 100 % spread is bad data, and it is priced at that cap rather than refused.
MAX_HALF_SPREAD = Decimal("0.5")
_QUANTUM = Decimal("1e-12")


def corwin_schultz(previous: Candle, current: Candle) -> float:
    """The full spread fraction the two candles imply (module doc), >= 0."""
    high, low = float(current.high), float(current.low)
    close = float(previous.close)
    if low > close:                       # opened above the previous close: shift the range down
        high, low = high - (low - close), close
    elif high < close:                    # opened below: shift it up
        high, low = close, low + (close - high)
    h1, l1 = float(previous.high), float(previous.low)
    beta = math.log(h1 / l1) ** 2 + math.log(high / low) ** 2
    gamma = math.log(max(h1, high) / min(l1, low)) ** 2
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / _K - math.sqrt(gamma / _K)
    spread = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
    return max(0.0, spread)


def half_spread_after(previous: Candle | None, current: Candle, floor: Decimal, factor: Decimal = Decimal(1)) -> Decimal:
    """The half spread in force from `current`'s close: half the estimate x `factor` (the cost
    sensitivity runs scale it), never below `floor` (half of --spread-bps, already scaled), which
    also stands where there is no estimate."""
    if previous is None or not (previous.traded and current.traded):
        return floor
    estimate = finite_decimal(corwin_schultz(previous, current)).quantize(_QUANTUM) / 2 * factor
    return min(MAX_HALF_SPREAD, max(floor, estimate))
