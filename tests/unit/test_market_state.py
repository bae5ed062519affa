"""Market state: merging ws-gateway updates and the snapshot strategies decide on."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import numpy as np
import pytest

from msd.values.messages import BookTop, Kline, TickerUpdate, Trade
from msd.market.state import MarketSnapshot, MarketState, Unavailable

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
MAX_AGE = 30.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ticker(seconds, asset="BTCUSDT", **fields):
    return TickerUpdate(asset=asset, timestamp=at(seconds), **fields)


def book(seconds, bid, ask, bid_size="1", ask_size="2", snapshot=True, asset="BTCUSDT"):
    return BookTop(asset=asset, timestamp=at(seconds), bid=None if bid is None else D(bid),
                   bid_size=None if bid is None else D(bid_size),
                   ask=None if ask is None else D(ask),
                   ask_size=None if ask is None else D(ask_size), is_snapshot=snapshot)


def trade(seconds, price, quantity="0.5", asset="BTCUSDT"):
    return Trade(asset=asset, timestamp=at(seconds), price=D(price), quantity=D(quantity),
                 side="buy", trade_id=f"t{seconds}")


def kline(minute, close, confirmed=True, stamp=None, asset="BTCUSDT"):
    start = T0 + timedelta(minutes=minute)
    stamp = stamp if stamp is not None else start + timedelta(seconds=59)
    c = D(str(close))
    return Kline(asset=asset, start=start, open=c, high=c, low=c, close=c, volume=D("1"),
                 turnover=D("1"), confirmed=confirmed, timestamp=stamp)


def state_with(*updates) -> MarketState:
    market = MarketState()
    for update in updates:
        market.apply(update)
    return market


def snapshot(market, seconds, asset="BTCUSDT") -> MarketSnapshot:
    result = market.snapshot(asset, at(seconds), MAX_AGE)
    assert isinstance(result, MarketSnapshot), result
    return result


def test_ticker_delta_keeps_fields_it_does_not_carry():
    market = state_with(
        ticker(0, last_price=D("100"), bid=D("99"), ask=D("101"), bid_size=D("3"),
               ask_size=D("4"), volume_24h=D("1000")),
        ticker(1, last_price=D("102")),
        ticker(2, ask=D("103")),
    )
    snap = snapshot(market, 2)
    assert (snap.price, snap.bid, snap.ask, snap.volume_24h) == (D("102"), D("99"), D("103"), D("1000"))
    assert snap.orderbook_depth == {"bid_depth": D("3"), "ask_depth": D("4")}


@pytest.mark.parametrize("bid, ask, expected_mid, expected_spread_pct", [
    ("99", "101", D("100"), D("2")),
    ("95010.10", "95010.20", D("95010.15"), D("0.10") / D("95010.15") * 100),
    ("100", "100", D("100"), D("0")),
])
def test_mid_and_spread_in_percent_of_mid(bid, ask, expected_mid, expected_spread_pct):
    snap = snapshot(state_with(book(0, bid, ask)), 0)
    assert snap.mid == expected_mid
    assert snap.spread_pct == expected_spread_pct


@pytest.mark.parametrize("updates, expected_price", [
    ([book(0, "99", "101")], D("100")),                                    # no trade: mid
    ([book(0, "99", "101"), trade(1, "100.5")], D("100.5")),               # last trade
    ([trade(1, "100.5"), ticker(2, last_price=D("100.7"))], D("100.7")),   # newer ticker wins
    ([ticker(2, last_price=D("100.7")), trade(1, "100.5")], D("100.7")),   # late older trade ignored
])
def test_price_is_newest_last_price_else_mid(updates, expected_price):
    assert snapshot(state_with(*updates), 2).price == expected_price


@pytest.mark.parametrize("updates, reason", [
    ([], "no_data"),
    ([ticker(0, volume_24h=D("5"))], "no_price"),
    ([book(0, None, "101")], "no_price"),
    ([book(0, "102", "101")], "crossed_book"),
    ([trade(0, "100"), book(0, "99", "101")], "stale"),   # read at 31 s, limit 30 s
])
def test_unavailable_reasons(updates, reason):
    market = state_with(*updates)
    seconds = 31 if reason == "stale" else 0
    assert market.snapshot("BTCUSDT", at(seconds), MAX_AGE) == Unavailable("BTCUSDT", reason)


def test_stale_asset_does_not_affect_a_fresh_one():
    market = state_with(trade(0, "100", asset="BTCUSDT"), trade(0, "3000", asset="ETHUSDT"),
                        trade(40, "3001", asset="ETHUSDT"))
    assert market.snapshot("BTCUSDT", at(45), MAX_AGE) == Unavailable("BTCUSDT", "stale")
    eth = market.snapshot("ETHUSDT", at(45), MAX_AGE)
    assert isinstance(eth, MarketSnapshot) and eth.price == D("3001") and eth.age_seconds == 5


def test_age_is_since_newest_update_of_any_stream():
    market = state_with(trade(0, "100"), book(10, "99", "101"))
    assert snapshot(market, 25).age_seconds == 15


def test_book_delta_changes_only_sides_it_carries_and_snapshot_replaces():
    market = state_with(book(0, "99", "101"), book(1, "99.5", None, snapshot=False))
    snap = snapshot(market, 1)
    assert (snap.bid, snap.ask) == (D("99.5"), D("101"))
    market.apply(book(2, None, "100.5", snapshot=True))
    assert market.snapshot("BTCUSDT", at(2), MAX_AGE) == Unavailable("BTCUSDT", "no_price")


def closes_for(n, start=100.0, seed=7):
    rng = np.random.default_rng(seed)
    return [round(c, 2) for c in start * np.exp(np.cumsum(rng.normal(0, 0.001, n)))]


def test_volatility_equals_numpy_std_of_one_minute_log_returns():
    closes = closes_for(61)
    market = state_with(*(kline(m, c) for m, c in enumerate(closes)), trade(61 * 60, "100"))
    expected = float(np.std(np.diff(np.log(np.array(closes, dtype=float)))))
    assert snapshot(market, 61 * 60).volatility == pytest.approx(expected, rel=1e-12)


def test_volatility_uses_only_the_last_hour_and_skips_the_forming_bar():
    closes = closes_for(90)
    updates = [kline(m, c) for m, c in enumerate(closes)]
    updates.append(kline(90, 250.0, confirmed=False))     # still forming: excluded
    market = state_with(*updates, trade(90 * 60 + 10, "100"))
    last_hour = np.array(closes[-61:], dtype=float)
    expected = float(np.std(np.diff(np.log(last_hour))))
    assert snapshot(market, 90 * 60 + 10).volatility == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bars, expected_none", [
    (2, True),      # one return only
    (3, False),
])
def test_volatility_needs_three_bars(bars, expected_none):
    market = state_with(*(kline(m, 100 + m) for m in range(bars)), trade(bars * 60, "100"))
    assert (snapshot(market, bars * 60).volatility is None) is expected_none


def test_kline_update_for_same_minute_replaces_and_history_is_bounded():
    market = state_with(kline(0, 100, confirmed=False, stamp=at(10)), kline(0, 101, stamp=at(59)),
                        kline(0, 99, confirmed=False, stamp=at(30)))   # late, older: ignored
    assert market.asset_state("BTCUSDT").bars[T0].close == D("101")
    for minute in range(1, 200):
        market.apply(kline(minute, 100))
    assert len(market.asset_state("BTCUSDT").bars) == 64


def test_returns_from_bars_and_wire_form():
    closes = {m: 100 + m for m in range(20)}
    market = state_with(*(kline(m, c) for m, c in closes.items()),
                        book(20 * 60, "118", "120", bid_size="1.5", ask_size="2.5"),
                        ticker(20 * 60, volume_24h=D("12.5"), last_price=D("119.5")))
    snap = snapshot(market, 20 * 60)
    assert snap.returns["1m"] == pytest.approx(np.log(119 / 118))
    assert snap.returns["5m"] == pytest.approx(np.log(119 / 114))
    assert snap.returns["15m"] == pytest.approx(np.log(119 / 104))
    wire = snap.to_wire()
    assert wire["price"] == 119.5 and wire["volume_24h"] == 12.5
    assert wire["spread"] == pytest.approx(2 / 119 * 100)
    assert wire["orderbook_depth"] == {"bid_depth": 1.5, "ask_depth": 2.5}
    assert wire["technical_indicators"]["mid"] == 119.0
    assert wire["technical_indicators"]["return_5m"] == pytest.approx(np.log(119 / 114))
    assert isinstance(wire["volatility"], float)


def test_returns_absent_when_bars_are_old_or_missing():
    market = state_with(kline(0, 100), kline(1, 101), trade(10 * 60, "100"))
    assert snapshot(market, 10 * 60).returns == {"1m": None, "5m": None, "15m": None}


@pytest.mark.parametrize("bars, expected", [
    (20, None),                                    # under half an hour of bars: no hourly average
    (40, sum(100 + m for m in range(40)) / 40),
    (90, sum(100 + m for m in range(30, 90)) / 60),  # only the bars that closed in the last hour
])
def test_sma_60m_is_the_mean_close_of_the_last_hour_and_reaches_the_wire(bars, expected):
    """The model's ma_deviation_z feature needs technical_indicators.sma_60m in every snapshot."""
    market = state_with(*(kline(m, 100 + m) for m in range(bars)), trade(bars * 60, "100"))
    snap = snapshot(market, bars * 60)
    assert snap.sma_60m == (pytest.approx(expected) if expected is not None else None)
    assert snap.to_wire()["technical_indicators"]["sma_60m"] == snap.sma_60m
