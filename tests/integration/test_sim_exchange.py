"""The paper exchange against the real broker and database: it accepts and refuses signals as
order-manager does, and everything it publishes parses with msd's own codecs."""
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pika
import psycopg2
import pytest

from msd.bus.codecs import parse_market_event, parse_order_event, parse_position_update
from msd.sim.market import MarketParams
from msd.sim.order_manager import OrderManagerParams
from msd.sim.runner import SimConfig, run
from tests.fixtures.rabbit import amqp_url
from tests.integration.bus_helpers import raw_channel, wait_for
from tests.unit.test_sim_order_manager import MINIMAL, MODEL_BUY

pytestmark = pytest.mark.integration
SIGNALS = "model-service.trading_signals"
START = datetime.now(timezone.utc).replace(microsecond=0)
LATER = START + timedelta(days=2)       # sim time runs ahead of the wall clock


@pytest.fixture
def sim(fresh_vhost, fresh_pg_dsn):
    config = SimConfig(
        amqp_url=amqp_url(fresh_vhost), dsn=fresh_pg_dsn, assets=("BTCUSDT", "ETHUSDT"), seed=5,
        speed=120.0, tick_rate=10.0, start=START, market=MarketParams(regime="noise"),
        orders=OrderManagerParams(limit_fill_probability=1.0, limit_ttl_s=36000))
    stop, failure = threading.Event(), []

    def target():
        try:
            run(config, stop)
        except BaseException as exc:  # re-raised in the test thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        wait_for(lambda: queue_exists(config.amqp_url, SIGNALS) or failure, "the sim to declare its queues", 30)
        yield config
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failure, failure


def queue_exists(url, name):
    try:
        with raw_channel(url) as channel:
            channel.queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False


def publish(url, body, trace_id=None):
    with raw_channel(url) as channel:
        channel.confirm_delivery()
        headers = {"trace_id": trace_id} if trace_id else None
        channel.basic_publish("", SIGNALS, body if isinstance(body, bytes) else json.dumps(body).encode(),
                              pika.BasicProperties(delivery_mode=2, headers=headers), mandatory=True)


class Collector:
    """Drains a queue into a list, remembering the properties of each message."""

    def __init__(self, url, queue):
        self.url, self.queue, self.messages = url, queue, []

    def drain(self):
        with raw_channel(self.url) as channel:
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return self.messages
                self.messages.append((properties, body))


def order_events(collector, signal_id):
    parsed = [parse_order_event(body, props.headers, now=LATER) for props, body in collector.drain()]
    return [event for event in parsed if event.order.signal_id == signal_id]


def orders_of(dsn, signal_id):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT order_type, status, side FROM orders WHERE signal_id = %s", (signal_id,))
        return cur.fetchall()


def test_contract_examples_are_accepted_and_filled(sim):
    events = Collector(sim.amqp_url, "order-manager.order_events")
    publish(sim.amqp_url, MINIMAL, trace_id="trace-minimal")
    publish(sim.amqp_url, MODEL_BUY, trace_id="trace-model")
    for signal_id, order_type in ((MINIMAL["signal_id"], "Market"), (MODEL_BUY["signal_id"], "Limit")):
        wait_for(lambda: any(e.event_type == "filled" for e in order_events(events, signal_id)),
                 f"{order_type} fill of {signal_id}")
        assert orders_of(sim.dsn, signal_id) == [(order_type, "filled", "Buy")]
    (props, _), *_ = events.messages
    assert props.content_type == "application/json" and props.delivery_mode is None
    traces = {e.order.signal_id: e.trace_id for e in order_events(events, MINIMAL["signal_id"])}
    assert traces == {MINIMAL["signal_id"]: "trace-minimal"}


def test_invalid_signals_are_dropped_without_events_and_duplicates_ignored(sim):
    events = Collector(sim.amqp_url, "order-manager.order_events")
    bad = [dict(MODEL_BUY, signal_id=str(uuid.uuid4()), **change) for change in (
        {"asset": "BTC-USDT"}, {"amount": 0.001}, {"confidence": 1.5},
        {"timestamp": "2025-11-20T10:15:29+00:00Z"})]
    missing = {k: v for k, v in dict(MODEL_BUY, signal_id=str(uuid.uuid4())).items() if k != "market_data_snapshot"}
    for body in [dict(MODEL_BUY, signal_id="not-a-uuid"), *bad, missing, b"not json"]:
        publish(sim.amqp_url, body)
    publish(sim.amqp_url, MINIMAL)
    wait_for(lambda: order_events(events, MINIMAL["signal_id"]), "the valid signal's fill")
    publish(sim.amqp_url, MINIMAL)                                   # duplicate
    sentinel = dict(MINIMAL, signal_id=str(uuid.uuid4()))
    publish(sim.amqp_url, sentinel)
    wait_for(lambda: order_events(events, sentinel["signal_id"]), "the sentinel's fill")
    assert len(orders_of(sim.dsn, MINIMAL["signal_id"])) == 1
    assert len([e for e in order_events(events, MINIMAL["signal_id"])]) == 1
    for body in bad + [missing]:
        assert orders_of(sim.dsn, body["signal_id"]) == []
    signal_ids = {json.loads(b)["order"]["signal_id"] for _, b in events.messages}
    assert signal_ids == {MINIMAL["signal_id"], sentinel["signal_id"]}
    with raw_channel(sim.amqp_url) as channel:                       # nacked = dropped, not requeued
        assert channel.queue_declare(SIGNALS, passive=True).method.message_count == 0


def test_risk_limit_rejection_is_saved_and_published(sim):
    events = Collector(sim.amqp_url, "order-manager.order_events")
    big = dict(MINIMAL, signal_id=str(uuid.uuid4()), amount="5000")
    publish(sim.amqp_url, big, trace_id="trace-big")
    wait_for(lambda: order_events(events, big["signal_id"]), "the rejection")
    (event,) = order_events(events, big["signal_id"])
    assert event.event_type == "rejected" and event.trace_id == "trace-big"
    assert event.order.order_id == f"REJECTED-{big['signal_id']}" and "Risk limit" in event.rejection_reason
    assert event.strategy_id == "s1" and event.market_price == Decimal("95000")
    assert orders_of(sim.dsn, big["signal_id"]) == [("Market", "rejected", "Buy")]


def test_market_data_and_position_updates_parse(sim):
    publish(sim.amqp_url, dict(MINIMAL, signal_id=str(uuid.uuid4()), asset="ETHUSDT",
                               market_data_snapshot={"price": 3000}))
    positions = Collector(sim.amqp_url, "position-manager.position_updated")
    parsed = lambda: [parse_position_update(b, p.headers, now=LATER) for p, b in positions.drain()]  # noqa: E731
    wait_for(lambda: {u.update_source for u in parsed()} == {"order_execution", "websocket"},
             "position updates from the fill and from prices")
    updates = parsed()
    assert all(u.asset == "ETHUSDT" and u.size == Decimal("0.008") for u in updates)  # 25 USDT / 3000
    assert all(u.trace_id is None for u in updates if u.update_source == "order_execution")
    assert all(p.delivery_mode == 2 and not p.headers for p, _ in positions.messages)
    for kind in ("ticker", "orderbook", "trade", "kline"):
        messages = Collector(sim.amqp_url, f"ws-gateway.{kind}").drain()
        assert messages, kind
        for props, body in messages[:200]:
            assert props.delivery_mode == 2 and props.headers["event_type"] == kind
            parse_market_event(body, props.headers, now=LATER)
