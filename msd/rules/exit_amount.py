"""Notional of an exit in USDT: what order-manager reads as the signal amount.

A previous implementation sent the size to close in base units (e.g. 0.5 BTC as "0.5") while the
consumer reads USDT; this module is the one place that converts, for longs and shorts alike.
"""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from msd.rules.types import InvalidPositionData, to_decimal

MIN_AMOUNT_USDT = Decimal("0.01")


def exit_amount_usdt(size_abs: Decimal, price: Decimal, fraction: Decimal) -> Decimal:
    """|size| x price x fraction in USDT, rounded DOWN to 0.01.

    Rounding down never asks to close more than the position holds. A result below
    MIN_AMOUNT_USDT (i.e. 0.00) means "no signal": the position is dust at this price.
    Raises InvalidPositionData for a negative size, a price <= 0, or a fraction outside (0, 1].
    """
    size = to_decimal("size", size_abs, non_negative=True)
    price = to_decimal("price", price, positive=True)
    fraction = to_decimal("fraction", fraction, positive=True)
    if fraction > 1:
        raise InvalidPositionData("fraction", fraction, "a fraction in (0, 1]")
    return (size * price * fraction).quantize(MIN_AMOUNT_USDT, rounding=ROUND_DOWN)
