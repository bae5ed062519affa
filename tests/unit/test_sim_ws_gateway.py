"""The ws-gateway stand-in's messages: msd's parser reads them and they have the §4 shapes."""
import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from msd.bus.codecs import parse_market_event
from msd.values.messages import BookTop, Kline, TickerUpdate, Trade
from msd.sim.market import CATALOG, MarketGenerator, MarketParams
from msd.sim.ws_gateway import WsGatewayFormatter
from tests import examples

START = datetime(2025, 11, 20, 10, 0)
NOW = START.replace(tzinfo=timezone.utc) + timedelta(hours=1)
ENVELOPE_KEYS = {"event_id", "event_type", "topic", "timestamp", "received_at", "payload", "trace_id"}


def run_market(seconds: int = 150, step: float = 0.5):
    market = MarketGenerator(MarketParams(), (CATALOG["BTCUSDT"], CATALOG["SOLUSDT"]), START, random.Random(3))
    gateway = WsGatewayFormatter(random.Random(4))
    messages = []
    for k in range(1, int(seconds / step) + 1):
        for tick in market.advance(START + timedelta(seconds=k * step)):
            messages += gateway.messages(tick)
    return messages


@pytest.fixture(scope="module")
def messages():
    return run_market()


def by_type(messages, event_type):
    return [m for m in messages if m.payload["event_type"] == event_type]


def example(event_type):
    return json.loads(examples.MARKET_EVENTS[event_type])


def test_every_message_parses_with_msds_codec(messages):
    kinds = {TickerUpdate: 0, BookTop: 0, Trade: 0, Kline: 0}
    for message in messages:
        parsed = parse_market_event(message.body, message.headers, now=NOW)
        kinds[type(parsed)] += 1
        assert parsed.asset in ("BTCUSDT", "SOLUSDT")
    assert all(count > 0 for count in kinds.values()), kinds


def test_envelope_properties_and_headers(messages):
    for message in messages:
        envelope = json.loads(message.body)
        assert set(envelope) == ENVELOPE_KEYS
        assert message.queue == "ws-gateway." + envelope["event_type"]
        assert message.persistent and message.content_type is None and message.timestamp > 0
        assert message.headers == {"event_type": envelope["event_type"], "topic": envelope["topic"],
                                   "trace_id": envelope["trace_id"]}
        assert envelope["payload"]["topic"] == envelope["topic"]
        for key in ("timestamp", "received_at"):
            assert datetime.fromisoformat(envelope[key]).tzinfo is None  # naive, no Z
        assert datetime.fromisoformat(envelope["timestamp"]).microsecond % 1000 == 0


def test_ticker_snapshot_first_then_deltas_without_type(messages):
    tickers = [json.loads(m.body)["payload"] for m in by_type(messages, "ticker")]
    btc = [p for p in tickers if p["symbol"] == "BTCUSDT"]
    assert set(btc[0]) == set(example("ticker")["payload"])
    assert all(isinstance(value, str) for value in btc[0].values())
    deltas = btc[1:]
    assert deltas and all("type" not in p and len(p) < len(btc[0]) for p in deltas)
    assert any("volume24h" not in p or "lastPrice" not in p for p in deltas)


def test_orderbook_level_one_with_type(messages):
    books = [json.loads(m.body) for m in by_type(messages, "orderbook")]
    assert {b["topic"] for b in books} == {"orderbook.1.BTCUSDT", "orderbook.1.SOLUSDT"}
    assert books[0]["payload"]["type"] == "snapshot"
    assert {b["payload"]["type"] for b in books} == {"snapshot", "delta"}
    for book in books:
        payload = book["payload"]
        assert set(payload) == set(example("orderbook")["payload"])
        assert isinstance(payload["u"], int) and isinstance(payload["seq"], int)
        for level in payload["b"] + payload["a"]:
            assert all(isinstance(text, str) for text in level)


def test_trades_and_klines_match_the_example_shapes(messages):
    trade_keys = set(example("trade")["payload"])
    for message in by_type(messages, "trade"):
        payload = json.loads(message.body)["payload"]
        assert set(payload) == trade_keys and payload["S"] in ("Buy", "Sell") and payload["BT"] is False
        assert isinstance(payload["T"], int)
    klines = [json.loads(m.body)["payload"] for m in by_type(messages, "kline")]
    assert all(set(k) == set(example("kline")["payload"]) and k["interval"] == "1" for k in klines)
    confirmed = [k for k in klines if k["confirm"]]
    # 150 s from 10:00:00 close the 10:00 and 10:01 bars of both assets.
    assert sorted({k["start"] for k in confirmed}) == [1763632800000, 1763632860000]
    assert all(k["end"] - k["start"] == 59999 for k in klines)
