"""ConfirmingPublisher (pipelined confirms, its own I/O thread) against a real RabbitMQ."""
import time

import pytest

from msd.bus.publisher import ConfirmingPublisher
from msd.bus.topology import QueueSpec
from msd.errors import BrokerUnavailable
from tests.fixtures.rabbit import amqp_url, close_vhost_connections, rabbitmqctl
from tests.integration.bus_helpers import UNREACHABLE_URL, message_count, raw_channel, unique_queue, wait_for
from tests.integration.tcp_relay import Relay

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(amqp_session_url):
    pub = ConfirmingPublisher(amqp_session_url, connection_name="msd-test-publisher")
    yield pub
    pub.close()


def verdicts(publisher, count, timeout=20.0):
    """The next `count` outcomes, keyed by message id (fails if they do not all come)."""
    seen, end = {}, time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < end:
        seen.update({o.message_id: o for o in publisher.poll()})
        time.sleep(0.005)
    assert len(seen) == count, f"{len(seen)} of {count} verdicts: {seen}"
    return seen


def send(publisher, queue, message_id, body=b"{}"):
    publisher.send(queue, body, headers={"trace_id": f"trace-{message_id}"}, message_id=message_id)


def test_confirmed_publish_lands_persistent_with_trace_header(amqp_session_url, publisher):
    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))

    send(publisher, queue, "s-1", b'{"signal_id": "s-1"}')
    assert verdicts(publisher, 1)["s-1"].status == "confirmed"

    with raw_channel(amqp_session_url) as channel:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, "the confirmed message is not in the queue"
    assert body == b'{"signal_id": "s-1"}'
    assert properties.delivery_mode == 2
    assert properties.headers == {"trace_id": "trace-s-1"}
    assert properties.message_id == "s-1"
    assert properties.content_type == "application/json"


def test_unroutable_publish_is_refused_and_publisher_stays_usable(amqp_session_url, publisher):
    missing = unique_queue("nobody.listens")
    send(publisher, missing, "m-1")
    refused = verdicts(publisher, 1)["m-1"]
    assert refused.status == "refused" and "unroutable" in refused.reason and missing in refused.reason

    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))
    send(publisher, queue, "m-2")
    assert verdicts(publisher, 1)["m-2"].status == "confirmed"
    assert message_count(amqp_session_url, queue) == 1


def test_failed_passive_ensure_queue_does_not_break_the_publisher(amqp_session_url, publisher):
    missing = unique_queue("ws-gateway.ticker")
    with pytest.raises(BrokerUnavailable) as caught:
        publisher.ensure_queue(QueueSpec(missing, "passive"))
    assert "NOT_FOUND" in str(caught.value)

    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))
    send(publisher, queue, "m-3")
    assert verdicts(publisher, 1)["m-3"].status == "confirmed"
    assert message_count(amqp_session_url, queue) == 1


def test_publisher_reconnects_after_server_side_close(fresh_vhost):
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    states = []
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher",
                                    on_state=lambda ok, reason: states.append(ok))
    try:
        publisher.ensure_queue(QueueSpec(queue, "durable"))
        send(publisher, queue, "1")
        assert verdicts(publisher, 1)["1"].status == "confirmed"
        assert close_vhost_connections(fresh_vhost) == 1
        wait_for(lambda: publisher.poll() == [] and states[-1:] == [True] and False in states,
                 "the loss reported and a new channel open", timeout=20)

        send(publisher, queue, "2")
        assert verdicts(publisher, 1)["2"].status == "confirmed"
    finally:
        publisher.close()
    assert message_count(url, queue) == 2


def test_unreachable_broker_refuses_what_waited_for_each_attempt():
    publisher = ConfirmingPublisher(UNREACHABLE_URL)
    try:
        send(publisher, "q", "m")           # held while the first attempt runs, then refused
        refused = verdicts(publisher, 1)["m"]
        assert refused.status == "refused" and "127.0.0.1:1" in refused.reason
        assert not publisher.ready
        send(publisher, "q", "n")           # brings the next attempt forward; refused when it fails
        assert verdicts(publisher, 1)["n"].status == "refused"
        with pytest.raises(BrokerUnavailable, match="127.0.0.1:1"):
            publisher.ensure_queue(QueueSpec("q", "durable"))
    finally:
        publisher.close()


