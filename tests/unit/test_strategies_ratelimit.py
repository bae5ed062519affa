"""Token buckets: burst first, then the steady rate; live retune keeps earned tokens."""
from datetime import datetime, timedelta, timezone

import pytest

from msd.values.bucket import BucketState, TokenBucket, full_bucket, retune, take

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)


def run(params, state, offsets):
    """Take once at each offset (seconds from T0); return which were allowed and the state."""
    allowed = []
    for offset in offsets:
        ok, state = take(params, state, T0 + timedelta(seconds=offset))
        allowed.append(ok)
    return allowed, state


@pytest.mark.parametrize("rate, burst", [(1.0, 1), (0.5, 3), (1 / 60, 5), (10.0, 20)])
def test_burst_of_exactly_burst_then_steady_rate(rate, burst):
    params = TokenBucket(rate_per_s=rate, burst=burst)
    allowed, state = run(params, full_bucket(params), [0] * (burst + 3))
    assert allowed == [True] * burst + [False] * 3
    interval = 1 / rate
    # Exactly one token per interval afterwards, never early.
    steady, _ = run(params, state, [interval * 0.5, interval, interval * 1.5, interval * 2,
                                    interval * 2, interval * 3])
    assert steady == [False, True, False, True, False, True]


def test_refused_takes_do_not_delay_the_next_token():
    params = TokenBucket(rate_per_s=1.0, burst=1)
    allowed, _ = run(params, full_bucket(params), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert allowed == [True, False, False, False, False, True]


def test_idle_bucket_refills_only_up_to_burst():
    params = TokenBucket(rate_per_s=1.0, burst=2)
    allowed, _ = run(params, full_bucket(params), [0, 0, 1000, 1000, 1000])
    assert allowed == [True, True, True, True, False]


def test_clock_stepping_back_does_not_refill_or_crash():
    params = TokenBucket(rate_per_s=1.0, burst=1)
    allowed, _ = run(params, full_bucket(params), [10, 5, 10.5, 11])
    assert allowed == [True, False, False, True]


@pytest.mark.parametrize("tokens, new_burst, expected_tokens", [
    (5.0, 2, 2.0),      # smaller burst: clipped
    (1.5, 10, 1.5),     # larger burst: no free refill on reload
    (0.0, 3, 0.0),
])
def test_retune_keeps_tokens_clipped_to_new_burst(tokens, new_burst, expected_tokens):
    state = BucketState(tokens=tokens, updated_at=T0)
    new = retune(TokenBucket(rate_per_s=2.0, burst=new_burst), state)
    assert new == BucketState(tokens=expected_tokens, updated_at=T0)


def test_retune_then_new_rate_applies():
    old = TokenBucket(rate_per_s=0.1, burst=3)
    _, state = run(old, full_bucket(old), [0, 0, 0])
    new = TokenBucket(rate_per_s=1.0, burst=1)
    allowed, _ = run(new, retune(new, state), [0.5, 1.0, 1.5, 2.0])
    assert allowed == [False, True, False, True]


def test_unused_bucket_stays_full_across_retune():
    new = TokenBucket(rate_per_s=1.0, burst=4)
    allowed, _ = run(new, retune(new, full_bucket(TokenBucket(1.0, 2))), [0] * 5)
    assert allowed == [True] * 4 + [False]


@pytest.mark.parametrize("mapping, message", [
    ({"rate_per_s": 0, "burst": 1}, "strategies[1].rate.rate_per_s: 0 is invalid; expected a finite number > 0"),
    ({"rate_per_s": float("inf"), "burst": 1}, "strategies[1].rate.rate_per_s: inf is invalid"),
    ({"rate_per_s": "1", "burst": 1}, "strategies[1].rate.rate_per_s: '1' is invalid"),
    ({"rate_per_s": 1, "burst": 0}, "strategies[1].rate.burst: 0 is invalid; expected an integer >= 1"),
    ({"rate_per_s": 1, "burst": 2.5}, "strategies[1].rate.burst: 2.5 is invalid"),
    ({"rate_per_s": 1, "burst": True}, "strategies[1].rate.burst: True is invalid"),
    ({"rate_per_s": 1}, "strategies[1].rate.burst: missing"),
    ({"rate_per_s": 1, "burst": 1, "brust": 2}, "strategies[1].rate.brust: 2 is invalid; expected no such key"),
])
def test_bucket_validation_names_the_path(mapping, message):
    with pytest.raises(ValueError) as error:
        TokenBucket.from_mapping(mapping, "strategies[1].rate")
    assert str(error.value).startswith(message)
