"""Debounce keeps the newest update of a burst; the per-asset token bucket allows a burst, then a steady rate."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import Debouncer
from msd.values.bucket import TokenBucket, full_bucket, take, would_allow

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def test_debouncer_keeps_the_latest_of_20_rapid_updates():
    deb = Debouncer(window=timedelta(milliseconds=200), max_delay=timedelta(seconds=2))
    for i in range(20):
        deb.offer("BTCUSDT/long/p1", {"seq": i}, T0 + i * 5 * MS)
    last = T0 + 19 * 5 * MS
    assert deb.due(last + 199 * MS) == []
    assert deb.due(last + 200 * MS) == [{"seq": 19}]
    assert len(deb) == 0 and deb.due(last + timedelta(seconds=10)) == []


def test_debouncer_max_delay_releases_a_never_quiet_key_with_its_newest_item():
    deb = Debouncer(window=timedelta(milliseconds=100), max_delay=timedelta(milliseconds=500))
    released = []
    for i in range(100):  # an update every 50 ms: never 100 ms of quiet
        now = T0 + i * 50 * MS
        deb.offer("k", i, now)
        released += deb.due(now)
    # Each burst starts at the first item after a release and lasts 500 ms (10 updates); what is
    # released is always the newest item offered so far, and the tail is not lost on flush.
    assert released[:3] == [10, 21, 32]
    assert released + deb.flush() == list(range(10, 100, 11)) + [99]


def test_debouncer_keys_are_independent_and_released_in_burst_order():
    deb = Debouncer(window=timedelta(milliseconds=100), max_delay=timedelta(seconds=1))
    deb.offer("b", "b1", T0)
    deb.offer("a", "a1", T0 + 10 * MS)
    deb.offer("b", "b2", T0 + 20 * MS)
    assert deb.next_due_at() == T0 + 110 * MS
    assert deb.due(T0 + 110 * MS) == ["a1"]
    assert deb.due(T0 + 120 * MS) == ["b2"]


def test_debouncer_zero_window_releases_on_next_due():
    deb = Debouncer(window=timedelta(0), max_delay=timedelta(0))
    deb.offer("k", 1, T0)
    deb.offer("k", 2, T0)
    assert deb.due(T0) == [2] and deb.next_due_at() is None


@pytest.mark.parametrize("window, max_delay", [(timedelta(seconds=-1), timedelta(0)),
                                                (timedelta(seconds=2), timedelta(seconds=1))])
def test_debouncer_validates(window, max_delay):
    with pytest.raises(ValueError):
        Debouncer(window, max_delay)


def test_asset_rate_limit_burst_then_steady():
    """The exits' per-asset bucket is the one token bucket (msd.values.bucket)."""
    params = TokenBucket(rate_per_s=D("0.5"), burst=3)
    state = full_bucket(params)
    allowed = []
    for _ in range(5):  # five signals at the same instant: the burst of 3 passes
        ok, state = take(params, state, T0)
        allowed.append(ok)
    assert allowed == [True, True, True, False, False]
    # Steady: one token per 2 s.
    assert take(params, state, T0 + timedelta(milliseconds=1999))[0] is False
    ok, state = take(params, state, T0 + timedelta(seconds=2))
    assert ok and not would_allow(params, state, T0 + timedelta(seconds=2))
    steady = [take(params, state, T0 + timedelta(seconds=2 + s))[0] for s in (1, 2)]
    assert steady == [False, True]


def test_asset_rate_limit_refills_only_up_to_burst():
    params = TokenBucket(rate_per_s=D(1), burst=2)
    state = full_bucket(params)
    _, state = take(params, state, T0)
    _, state = take(params, state, T0)
    later = T0 + timedelta(hours=1)
    results = []
    for _ in range(3):
        ok, state = take(params, state, later)
        results.append(ok)
    assert results == [True, True, False]


def test_asset_rate_limit_clock_going_back_adds_nothing():
    params = TokenBucket(rate_per_s=D(1), burst=1)
    _, state = take(params, full_bucket(params), T0)
    ok, state = take(params, state, T0 - timedelta(seconds=30))
    assert not ok and state.updated_at == T0


def test_would_allow_does_not_consume():
    params = TokenBucket(rate_per_s=D(1), burst=1)
    state = full_bucket(params)
    assert would_allow(params, state, T0) and would_allow(params, state, T0)
    assert take(params, state, T0)[0]


@pytest.mark.parametrize("kwargs", [{"rate_per_s": D(0), "burst": 1}, {"rate_per_s": D(1), "burst": 0},
                                    {"rate_per_s": "x", "burst": 1}, {"rate_per_s": D(1), "burst": True}])
def test_asset_rate_limit_validates(kwargs):
    with pytest.raises(ValueError):
        TokenBucket(**kwargs)
