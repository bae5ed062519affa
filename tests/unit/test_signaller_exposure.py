"""Net USDT exposure from the shared tables, as the warm-up exposure cap sees it."""
from decimal import Decimal as D

import pytest

from msd.strategies.warmup import exposure_usdt
from msd.store.neighbours import Exposure


def exposure(**kw):
    base = dict(asset="BTCUSDT", open_orders=0, open_buy_notional=D(0), open_sell_notional=D(0),
                unpriced_open_orders=0, open_positions=0, position_size=D(0), position_notional=D(0),
                unpriced_positions=0)
    return Exposure(**{**base, **kw})


@pytest.mark.parametrize("kw, expected", [
    ({}, D(0)),
    ({"position_size": D("0.002"), "position_notional": D(100), "open_positions": 1}, D(100)),
    ({"position_size": D("-0.002"), "position_notional": D(100), "open_positions": 1}, D(-100)),
    ({"open_buy_notional": D(30), "open_sell_notional": D(10), "open_orders": 2}, D(20)),
    # a pending Market buy of 0.001 has no price in `orders`: valued at the market (50,000)
    ({"unpriced_open_orders": 1, "unpriced_buy_quantity": D("0.001"), "open_orders": 1}, D(50)),
    ({"unpriced_open_orders": 1, "unpriced_sell_quantity": D("0.001"), "open_orders": 1}, D(-50)),
])
def test_exposure_in_usdt(kw, expected):
    assert exposure_usdt(exposure(**kw), D(50000)) == expected


def test_pending_market_order_does_not_make_exposure_unknown():
    """Regression: a pending Market order (no price, no average price) used to silence the strategy."""
    value = exposure_usdt(exposure(unpriced_open_orders=1, unpriced_buy_quantity=D("0.002"), open_orders=1), D(100))
    assert value == D("0.2")
