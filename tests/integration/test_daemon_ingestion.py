"""The consumer role through the real broker and database, with the daemon as a subprocess."""
import json
import random
import urllib.error
import urllib.request
import uuid

import pika
import psycopg2
import pytest

from tests import examples
from tests.fixtures.rabbit import amqp_url, close_vhost_connections
from tests.integration.daemon import Daemon, base_config, wait_for

pytestmark = pytest.mark.integration
ORDER_QUEUE = "order-manager.order_events"


@pytest.fixture(scope="module")
def daemon(resources, tmp_path_factory):
    dsn, vhost = resources
    tmp = tmp_path_factory.mktemp("ingest")
    d = Daemon(tmp, base_config(tmp, dsn, amqp_url(vhost)))
    d.start()
    d.wait_running("consumer")
    yield d
    d.close()


def publish(channel, queue, body: bytes, trace_id: str | None = None):
    headers = {"trace_id": trace_id} if trace_id else None
    channel.basic_publish("", queue, body, pika.BasicProperties(headers=headers, content_type="application/json"))


def query(dsn, sql, args=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def scalar(dsn, sql, args=()):
    return query(dsn, sql, args)[0][0]


def filled_event(order_id: str, quantity: str = "0.00100000") -> bytes:
    event = json.loads(examples.FILLED_EVENT)
    event["event_id"] = str(uuid.uuid4())
    event["order"].update(order_id=order_id, signal_id=str(uuid.uuid4()), id=str(uuid.uuid4()),
                          quantity=quantity, filled_quantity=quantity)
    return json.dumps(event).encode()


def test_every_contract_example_is_persisted_or_forwarded(daemon, resources, channel):
    dsn, _ = resources
    for body in examples.ORDER_EVENTS:
        publish(channel, ORDER_QUEUE, body, trace_id="t-contract")
    for body in examples.POSITION_UPDATES:
        publish(channel, "position-manager.position_updated", body)
    for kind, body in examples.MARKET_EVENTS.items():
        publish(channel, f"ws-gateway.{kind}", body)
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.order_events") == 4, 10, what="4 order events")
    executions = query(dsn, "SELECT order_id, quantity FROM msd.executions ORDER BY order_id")
    # Partial fill 0.004 of order 1c9a…; the later "filled" example reports a smaller cumulative
    # quantity (it is a different constructed order state) and so adds nothing; the cancelled
    # ETH order had 0.02 filled.
    assert [(o, str(q)) for o, q in executions] == [
        ("1c9a7e52-7c1b-4f0e-9d2a-3b4c5d6e7f80", "0.00400000"),
        ("5f0d3c2b-1a09-4e8f-b7d6-c5b4a3928170", "0.02000000")]
    bar = wait_for(lambda: query(dsn, "SELECT asset, close FROM msd.market_bars"), 10, what="kline bar")
    assert [(a, str(c)) for a, c in bar] == [("BTCUSDT", "95010.20")]
    wait_for(lambda: daemon.role("exits")["status"].get("updates") == 2, 5, what="position updates forwarded")
    wait_for(lambda: "BTCUSDT" in daemon.role("signaller")["status"].get("assets", {}), 5, what="market forwarded")
    # Redelivering the same events creates nothing new: dedup on the natural key.
    for body in examples.ORDER_EVENTS:
        publish(channel, ORDER_QUEUE, body)
    wait_for(lambda: daemon.role("consumer")["status"].get("duplicates", 0) >= 4, 10, what="duplicates counted")
    assert scalar(dsn, "SELECT count(*) FROM msd.order_events") == 4
    assert scalar(dsn, "SELECT count(*) FROM msd.executions") == 2


MALFORMED = [
    b"{not json", b"[1, 2, 3]", b'"just a string"', b"",
    json.dumps({"event_type": "filled"}).encode(),                                   # no order
    examples.FILLED_EVENT.replace(b'"0.00100000"', b'"NaN"', 1),                      # NaN quantity
    examples.FILLED_EVENT.replace(b'"signal_id": "b028389f', b'"signal_id": "zz028389f', 1),
    examples.FILLED_EVENT.replace(b'"2025-11-20T10:15:31.422890"', b'"2025-11-20T10:15:31+00:00Z"', 1),
    examples.FILLED_EVENT.replace(b'"is_dry_run": false', b'"is_dry_run": "maybe"', 1),
    "{\"\u00e9v\u00e9nement\": \"\u2603\"}".encode("utf-8"),
    b"\xff\xfe\x00garbage",
]


def test_malformed_flood_is_dead_lettered_and_valid_messages_all_processed(daemon, resources, channel):
    dsn, _ = resources
    before = daemon.role("consumer")
    dead_before = scalar(dsn, "SELECT count(*) FROM msd.dead_letters")
    rng = random.Random(7)
    valid_ids = [f"flood-{i}" for i in range(300)]
    stream = [("valid", filled_event(o)) for o in valid_ids] + \
             [("bad", MALFORMED[i % len(MALFORMED)]) for i in range(1000)]
    rng.shuffle(stream)
    for _, body in stream:
        publish(channel, ORDER_QUEUE, body, trace_id="t-flood")
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.dead_letters") - dead_before == 1000, 30,
             what="1000 dead letters")
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM msd.executions WHERE order_id LIKE 'flood-%%'") == 300,
             30, what="300 valid executions")
    after = daemon.role("consumer")
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    reasons = dict(query(dsn, "SELECT reason, count(*) FROM msd.dead_letters WHERE trace_id = 't-flood' "
                              "GROUP BY reason"))
    assert sum(reasons.values()) == 1000
    assert {"bad_json", "not_object", "missing_field", "bad_decimal", "wrong_type", "bad_timestamp"} <= set(reasons)
    stored = scalar(dsn, "SELECT payload FROM msd.dead_letters WHERE reason = 'bad_json' LIMIT 1")
    assert bytes(stored) in MALFORMED
    lines = [r for r in daemon.log_records() if r.get("message", "").startswith("invalid message dead-lettered")]
    assert lines and {"source_queue", "reason", "trace_id", "raw_payload"} <= set(lines[0])
    assert lines[0]["role"] == "consumer" and lines[0]["trace_id"] == "t-flood"


def test_server_side_connection_close_loses_and_duplicates_no_execution(daemon, resources, channel):
    dsn, vhost = resources
    order_ids = [f"drop-{i}" for i in range(4000)]
    for order_id in order_ids:
        publish(channel, ORDER_QUEUE, filled_event(order_id))
    count = "SELECT count(*) FROM msd.executions WHERE order_id LIKE 'drop-%%'"
    wait_for(lambda: scalar(dsn, count) > 0, 20, interval=0.005, what="consumption started")
    assert close_vhost_connections(vhost) >= 1
    wait_for(lambda: scalar(dsn, count) == len(order_ids), 60, what="all executions after reconnect")
    assert scalar(dsn, "SELECT count(*) FROM (SELECT order_id FROM msd.executions WHERE order_id LIKE 'drop-%%' "
                       "GROUP BY order_id HAVING count(*) > 1) d") == 0


def test_metrics_and_healthz(daemon):
    port = daemon.config["metrics"]["port"]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "msd_messages_invalid_total" in body and "msd_messages_consumed_total" in body
    # The previous test closed every connection: a link that notices late (a loaded machine)
    # makes /healthz say so after another link is back, so wait for the whole answer.
    wait_for(lambda: _health(port) == (200, {"healthy": True, "problems": []}), 20, what="healthy")


def _health(port):
    try:
        response = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
