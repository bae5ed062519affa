"""Conflicts between strategies: suppress_later (default) and allow."""
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from msd.strategies.conflicts import ConflictPolicy, ConflictWindow, check

T0 = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
WINDOW = timedelta(seconds=60)
SUPPRESS, ALLOW = ConflictPolicy.SUPPRESS_LATER, ConflictPolicy.ALLOW


def replay(policy, signals):
    """signals: (seconds, asset, strategy, side); returns the reason per signal (None = allowed)."""
    state, reasons = ConflictWindow(), []
    for seconds, asset, strategy, side in signals:
        allowed, reason, state = check(state, asset, strategy, side,
                                       T0 + timedelta(seconds=seconds), WINDOW, policy)
        assert allowed is (reason is None)
        reasons.append(reason)
    return reasons


@pytest.mark.parametrize("policy, signals, expected", [
    # opposing sides from different strategies within the window: the later one is suppressed
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (30, "BTCUSDT", "b", "sell")], [None, "conflict:a"]),
    # window boundary is inclusive; just past it there is no conflict
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (60, "BTCUSDT", "b", "sell")], [None, "conflict:a"]),
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (60.001, "BTCUSDT", "b", "sell")], [None, None]),
    # same side, other asset, or the same strategy reversing itself: no conflict
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (1, "BTCUSDT", "b", "buy")], [None, None]),
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (1, "ETHUSDT", "b", "sell")], [None, None]),
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (1, "BTCUSDT", "a", "sell")], [None, None]),
    # a suppressed signal is not recorded, so it cannot block the first side later
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (1, "BTCUSDT", "b", "sell"), (2, "BTCUSDT", "c", "buy")],
     [None, "conflict:a", None]),
    # the reason names the most recent opposing strategy
    (SUPPRESS, [(0, "BTCUSDT", "a", "buy"), (5, "BTCUSDT", "c", "buy"), (9, "BTCUSDT", "b", "sell")],
     [None, None, "conflict:c"]),
    (ALLOW, [(0, "BTCUSDT", "a", "buy"), (30, "BTCUSDT", "b", "sell")], [None, None]),
])
def test_conflict_policies(policy, signals, expected):
    assert replay(policy, signals) == expected


def test_signals_allowed_under_allow_count_after_switching_to_suppress():
    _, _, state = check(ConflictWindow(), "BTCUSDT", "a", "buy", T0, WINDOW, ALLOW)
    allowed, reason, _ = check(state, "BTCUSDT", "b", "sell", T0 + timedelta(seconds=1), WINDOW,
                               SUPPRESS)
    assert (allowed, reason) == (False, "conflict:a")


def test_old_entries_are_pruned():
    state = ConflictWindow()
    for minute in range(100):
        _, _, state = check(state, "BTCUSDT", "a", "buy", T0 + timedelta(minutes=minute), WINDOW)
    assert len(state.recent) <= 2


def plain_rule(history, asset, strategy, side, now, policy):
    """The rule as the spec states it, over every signal recorded so far (the reference)."""
    if policy is SUPPRESS:
        for at, a, s, d in reversed(history):
            if a == asset and d != side and s != strategy and now - at <= WINDOW:
                return f"conflict:{s}"
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["BTCUSDT", "ETHUSDT"]), st.sampled_from("abcd"),
                          st.sampled_from(["buy", "sell"]), st.sampled_from([SUPPRESS, SUPPRESS, ALLOW])),
                max_size=80))
def test_the_compact_window_decides_as_the_rule_over_every_signal(steps):
    state, history, now = ConflictWindow(), [], T0
    for seconds, asset, strategy, side, policy in steps:
        now += timedelta(seconds=seconds)      # time moves forward (0 s: several in one turn)
        expected = plain_rule(history, asset, strategy, side, now, policy)
        allowed, reason, state = check(state, asset, strategy, side, now, WINDOW, policy)
        assert reason == expected
        if allowed:
            history.append((now, asset, strategy, side))


def test_conflict_check_scanned_and_copied_every_signal_of_the_window():
    """Regression (issue 13): the window kept every signal of the last 60 s and each check
    filtered, scanned and copied all of them (12,000 at 200 signals/s: a quarter of the
    signaller's time). One entry per (asset, side, strategy) is kept."""
    state = ConflictWindow()
    for n in range(5000):
        _, _, state = check(state, "BTCUSDT", "abc"[n % 3], "buy", T0 + timedelta(milliseconds=5 * n), WINDOW)
    assert len(state.recent) == 3
