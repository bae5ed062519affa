"""sift_unsent / void_reason: may a pending exit still go out, given the positions row now?

Never publish an exit that could close more than the row now shows: order-manager sends it
reduceOnly only while there is a position it reduces (CONTRACTS §3.6); otherwise it opens one
the other way.
"""
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from msd.rules import InFlight, RowFacts, Side, UnsentExit, VoidReason, sift_unsent, void_reason
from msd.rules.types import ExitReason

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
PID = "7d7f3c4e-1c52-4b1a-9f55-0f0c3d6a9e01"


def row(size, version=5, closed_at=None):
    return RowFacts(PID, "BTCUSDT", D(size), D(100), None, version, T0 + timedelta(seconds=version), closed_at)


def pending(signal_id="s1", side=Side.LONG, quantity="1"):
    return UnsentExit(signal_id, PID, side, D(quantity), T0 + timedelta(seconds=4))


def flight(signal_id="s1", quantity="1", version=4, published=False):
    return InFlight(signal_id, ExitReason.STOP_LOSS, D(quantity), version, D(2), T0 + timedelta(seconds=version),
                    T0 + timedelta(seconds=10), published=published)


@pytest.mark.parametrize("side, quantity, now, expected", [
    # The row as the exit was decided on, or grown: it goes out.
    (Side.LONG, "1", row("2"), None),
    (Side.LONG, "2", row("2"), None),                       # a full close of what is still there
    (Side.SHORT, "2", row("-3"), None),
    # Gone, flat, flipped: it would open a position the other way.
    (Side.LONG, "1", None, VoidReason.POSITION_GONE),
    (Side.LONG, "1", row("0", closed_at=T0 + timedelta(seconds=5)), VoidReason.POSITION_FLAT),
    (Side.LONG, "1", row("-2"), VoidReason.POSITION_FLIPPED),
    (Side.SHORT, "1", row("2"), VoidReason.POSITION_FLIPPED),
    # Smaller than the exit: a full close of 2 against 1.5 left would reverse 0.5.
    (Side.LONG, "2", row("1.5"), VoidReason.POSITION_SMALLER),
    (Side.SHORT, "1", row("-0.999"), VoidReason.POSITION_SMALLER),
    # Smaller than decided but the exit still fits: it only reduces.
    (Side.LONG, "1", row("1"), None),
    # Closed and reopened on the same side after the decision (websocket path: closed_at stays set).
    (Side.LONG, "1", row("3", version=7, closed_at=T0 + timedelta(seconds=6)), VoidReason.CLOSED_SINCE),
    # A closed_at from before the decision (never reset on the websocket path) is not a close since.
    (Side.LONG, "1", row("3", version=7, closed_at=T0 - timedelta(hours=1)), None),
])
def test_void_reason_against_the_row_now(side, quantity, now, expected):
    exit = pending(side=side, quantity=quantity)
    assert void_reason(exit, now, D(0), flight(quantity=quantity)) is expected
    assert void_reason(exit, now, D(0), None) is expected       # from its metadata alone: same answer


def test_a_fill_path_close_and_reopen_is_voided():
    assert void_reason(pending(), row("2", version=7), D(0), flight(), closed_between=True) is VoidReason.CLOSED_SINCE


@pytest.mark.parametrize("metadata", [None, {}, {"position_id": PID, "position_side": "long"},
                                      {"position_id": PID, "position_side": "up", "quantity": "1"},
                                      {"position_id": PID, "position_side": "long", "quantity": "-1"},
                                      {"position_id": 7, "position_side": "long", "quantity": "1"}])
def test_an_exit_whose_metadata_names_no_position_side_or_quantity_is_never_sent(metadata):
    exit = UnsentExit.from_metadata("s1", metadata)
    assert sift_unsent([exit], {PID: row("2")}, {}) == {"s1": VoidReason.UNREADABLE}


def test_metadata_is_read_as_the_signal_carries_it():
    exit = UnsentExit.from_metadata("s1", {"position_id": PID, "position_side": "short", "quantity": "0.25"})
    assert (exit.position_id, exit.side, exit.quantity) == (PID, Side.SHORT, D("0.25"))


def test_exits_of_one_position_go_out_only_while_they_fit_in_order():
    exits = [pending("a", quantity="1"), pending("b", quantity="1"), pending("c", quantity="0.5")]
    # 2 held: a and b fit, c would close 0.5 more than the row shows.
    assert sift_unsent(exits, {PID: row("2")}, {}) == {"c": VoidReason.POSITION_SMALLER}
    # A voided exit frees nothing it never closes: b voided, c still fits after a.
    exits = [pending("a", quantity="1"), pending("b", quantity="2"), pending("c", quantity="0.5")]
    assert sift_unsent(exits, {PID: row("1.5")}, {}) == {"b": VoidReason.POSITION_SMALLER}


def test_published_exits_the_row_cannot_show_yet_count_ahead():
    sent_unseen = flight("sent", quantity="1.5", version=5, published=True)     # decided on this very row
    assert sift_unsent([pending("s1")], {PID: row("2")}, {PID: (sent_unseen,)}) == {"s1": VoidReason.POSITION_SMALLER}
    # Once the row was written after it, the row may show it: what the row shows is what counts.
    assert sift_unsent([pending("s1")], {PID: row("2", version=6)}, {PID: (sent_unseen,)}) == {}
    # An exit not confirmed by the broker is pending itself, not ahead.
    unsent = flight("other", quantity="1.5", version=5, published=False)
    assert sift_unsent([pending("s1")], {PID: row("2")}, {PID: (unsent,)}) == {}


def test_a_row_that_was_not_read_is_no_answer():
    with pytest.raises(KeyError):
        sift_unsent([pending()], {}, {})
