"""BatchConsumer against a real RabbitMQ: batching, ack-after-effect, redelivery, reconnects."""
import collections
import threading
import time

import pytest

from msd.bus.consumer import BatchConsumer, Delivery
from msd.bus.topology import QueueSpec
from msd.errors import DatabaseUnavailable
from tests.fixtures.rabbit import amqp_url, close_vhost_connections
from tests.integration.bus_helpers import (UNREACHABLE_URL, WS_GATEWAY_ARGS, body_id, message_count, publish_ids,
                                          raw_channel, running, unique_queue, wait_for)

pytestmark = pytest.mark.integration


class Recorder:
    """on_batch / on_state sink shared with the consumer thread."""

    def __init__(self, fail_first: int = 0, hold=None):
        self.lock = threading.Lock()
        self.batches: list[list[Delivery]] = []   # successful batches only
        self.failed: list[list[Delivery]] = []
        self.states: list[tuple[bool, str | None]] = []
        self._fail_first = fail_first
        self._hold = hold   # called with the delivery count before a batch commits

    def on_batch(self, batch: list[Delivery]) -> None:
        with self.lock:
            if len(self.failed) < self._fail_first:
                self.failed.append(batch)
                raise DatabaseUnavailable("test: database is down")
        if self._hold is not None:
            self._hold(self.delivered())
        with self.lock:
            self.batches.append(batch)

    def on_state(self, up: bool, reason: str | None) -> None:
        with self.lock:
            self.states.append((up, reason))

    def delivered(self) -> list[Delivery]:
        with self.lock:
            return [d for batch in self.batches for d in batch]

    def ids(self) -> set[int]:
        return {body_id(d.body) for d in self.delivered()}

    def down_reasons(self) -> list[str]:
        with self.lock:
            return [reason for up, reason in self.states if not up]


def consumer(url, queues, recorder, **kwargs) -> BatchConsumer:
    return BatchConsumer(url, queues, recorder.on_batch, on_state=recorder.on_state,
                         connection_name="msd-test-consumer", **kwargs)


def test_consumes_everything_in_bounded_batches_and_acks(amqp_session_url):
    orders = QueueSpec(unique_queue("order-manager.order_events"), "durable")
    ticks = QueueSpec(unique_queue("ws-gateway.ticker"), "ws_gateway")
    slow_start = threading.Event()

    def hold(done_so_far):
        # Stall the first batch so the prefetched backlog piles up behind it and must be split.
        if not slow_start.is_set():
            slow_start.set()
            time.sleep(0.3)

    with raw_channel(amqp_session_url) as channel:
        channel.queue_declare(orders.name, durable=True)
        channel.queue_declare(ticks.name, durable=True, arguments=WS_GATEWAY_ARGS)
    publish_ids(amqp_session_url, orders.name, range(0, 400))
    publish_ids(amqp_session_url, ticks.name, range(400, 500))

    recorder = Recorder(hold=hold)
    bus = consumer(amqp_session_url, [orders, ticks], recorder, prefetch=500, max_batch=50)
    with running(bus.run):
        wait_for(lambda: len(recorder.ids()) == 500, "all 500 messages")

    deliveries = recorder.delivered()
    assert recorder.states == [(True, None)]
    assert sorted(body_id(d.body) for d in deliveries) == list(range(500)), "duplicates or losses"
    assert max(len(batch) for batch in recorder.batches) == 50
    assert {d.queue for d in deliveries if body_id(d.body) < 400} == {orders.name}
    assert {d.queue for d in deliveries if body_id(d.body) >= 400} == {ticks.name}
    assert all(d.headers == {"trace_id": f"t-{body_id(d.body)}"} for d in deliveries)
    assert not any(d.redelivered for d in deliveries)
    assert message_count(amqp_session_url, orders.name) == 0
    assert message_count(amqp_session_url, ticks.name) == 0


def test_failed_batches_are_requeued_and_processed_once_on_batch_succeeds(amqp_session_url):
    queue = QueueSpec(unique_queue("position-manager.position_updated"), "durable")
    publish_ids_after_declare(amqp_session_url, queue.name, range(20))
    recorder = Recorder(fail_first=2)
    with running(consumer(amqp_session_url, [queue], recorder).run):
        wait_for(lambda: recorder.ids() == set(range(20)), "all 20 messages after the failures")

    failed_ids = {body_id(d.body) for batch in recorder.failed for d in batch}
    assert len(recorder.failed) == 2 and failed_ids
    redelivered = {body_id(d.body) for d in recorder.delivered() if d.redelivered}
    assert failed_ids <= redelivered, "a nacked message came back without redelivered=True"
    assert sorted(body_id(d.body) for d in recorder.delivered()) == list(range(20))
    # Regression: a failing on_batch (the database) was reported as the broker being down.
    assert recorder.down_reasons() == []
    assert recorder.states == [(True, None)]
    assert message_count(amqp_session_url, queue.name) == 0


