"""Helpers for the msd.bus integration tests: raw pika access for setup/inspection, threads."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import pika

WS_GATEWAY_ARGS = {"x-message-ttl": 86400000, "x-max-length": 100000, "x-overflow": "drop-head"}
# Nothing listens here, so connecting fails at once with "connection refused".
UNREACHABLE_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def unique_queue(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


@contextmanager
def raw_channel(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel, independent of the code under test."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def publish_ids(url: str, queue: str, ids: Iterable[int]) -> None:
    """Publish {"id": i} bodies with a trace_id header, confirmed, so they are queued on return."""
    with raw_channel(url) as channel:
        channel.confirm_delivery()
        for i in ids:
            channel.basic_publish(
                "", queue, json.dumps({"id": i}).encode(),
                pika.BasicProperties(delivery_mode=2, headers={"trace_id": f"t-{i}"}),
                mandatory=True)


def message_count(url: str, queue: str) -> int:
    with raw_channel(url) as channel:
        return channel.queue_declare(queue, passive=True).method.message_count


def body_id(body: bytes) -> int:
    return json.loads(body)["id"]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until `predicate()` holds; the timeout is a liveness bound, not a speed check."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def running(run: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    """Run `run(stop)` in a thread; on exit set stop, join, and re-raise anything it raised."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:  # surfaced in the test thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name="bus-test-consumer")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "consumer did not stop after stop was set"
    if failure:
        raise failure[0]
