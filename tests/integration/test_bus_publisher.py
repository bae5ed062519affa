"""ConfirmingPublisher against a real RabbitMQ."""
import pytest

from msd.bus.publisher import ConfirmingPublisher
from msd.bus.topology import QueueSpec
from msd.errors import BrokerUnavailable
from tests.fixtures.rabbit import amqp_url, close_vhost_connections
from tests.integration.bus_helpers import UNREACHABLE_URL, message_count, raw_channel, unique_queue

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(amqp_session_url):
    pub = ConfirmingPublisher(amqp_session_url, connection_name="msd-test-publisher")
    yield pub
    pub.close()


def test_confirmed_publish_lands_persistent_with_trace_header(amqp_session_url, publisher):
    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))

    publisher.publish(queue, b'{"signal_id": "s-1"}', headers={"trace_id": "trace-1"},
                      message_id="s-1")

    with raw_channel(amqp_session_url) as channel:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None, "the confirmed message is not in the queue"
    assert body == b'{"signal_id": "s-1"}'
    assert properties.delivery_mode == 2
    assert properties.headers == {"trace_id": "trace-1"}
    assert properties.message_id == "s-1"
    assert properties.content_type == "application/json"


def test_unroutable_publish_raises_and_publisher_stays_usable(amqp_session_url, publisher):
    missing = unique_queue("nobody.listens")
    with pytest.raises(BrokerUnavailable) as caught:
        publisher.publish(missing, b"{}", headers={}, message_id="m-1")
    assert "unroutable" in str(caught.value) and missing in str(caught.value)

    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))
    publisher.publish(queue, b"{}", headers={}, message_id="m-2")
    assert message_count(amqp_session_url, queue) == 1


def test_failed_passive_ensure_queue_does_not_break_the_publisher(amqp_session_url, publisher):
    missing = unique_queue("ws-gateway.ticker")
    with pytest.raises(BrokerUnavailable) as caught:
        publisher.ensure_queue(QueueSpec(missing, "passive"))
    assert "NOT_FOUND" in str(caught.value)

    queue = unique_queue("model-service.trading_signals")
    publisher.ensure_queue(QueueSpec(queue, "durable"))
    publisher.publish(queue, b"{}", headers={}, message_id="m-3")
    assert message_count(amqp_session_url, queue) == 1


def test_publisher_reconnects_after_server_side_close(fresh_vhost):
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher")
    try:
        publisher.ensure_queue(QueueSpec(queue, "durable"))
        publisher.publish(queue, b'{"n": 1}', headers={"trace_id": "a"}, message_id="1")
        assert close_vhost_connections(fresh_vhost) == 1

        publisher.publish(queue, b'{"n": 2}', headers={"trace_id": "b"}, message_id="2")
    finally:
        publisher.close()
    assert message_count(url, queue) == 2


def test_unreachable_broker_raises_broker_unavailable():
    publisher = ConfirmingPublisher(UNREACHABLE_URL)
    with pytest.raises(BrokerUnavailable) as caught:
        publisher.publish("q", b"{}", headers={}, message_id="m")
    assert "127.0.0.1:1" in str(caught.value)
    publisher.close()


def test_a_publish_the_broker_refuses_is_a_failure_but_not_unconfirmed(fresh_vhost):
    """Only a publish whose fate is unknown is PublishUnconfirmed (the outbox warns that it may
    go out twice); the broker closing the channel in reply to the publish (here: no write
    permission) proves it was not routed."""
    from msd.errors import PublishUnconfirmed
    from tests.fixtures.rabbit import rabbitmqctl
    url = amqp_url(fresh_vhost)
    queue = unique_queue("model-service.trading_signals")
    with raw_channel(url) as channel:
        channel.queue_declare(queue, durable=True)
    rabbitmqctl("set_permissions", "-p", fresh_vhost, "guest", ".*", "^$", ".*")
    publisher = ConfirmingPublisher(url, connection_name="msd-test-publisher")
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            publisher.publish(queue, b"{}", headers={}, message_id="m-1")
        assert not isinstance(caught.value, PublishUnconfirmed)
        assert "ACCESS_REFUSED" in str(caught.value)
    finally:
        publisher.close()
    assert message_count(url, queue) == 0