def test_reconnects_by_itself_after_server_side_close(fresh_vhost):
    url = amqp_url(fresh_vhost)
    queue = QueueSpec(unique_queue("order-manager.order_events"), "durable")
    publish_ids_after_declare(url, queue.name, range(2000))
    closed = threading.Event()

    def hold(done_so_far):
        # Mid-stream, keep one batch uncommitted until the server has closed the connection:
        # its ack is then lost and the broker must redeliver it.
        if len(done_so_far) >= 500 and not closed.is_set():
            closed.wait(timeout=30)

    recorder = Recorder(hold=hold)
    with running(consumer(url, [queue], recorder, max_batch=100).run):
        wait_for(lambda: len(recorder.ids()) >= 500, "the first 500 messages")
        assert close_vhost_connections(fresh_vhost) == 1
        closed.set()
        wait_for(lambda: recorder.ids() == set(range(2000)), "all 2000 messages after the close")

    assert any("CONNECTION_FORCED" in reason for reason in recorder.down_reasons())
    assert recorder.states[-1] == (True, None)
    first_seen: set[int] = set()
    duplicates = []
    for delivery in recorder.delivered():
        n = body_id(delivery.body)
        if n in first_seen:
            duplicates.append(delivery)
        first_seen.add(n)
    assert duplicates, "the batch held across the close should have been redelivered"
    assert all(d.redelivered for d in duplicates), "a duplicate arrived without redelivered=True"
    assert message_count(url, queue.name) == 0


def test_missing_passive_queue_is_reported_and_retried(amqp_session_url):
    queue = QueueSpec(unique_queue("ws-gateway.trade"), "passive")
    recorder = Recorder()
    with running(consumer(amqp_session_url, [queue], recorder).run):
        wait_for(lambda: recorder.down_reasons(), "the missing queue to be reported")
        with raw_channel(amqp_session_url) as channel:
            channel.queue_declare(queue.name, durable=True)
        publish_ids(amqp_session_url, queue.name, [7])
        wait_for(lambda: recorder.ids() == {7}, "the message once the queue exists")

    first_reason = recorder.down_reasons()[0]
    assert queue.name in first_reason and "NOT_FOUND" in first_reason
    assert recorder.states[-1] == (True, None)


def test_unreachable_broker_is_reported_and_stop_is_honoured():
    recorder = Recorder()
    ticks = []
    bus = consumer(UNREACHABLE_URL, [QueueSpec("q", "durable")], recorder,
                   on_tick=lambda: ticks.append(1))
    with running(bus.run):
        wait_for(lambda: recorder.down_reasons(), "the connection failure to be reported")
        # Liveness is proven while waiting to reconnect, not only while consuming.
        wait_for(lambda: len(ticks) >= 3, "ticks during the reconnect backoff")
    assert "127.0.0.1:1" in recorder.down_reasons()[0]
    assert all(not up for up, _ in recorder.states)


def test_ticks_while_idle(amqp_session_url):
    queue = QueueSpec(unique_queue("position-manager.position_updated"), "durable")
    recorder = Recorder()
    ticks = []
    with running(consumer(amqp_session_url, [queue], recorder, on_tick=lambda: ticks.append(1)).run):
        wait_for(lambda: recorder.states, "consumer to come up")
        seen = len(ticks)
        wait_for(lambda: len(ticks) > seen + 2, "ticks with no messages flowing")
    assert recorder.batches == []


def test_consumer_cancelled_by_queue_deletion_recovers_when_queue_returns(amqp_session_url):
    queue = QueueSpec(unique_queue("position-manager.position_updated"), "durable")
    recorder = Recorder()
    with running(consumer(amqp_session_url, [queue], recorder).run):
        wait_for(lambda: recorder.states, "consumer to come up")
        with raw_channel(amqp_session_url) as channel:
            channel.queue_delete(queue.name)
        wait_for(lambda: recorder.down_reasons(), "the cancellation to be reported")
        # A durable spec re-creates the queue on reconnect, so messages flow again.
        wait_for(lambda: recorder.states[-1] == (True, None), "consumer to come back")
        publish_ids(amqp_session_url, queue.name, [1, 2])
        wait_for(lambda: recorder.ids() == {1, 2}, "messages on the re-created queue")

    assert "cancelled" in recorder.down_reasons()[0] and queue.name in recorder.down_reasons()[0]


def publish_ids_after_declare(url, queue, ids):
    with raw_channel(url) as channel:
        channel.queue_declare(queue, durable=True)
    publish_ids(url, queue, ids)


def test_counts_are_per_message_not_per_batch(amqp_session_url):
    """Guards the ack bookkeeping: many small batches on one channel ack exactly once each."""
    queue = QueueSpec(unique_queue("order-manager.order_events"), "durable")
    publish_ids_after_declare(amqp_session_url, queue.name, range(300))
    recorder = Recorder()
    with running(consumer(amqp_session_url, [queue], recorder, prefetch=10, max_batch=3).run):
        wait_for(lambda: len(recorder.ids()) == 300, "all 300 messages")

    counts = collections.Counter(body_id(d.body) for d in recorder.delivered())
    assert set(counts.values()) == {1}
    assert max(len(batch) for batch in recorder.batches) <= 3
    assert message_count(amqp_session_url, queue.name) == 0
