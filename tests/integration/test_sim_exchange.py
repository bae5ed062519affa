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
from msd.sim.exchange import SimControls
from msd.sim.runner import SimConfig, run
from tests.fixtures.rabbit import amqp_url
from tests.integration.bus_helpers import raw_channel, wait_for
from tests.unit.test_sim_order_manager import MINIMAL, MODEL_BUY

pytestmark = pytest.mark.integration
SIGNALS = "model-service.trading_signals"
START = datetime.now(timezone.utc).replace(microsecond=0)
LATER = START + timedelta(days=2)       # sim time runs ahead of the wall clock


@pytest.fixture
def sim_controls():
    return SimControls()


@pytest.fixture
def sim(request, fresh_vhost, fresh_pg_dsn, sim_controls):
    path = getattr(request, "param", "order_execution")
    config = SimConfig(
        amqp_url=amqp_url(fresh_vhost), dsn=fresh_pg_dsn, assets=("BTCUSDT", "ETHUSDT"), seed=5,
        speed=120.0, tick_rate=10.0, start=START, market=MarketParams(regime="noise"),
        orders=OrderManagerParams(limit_fill_probability=1.0, limit_ttl_s=36000), position_path=path)
    stop, failure = threading.Event(), []

    def target():
        try:
            run(config, stop, sim_controls)
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


def market_order(asset, side, amount, price):
    return dict(MINIMAL, signal_id=str(uuid.uuid4()), asset=asset, signal_type=side, amount=amount,
                confidence="0.95", market_data_snapshot={"price": price})


def position_rows(dsn, asset):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("""SELECT id::text, size, average_entry_price, created_at, closed_at, version
                         FROM positions WHERE asset = %s""", (asset,))
        return cur.fetchall()


def settled(sim, signal):
    publish(sim.amqp_url, signal)
    wait_for(lambda: [s for _, s, _ in orders_of(sim.dsn, signal["signal_id"]) if s in ("filled", "cancelled")],
             f"the order of {signal['signal_id']}")
    return position_rows(sim.dsn, signal["asset"])


def test_one_row_per_asset_with_a_stable_id_and_created_at_set_once(sim):
    """CONTRACTS §3.5: the row is inserted on the asset's first fill and kept forever; close and
    reopen keep its id and created_at; going flat sets closed_at and clears the entry; a reopen
    clears closed_at and takes the fill's price; a fill across zero flips in one update."""
    [(pid, size, entry, created, closed, version)] = settled(sim, market_order("ETHUSDT", "buy", "30", "3000"))
    assert (size, closed) == (Decimal("0.01"), None) and entry is not None
    [(pid2, size, entry, created2, closed, _)] = settled(sim, market_order("ETHUSDT", "sell", "30", "3000"))
    assert (pid2, created2, size, entry) == (pid, created, 0, None) and closed is not None
    [(pid3, size, entry, created3, closed, _)] = settled(sim, market_order("ETHUSDT", "buy", "30", "3000"))
    assert (pid3, created3, size, closed) == (pid, created, Decimal("0.01"), None)


def test_a_fill_across_zero_flips_the_row_in_one_update(sim, sim_controls):
    """CONTRACTS §3.5: long 0.01, sell 0.03 -> short 0.02 in one update at the fill's price. With
    order-manager's reduceOnly (§3.6) that fill happens when position-manager lags: here it shows
    the asset flat while the exchange already holds the long, so the sell is a plain order."""
    sim_controls.position_manager_down.set()
    settled(sim, market_order("ETHUSDT", "buy", "30", "3000"))
    settled(sim, market_order("ETHUSDT", "sell", "90", "3000"))
    positions = Collector(sim.amqp_url, "position-manager.position_updated")
    positions.drain()
    sim_controls.position_manager_down.clear()
    wait_for(lambda: position_rows(sim.dsn, "ETHUSDT") and position_rows(sim.dsn, "ETHUSDT")[0][1] == Decimal("-0.02"),
             "position-manager catching up")
    sizes = [Decimal(json.loads(body)["size"]) for _, body in positions.drain()
             if json.loads(body)["update_source"] == "order_execution"]
    assert sizes == [Decimal("0.01"), Decimal("-0.02")], "no row or event with size 0 in between"


def test_quantity_follows_the_instrument_info_row_and_rounds_down(sim):
    """CONTRACTS §3.6: amount / snapshot price rounded down to min(lot_size, min_order_qty)."""
    with psycopg2.connect(sim.dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE instrument_info SET lot_size = 0.001, min_order_qty = 0.001 WHERE symbol = 'BTCUSDT'")
    signal = market_order("BTCUSDT", "buy", "291.37", "97123.4")             # 0.0029999... -> 0.002
    settled(sim, signal)
    with psycopg2.connect(sim.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT quantity FROM orders WHERE signal_id = %s", (signal["signal_id"],))
        assert cur.fetchone()[0] == Decimal("0.002")


def test_a_repeated_exit_on_a_flat_position_reverses_it_as_order_manager_does(sim):
    """CONTRACTS §3.6: reduceOnly only while position-manager shows a position to reduce; the same
    sell sent again once the position is flat is a plain order and opens a short."""
    settled(sim, market_order("ETHUSDT", "buy", "30", "3000"))
    exit_ = market_order("ETHUSDT", "sell", "30", "3000")
    [(_, size, *_)] = settled(sim, exit_)
    assert size == 0
    [(_, size, *_)] = settled(sim, dict(exit_, signal_id=str(uuid.uuid4())))
    assert size == Decimal("-0.01")
    # While position-manager shows the short, a buy for twice it is reduceOnly: capped at the short.
    [(_, size, *_)] = settled(sim, market_order("ETHUSDT", "buy", "60", "3000"))
    assert size == 0


@pytest.mark.parametrize("sim", ["websocket"], indirect=True)
def test_websocket_path_reopen_keeps_closed_at_and_a_stale_entry(sim):
    """CONTRACTS §3.5: on the websocket path closed_at is set when flat but not reset on a reopen,
    and the entry keeps its old value when the exchange sends none."""
    settled(sim, market_order("ETHUSDT", "buy", "30", "3000"))
    [(_, size, entry, _, closed, _)] = settled(sim, market_order("ETHUSDT", "sell", "30", "3000"))
    assert size == 0 and closed is not None
    [(_, size, entry_after, _, closed_after, _)] = settled(sim, market_order("ETHUSDT", "buy", "60", "3000"))
    assert (size, closed_after, entry_after) == (Decimal("0.02"), closed, entry)