def test_a_send_while_the_broker_is_down_goes_out_once_it_is_back(fresh_vhost):
    """A send during an outage waits for the next connection attempt, brought forward from the
    backoff, as a blocking publish used to connect on demand."""
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    with raw_channel(url) as channel:
        channel.queue_declare(queue, durable=True)
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher")
    try:
        publisher.ensure_queue(QueueSpec(queue, "durable"))
        rabbitmqctl("clear_permissions", "-p", fresh_vhost, "guest")
        close_vhost_connections(fresh_vhost)
        for n in range(8):                  # attempts fail: the backoff grows past a few seconds
            send(publisher, queue, f"down-{n}")
            assert verdicts(publisher, 1)[f"down-{n}"].status == "refused"
        rabbitmqctl("set_permissions", "-p", fresh_vhost, "guest", ".*", ".*", ".*")
        send(publisher, queue, "back")
        assert verdicts(publisher, 1, timeout=5)["back"].status == "confirmed"
    finally:
        publisher.close()
    assert message_count(url, queue) == 1


def test_a_publish_the_broker_refuses_is_refused_not_unconfirmed(fresh_vhost):
    """Only a publish whose fate is unknown is unconfirmed (the outbox warns that it may go out
    twice); the broker closing the channel in reply to the one publish outstanding on it (here:
    no write permission) proves it was not routed."""
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    with raw_channel(url) as channel:
        channel.queue_declare(queue, durable=True)
    rabbitmqctl("set_permissions", "-p", fresh_vhost, "guest", ".*", "^$", ".*")
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher")
    try:
        send(publisher, queue, "m-1")
        refused = verdicts(publisher, 1)["m-1"]
        assert refused.status == "refused" and "ACCESS_REFUSED" in refused.reason
    finally:
        publisher.close()
    assert message_count(url, queue) == 0


def test_several_publishes_are_in_flight_at_once_and_all_confirmed(fresh_vhost):
    """Pipelined confirms: with the broker's replies held back, five messages are routed while
    not one confirm has reached the publisher; once the replies flow, all five are confirmed."""
    direct, relay = amqp_url(fresh_vhost), Relay()
    queue = unique_queue("model-service.trading_signals")
    publisher = ConfirmingPublisher(relay.url(fresh_vhost), connection_name="msd-test-publisher")
    try:
        publisher.ensure_queue(QueueSpec(queue, "durable"))
        relay.pause()
        for n in range(5):
            send(publisher, queue, f"m-{n}")
        wait_for(lambda: message_count(direct, queue) == 5, "five messages routed", timeout=20)
        assert publisher.poll() == []
        relay.resume()
        assert {o.status for o in verdicts(publisher, 5).values()} == {"confirmed"}
    finally:
        publisher.close()
        relay.close()


def test_a_connection_lost_with_confirms_outstanding_leaves_exactly_those_unconfirmed(fresh_vhost):
    direct, relay = amqp_url(fresh_vhost), Relay()
    queue = unique_queue("model-service.trading_signals")
    publisher = ConfirmingPublisher(relay.url(fresh_vhost), connection_name="msd-test-publisher")
    try:
        publisher.ensure_queue(QueueSpec(queue, "durable"))
        send(publisher, queue, "confirmed")
        assert verdicts(publisher, 1)["confirmed"].status == "confirmed"
        relay.hold()                        # the broker's confirms are dropped from now on
        send(publisher, queue, "lost-1")
        send(publisher, queue, "lost-2")
        wait_for(lambda: message_count(direct, queue) == 3, "both routed", timeout=20)
        relay.cut()
        lost = verdicts(publisher, 2)
        assert {sid: o.status for sid, o in lost.items()} == {"lost-1": "unconfirmed", "lost-2": "unconfirmed"}
        assert "connection lost before the confirm" in lost["lost-1"].reason
        assert publisher.poll() == []
        send(publisher, queue, "after")     # the I/O thread reconnected on its own
        assert verdicts(publisher, 1)["after"].status == "confirmed"
    finally:
        publisher.close()
        relay.close()


def test_a_publish_the_broker_nacks_is_refused(fresh_vhost):
    """A queue full with overflow reject-publish nacks what it cannot take: refused, the others
    confirmed, the channel usable."""
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    with raw_channel(url) as channel:
        channel.queue_declare(queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher")
    try:
        for n in range(3):
            send(publisher, queue, f"m-{n}")
        seen = verdicts(publisher, 3)
        assert seen["m-0"].status == "confirmed"
        assert [seen[f"m-{n}"].status for n in (1, 2)] == ["refused", "refused"]
        assert "nacked" in seen["m-1"].reason
        with raw_channel(url) as channel:
            channel.queue_purge(queue)
        send(publisher, queue, "m-3")
        assert verdicts(publisher, 1)["m-3"].status == "confirmed"
    finally:
        publisher.close()
