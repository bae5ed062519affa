"""Exit amounts are USDT notional, for longs and shorts, rounded down; dust means no signal."""
from decimal import Decimal as D

import pytest

from msd.rules import InvalidPositionData, Side, exit_amount_usdt


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
def test_exit_amount_is_usdt_not_base_units(side):
    """Regression: a previous implementation sent the base-unit size (0.5 BTC as "0.5") while the
    consumer reads USDT. The amount is |size| x price x fraction whatever the side."""
    amount = exit_amount_usdt(D("0.5"), D("64000"), D(1))
    assert amount == D("32000.00")
    assert amount != D("0.5")
    assert side.closing_side == ("sell" if side is Side.LONG else "buy")


@pytest.mark.parametrize("size, price, fraction, expected", [
    (D("0.5"), D("64000"), D("0.5"), D("16000.00")),
    (D("3"), D("0.3333"), D(1), D("0.99")),          # 0.9999 rounds down, never up
    (D("0.123456"), D("1000"), D("0.3"), D("37.03")),  # 37.0368
    (D("0.0001"), D("50"), D("0.5"), D("0.00")),      # 0.0025 USDT: dust, no signal
    (D(0), D("100"), D(1), D("0.00")),
])
def test_exit_amount_values(size, price, fraction, expected):
    assert exit_amount_usdt(size, price, fraction) == expected


@pytest.mark.parametrize("field, args", [
    ("size", (D(-1), D(1), D(1))),
    ("price", (D(1), D(0), D(1))),
    ("price", (D(1), None, D(1))),
    ("fraction", (D(1), D(1), D(0))),
    ("fraction", (D(1), D(1), D("1.5"))),
])
def test_exit_amount_rejects_bad_inputs(field, args):
    with pytest.raises(InvalidPositionData) as err:
        exit_amount_usdt(*args)
    assert err.value.field == field
