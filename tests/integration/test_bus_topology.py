"""Queue declaration against a real RabbitMQ (CONTRACTS.md §0.1)."""
import pytest

from msd.bus.connection import connect
from msd.bus.topology import QueueSpec, declare
from msd.errors import BrokerUnavailable, ConfigError, MsdError
from tests.integration.bus_helpers import WS_GATEWAY_ARGS, publish_ids, raw_channel, unique_queue

pytestmark = pytest.mark.integration


@pytest.fixture
def channel(amqp_session_url):
    connection = connect(amqp_session_url, connection_name="msd-test-topology")
    yield connection.channel()
    if connection.is_open:
        connection.close()


def test_ws_gateway_declare_matches_a_queue_created_by_ws_gateway(amqp_session_url, channel):
    name = unique_queue("ws-gateway.ticker")
    with raw_channel(amqp_session_url) as ws_gateway:
        ws_gateway.queue_declare(name, durable=True, arguments=WS_GATEWAY_ARGS)

    assert declare(channel, QueueSpec(name, "ws_gateway")) == 0


def test_ws_gateway_queue_created_by_msd_is_accepted_by_ws_gateway(amqp_session_url, channel):
    name = unique_queue("ws-gateway.trade")
    declare(channel, QueueSpec(name, "ws_gateway"))

    with raw_channel(amqp_session_url) as ws_gateway:
        ok = ws_gateway.queue_declare(name, durable=True, arguments=WS_GATEWAY_ARGS)
    assert ok.method.queue == name


def test_plain_durable_declare_of_a_ws_gateway_queue_is_precondition_failed(amqp_session_url, channel):
    name = unique_queue("ws-gateway.orderbook")
    with raw_channel(amqp_session_url) as ws_gateway:
        ws_gateway.queue_declare(name, durable=True, arguments=WS_GATEWAY_ARGS)

    with pytest.raises(BrokerUnavailable) as caught:
        declare(channel, QueueSpec(name, "durable"))
    assert isinstance(caught.value, MsdError)
    assert "406" in str(caught.value) and "PRECONDITION_FAILED" in str(caught.value)
    assert name in str(caught.value)


def test_passive_declare_of_a_missing_queue_names_it(channel):
    name = unique_queue("ws-gateway.kline")
    with pytest.raises(BrokerUnavailable) as caught:
        declare(channel, QueueSpec(name, "passive"))
    assert "NOT_FOUND" in str(caught.value) and name in str(caught.value)


def test_passive_and_durable_declare_report_ready_messages(amqp_session_url, channel):
    name = unique_queue("order-manager.order_events")
    assert declare(channel, QueueSpec(name, "durable")) == 0
    publish_ids(amqp_session_url, name, range(3))

    assert declare(channel, QueueSpec(name, "passive")) == 3
    assert declare(channel, QueueSpec(name, "durable")) == 3


def test_unknown_declare_mode_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        QueueSpec("q", "exclusive")
    assert "exclusive" in str(caught.value) and "passive" in str(caught.value)
    with pytest.raises(ConfigError):
        QueueSpec("", "durable")
