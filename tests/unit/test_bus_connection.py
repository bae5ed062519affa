"""reconnect_delay and the pika → msd error translation (no broker needed)."""
import random

import pika.exceptions
import pytest

from msd.bus.connection import errors, reconnect_delay
from msd.errors import BrokerUnavailable


def test_delay_grows_exponentially_within_jitter_bounds():
    rng = random.Random(7)
    for attempt in range(6):
        step = 0.2 * 2 ** attempt
        for _ in range(50):
            assert step / 2 <= reconnect_delay(attempt, rng=rng) <= step


def test_delay_is_capped_even_for_huge_attempts():
    rng = random.Random(7)
    delays = [reconnect_delay(attempt, cap=10.0, rng=rng) for attempt in (20, 1100, 10**6)]
    assert all(5.0 <= d <= 10.0 for d in delays)


def test_delay_is_jittered_and_reproducible_with_a_seeded_rng():
    first = [reconnect_delay(3, rng=random.Random(1)) for _ in range(3)]
    assert len(set(first)) == 1, "same seed must give the same delay"
    rng = random.Random(1)
    assert len({reconnect_delay(3, rng=rng) for _ in range(20)}) > 1, "no jitter"


def test_negative_attempt_is_rejected():
    with pytest.raises(ValueError):
        reconnect_delay(-1, rng=random.Random())


@pytest.mark.parametrize("exc, expected", [
    (pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"),
     "declare q: 406 PRECONDITION_FAILED - inequivalent arg"),
    (pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - closed"),
     "declare q: 320 CONNECTION_FORCED - closed"),
    (pika.exceptions.StreamLostError("Transport indicated EOF"),
     "declare q: StreamLostError: Transport indicated EOF"),
    (ConnectionResetError(104, "Connection reset by peer"),
     "declare q: ConnectionResetError: [Errno 104] Connection reset by peer"),
])
def test_errors_translates_pika_and_socket_failures_keeping_the_reason(exc, expected):
    with pytest.raises(BrokerUnavailable) as caught:
        with errors("declare q"):
            raise exc
    assert str(caught.value) == expected
    assert caught.value.__cause__ is exc


def test_errors_leaves_other_exceptions_alone():
    with pytest.raises(KeyError):
        with errors("declare q"):
            raise KeyError("not a broker problem")
