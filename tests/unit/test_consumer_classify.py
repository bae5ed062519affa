"""The consumer's first step: every delivery is either parsed or rejected, never raised."""
import json

import pytest

from msd.bus.consumer import Delivery
from msd.roles.consumer.main import classify
from tests import examples

KINDS = {"q.orders": "order_events", "q.ticker": "ticker"}


def delivery(body: bytes, queue="q.orders", headers=None):
    return Delivery(queue=queue, body=body, headers=headers or {}, delivery_tag=1, redelivered=False,
                    received_monotonic=0.0)


def filled_with(path, value):
    event = json.loads(examples.FILLED_EVENT)
    event[path] = value
    return json.dumps(event).encode()


@pytest.mark.parametrize("body", [
    filled_with("timestamp", "0001-01-01T00:00:00+01:00"),      # OverflowError converting to UTC
    filled_with("timestamp", "9" * 5000),                       # int() refuses > 4300 digits
])
def test_poison_message_that_crashes_a_parser_is_rejected_not_requeued_forever(body):
    """Regression: a non-InvalidMessage exception escaped the batch, which was nacked with
    requeue and came back at the head of the queue forever, blocking every valid message."""
    parsed, rejected = classify([delivery(body), delivery(examples.FILLED_EVENT)], KINDS)
    assert len(parsed) == 1 and len(rejected) == 1
    assert rejected[0].error.reason in ("parser_error", "bad_timestamp", "out_of_range")
