"""The candle feature profile of MarketState on bars longer than a minute (a backtest on
5-minute candles): volatility from 5-minute returns scaled to a minute, the 1-minute return as
the newest bar's return x 1/5, 5m and 15m returns exact, the hour mean on half an hour's bars."""
import math
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from msd.market.state import MarketState
from tests.unit.test_market_state import MAX_AGE, T0, kline, snapshot, ticker

FIVE = timedelta(minutes=5)
CLOSES = [100.0, 101.0, 99.5, 100.2, 102.0, 101.1, 100.4, 103.0, 102.2, 101.5, 104.0, 103.3, 102.9, 104.4]


def five_minute_state(closes=CLOSES) -> MarketState:
    market = MarketState(bar_length=FIVE)
    for i, close in enumerate(closes):
        k = kline(5 * i, close, stamp=T0 + (i + 1) * FIVE)
        market.apply(k)
    market.apply(ticker(len(closes) * 300, last_price=Decimal(str(closes[-1]))))
    return market


def test_five_minute_bars_give_the_stated_profile():
    market = five_minute_state()
    snap = snapshot(market, len(CLOSES) * 300)
    logs = np.log(np.array(CLOSES[1:]) / np.array(CLOSES[:-1]))
    in_hour = logs[-12:]                       # the 12 returns whose later bar closed within the hour
    assert snap.volatility == pytest.approx(float(np.std(in_hour)) / math.sqrt(5))
    assert snap.returns["1m"] == pytest.approx(math.log(CLOSES[-1] / CLOSES[-2]) / 5)
    assert snap.returns["5m"] == pytest.approx(math.log(CLOSES[-1] / CLOSES[-2]))
    assert snap.returns["15m"] == pytest.approx(math.log(CLOSES[-1] / CLOSES[-4]))
    assert snap.sma_60m == pytest.approx(float(np.mean(CLOSES[-12:])))


def test_a_lookback_that_is_not_whole_bars_is_absent():
    market = MarketState(bar_length=timedelta(minutes=10))
    for i, close in enumerate(CLOSES):
        market.apply(kline(10 * i, close, stamp=T0 + timedelta(minutes=10 * (i + 1))))
    market.apply(ticker(len(CLOSES) * 600, last_price=Decimal("100")))
    snap = market.snapshot("BTCUSDT", T0 + timedelta(minutes=10 * len(CLOSES)), MAX_AGE)
    assert snap.returns["15m"] is None
    assert snap.returns["5m"] == pytest.approx(math.log(CLOSES[-1] / CLOSES[-2]) / 2)


def test_a_stale_five_minute_bar_quotes_no_returns():
    market = five_minute_state()
    late = market.snapshot("BTCUSDT", T0 + len(CLOSES) * FIVE + timedelta(minutes=3), 600)
    assert all(v is None for v in late.returns.values())


def test_bar_length_is_checked():
    with pytest.raises(ValueError, match="bar_length"):
        MarketState(bar_length=timedelta(seconds=90))
