"""msd.strategies.in_flight: which of msd's own signals still count toward exposure, and which
the exposure read must look up in `orders` (all young ones, older ones once per recheck)."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from msd.strategies.in_flight import InFlightSignal, InFlightSignals

T0 = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(n: int, seconds: float, amount: str = "10", asset: str = "BTCUSDT") -> InFlightSignal:
    return InFlightSignal(f"s{n}", asset, D(amount), at(seconds))


def tracker(*signals: InFlightSignal) -> InFlightSignals:
    kept = InFlightSignals(window_s=120, young_s=0.5, recheck_s=1.0)
    kept.seed(signals)
    return kept


def test_buys_count_positive_sells_negative_per_asset():
    kept = tracker(signal(1, 0, "10"), signal(2, 0, "-4"), signal(3, 0, "7", asset="ETHUSDT"))
    assert kept.total("BTCUSDT") == D(6) and kept.total("ETHUSDT") == D(7) and kept.total("SOLUSDT") == D(0)


@pytest.mark.parametrize("read_at, counted", [
    (119.999, D(10)),       # decided 119.999 s before: still in flight
    (120.0, D(0)),          # window's end: order-manager never took it, it no longer counts
    (500.0, D(0)),
    (-30.0, D(10)),         # the clock stepped back: a signal dated later stays
])
def test_a_signal_counts_for_the_window_after_its_decision(read_at, counted):
    kept = tracker(signal(1, 0))
    kept.to_check("BTCUSDT", at(read_at))
    assert kept.total("BTCUSDT") == counted


def test_an_ordered_or_expired_signal_no_longer_counts_and_is_not_looked_up_again():
    kept = tracker(signal(1, 0, "10"), signal(2, 0, "5"))
    assert kept.to_check("BTCUSDT", at(0.1)) == ["s2", "s1"]
    kept.settle("BTCUSDT", ["s1", "unknown"])
    assert kept.total("BTCUSDT") == D(5)
    assert kept.to_check("BTCUSDT", at(0.2)) == ["s2"]


@pytest.mark.parametrize("read_at, looked_up", [
    (0.0, ["s1"]),
    (0.49, ["s1"]),         # young: every read
    (0.5, ["s1"]),          # no longer young: due once
])
def test_young_signals_are_looked_up_on_every_read(read_at, looked_up):
    assert tracker(signal(1, 0)).to_check("BTCUSDT", at(read_at)) == looked_up


def test_older_signals_are_looked_up_once_per_recheck_period():
    kept = tracker(signal(1, 0))
    assert kept.to_check("BTCUSDT", at(0.6)) == ["s1"]       # first look once it is no longer young
    assert kept.to_check("BTCUSDT", at(0.7)) == []
    assert kept.to_check("BTCUSDT", at(1.59)) == []
    assert kept.to_check("BTCUSDT", at(1.6)) == ["s1"]       # recheck_s after the last look
    assert kept.to_check("BTCUSDT", at(1.7)) == []


def test_forget_makes_it_unknown_until_seeded_again():
    kept = tracker(signal(1, 0))
    kept.forget()
    assert not kept.seeded and kept.total("BTCUSDT") == D(0)
    kept.seed([signal(2, 1, "3")])
    assert kept.seeded and kept.total("BTCUSDT") == D(3)


def test_adding_the_same_signal_twice_counts_it_once():
    kept = tracker()
    kept.add(signal(1, 0))
    kept.add(signal(1, 0))
    assert kept.total("BTCUSDT") == D(10)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "settle", "read"]), st.integers(0, 30),
                          st.integers(-5, 5), st.floats(0, 300, allow_nan=False)), max_size=60))
def test_total_is_the_sum_of_what_is_kept_and_every_kept_signal_is_looked_up_within_a_recheck(steps):
    """Against the rule stated plainly: whatever the sequence of adds, settles and reads."""
    kept, now, last_look = tracker(), at(0), {}
    for op, n, amount, dt in steps:
        now = max(now, at(dt))      # reads move forward (the daemon's clock, barring steps back)
        if op == "add":
            kept.add(InFlightSignal(f"s{n}", "BTCUSDT", D(amount), now))
        elif op == "settle":
            kept.settle("BTCUSDT", [f"s{n}"])
        else:
            for signal_id in kept.to_check("BTCUSDT", now):
                last_look[signal_id] = now
            for signal_id, s in kept.by_asset.get("BTCUSDT", {}).items():
                assert now - s.decided_at < timedelta(seconds=120)
                assert now - last_look[signal_id] <= timedelta(seconds=1.0)
        remaining = kept.by_asset.get("BTCUSDT", {})
        assert kept.total("BTCUSDT") == sum((s.signed_amount for s in remaining.values()), D(0))
