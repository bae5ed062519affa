"""Regressions of the hostile review of issue #8's exits (one test per finding, named after the
bug), in-process against the real database and broker like test_exit_role.py, whose harness
they share."""
import time
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from msd import metrics
from tests.integration.exit_helpers import execute, mark_price, open_position, stored_state
from tests.integration.test_exit_role import backend, counter, make, trade, update  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def settle(h, turns=4, pause=0.3):
    """Turns spaced so the role's periodic work (in-flight checks every 0.25 s) runs."""
    for _ in range(turns):
        h.turn()
        time.sleep(pause)


def test_failed_positions_read_does_not_reset_the_tracked_state_and_exit_twice(make):
    """Regression (exit review 2): a positions read that failed answered "no row": the in-flight
    check took the position for gone and deleted its state, and the next good read saw a "new"
    position and sent its stop loss a second time."""
    h = make()
    pid = open_position(h.dsn, "FAILUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "FAILUSDT", "2"))
    h.until(lambda: h.exits(pid), what="the stop loss")
    h.until(lambda: h.role.book[("FAILUSDT", pid)].in_flight[0].published, what="its confirm applied and noted")
    before = h.role.book[("FAILUSDT", pid)]
    assert len(before.in_flight) == 1
    execute(h.dsn, "ALTER TABLE positions RENAME TO positions_away")
    try:
        h.queues["positions"].put(update(pid, "FAILUSDT", "2"))
        settle(h)
        h.role.verify(datetime.now(timezone.utc))
        h.turn()
        kept = h.role.book[("FAILUSDT", pid)]
        assert (kept.opened_at, kept.in_flight, kept.row) == (before.opened_at, before.in_flight, before.row)
        assert stored_state(h.dsn, pid)["in_flight"][0]["signal_id"] == before.in_flight[0].signal_id
    finally:
        execute(h.dsn, "ALTER TABLE positions_away RENAME TO positions")
    h.queues["positions"].put(update(pid, "FAILUSDT", "2"))
    settle(h)
    h.role.verify(datetime.now(timezone.utc))
    settle(h, 2)
    assert len(h.exits(pid)) == 1, "the row unchanged: the exit in flight still holds the next one"
    assert h.role.book[("FAILUSDT", pid)].opened_at == before.opened_at


def test_wrong_asset_event_cannot_update_another_assets_position(make):
    """Regression (exit review 1): the book was keyed by the event's asset, so an update naming
    AAAUSDT with the id of BBBUSDT's row built a BBB position under AAA: AAA's prices moved it and
    an AAA stop loss was sent for BBB's size. The row's asset is the key; the event only makes
    msd read the row its id names."""
    h = make()
    pid = open_position(h.dsn, "BBBUSDT", "2.00000000", "100", "100.00000000")
    invalid = counter(metrics.EXIT_INPUTS_INVALID, "event_asset_mismatch")
    h.turn()                                                    # the row is watched from the table
    h.queues["positions"].put(update(pid, "AAAUSDT", "2"))
    h.queues["exit_prices"].put(trade("AAAUSDT", "40"))
    settle(h, 3)
    assert set(h.role.book) == {("BBBUSDT", pid)} and h.exits(pid) == []
    assert counter(metrics.EXIT_INPUTS_INVALID, "event_asset_mismatch") == invalid + 1
    h.queues["exit_prices"].put(trade("BBBUSDT", "97"))
    [(_, body)] = h.until(lambda: h.exits(pid), what="BBB's own stop loss")
    assert (body["asset"], body["metadata"]["quantity"]) == ("BBBUSDT", "2")


def test_wrong_asset_event_of_an_unseen_position_is_keyed_by_the_rows_asset(make):
    h = make()
    h.turn()                                                    # restored and verified: nothing open
    pid = open_position(h.dsn, "CCCUSDT", "2.00000000", "100", "100.00000000")
    h.queues["positions"].put(update(pid, "DDDUSDT", "2"))     # first sighting, by a wrong event
    h.turn(2)
    assert set(h.role.book) == {("CCCUSDT", pid)} and h.role.book[("CCCUSDT", pid)].opened_by == "event"


@pytest.mark.parametrize("event", [{"size": "0E-8"}, {"mode": "hedge"}, {"size": "-2"}])
def test_fake_size_0_or_hedge_mode_event_does_not_reset_the_position(make, event):
    """Regression (exit review 3): an event saying 0 (or hedge, or the other side) while the row
    says open marked the position closed (or refused and dropped it); the next row write started
    a new position with a new open time and the peak (and ladder) lost. Size, side and mode come
    only from the row."""
    h = make(rules={"trailing": {"activation_pct": 5, "distance_pct": 1}})
    pid = open_position(h.dsn, "FAKEUSDT", "2.00000000", "100", "100.00000000")
    h.turn()
    h.queues["exit_prices"].put(trade("FAKEUSDT", "103"))
    h.turn()
    before = h.role.book[("FAKEUSDT", pid)]
    assert before.extreme_price == D(103)
    h.queues["positions"].put(update(pid, "FAKEUSDT", event.get("size", "2"), mode=event.get("mode", "one-way")))
    h.turn(2)
    mark_price(h.dsn, "FAKEUSDT", "103")                       # the next real write: same position
    h.queues["positions"].put(update(pid, "FAKEUSDT", "2"))
    h.turn(2)
    after = h.role.book[("FAKEUSDT", pid)]
    assert (after.opened_at, after.extreme_price, after.row.version) == (before.opened_at, D(103), 2)
    assert h.role.refused == {} and stored_state(h.dsn, pid)["opened_at"] == before.opened_at.isoformat()


def upgraded_state(asset, position_id, entry, extreme):
    """A state as sql/005 left a first-format one: no row facts, dated from the upgrade."""
    from msd.rules import ExitState, PositionKey, Side
    pnl = (D(extreme) - D(entry)) / D(entry) * 100
    return ExitState(PositionKey(asset, Side.LONG, position_id), datetime.now(timezone.utc), "upgrade",
                     D(entry), "positions_table", D(extreme), pnl).to_dict()


def add_fill(dsn, asset, side, quantity, price, when):
    import uuid
    execute(dsn, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status,
                                        filled_quantity, average_price, created_at, updated_at)
                    VALUES (%s, %s, %s, %s, 'Market', %s, 'filled', %s, %s, %s, %s)""",
            (str(uuid.uuid4()), str(uuid.uuid4()), asset, side, quantity, quantity, price, when, when))


@pytest.mark.parametrize("reopened", [True, False])
def test_upgraded_state_of_a_position_closed_and_reopened_while_down_starts_a_new_position(make, reopened):
    """Regression (exit review 7): the check for a close and reopen while msd was down read the
    fills only for states with row facts; a state upgraded from the first format (same row id,
    stored while an older position was open) kept that position's peak for the new one."""
    import psycopg2.extras
    from datetime import timedelta
    from tests.integration.exit_helpers import utc_now
    h = make(rules={"trailing": {"activation_pct": 5, "distance_pct": 1}})
    start = utc_now() - timedelta(hours=3)
    add_fill(h.dsn, "UPGUSDT", "Buy", 1, 100, start)
    if reopened:
        add_fill(h.dsn, "UPGUSDT", "SELL", 1, 120, start + timedelta(hours=1))
        add_fill(h.dsn, "UPGUSDT", "Buy", 1, 105, start + timedelta(hours=2))
    pid = open_position(h.dsn, "UPGUSDT", "1.00000000", "105" if reopened else "100", "106.00000000",
                        created_at=start)
    execute(h.dsn, "INSERT INTO msd.position_exit_state (asset, side, position_key, state) VALUES (%s, %s, %s, %s)",
            ("UPGUSDT", "long", pid, psycopg2.extras.Json(upgraded_state("UPGUSDT", pid, "100", "130"))))
    h.turn(2)
    state = h.role.book[("UPGUSDT", pid)]
    if reopened:
        assert (state.opened_by, state.extreme_price, state.entry_price) == ("table", D(106), D(105))
        assert h.exits(pid) == [], "no trailing stop from the old position's 130 peak"
    else:
        assert (state.opened_by, state.extreme_price) == ("upgrade", D(130)), "the same position keeps its peak"
        [(_, body)] = h.exits(pid)
        assert body["metadata"]["exit_reason"] == "trailing_stop"


def test_stalled_exit_is_not_re_decided_while_its_signal_is_unpublished(make):
    """Regression (exit review 4): with the broker unreachable, a stalled exit gave way to a new
    decision with a new signal_id at the next newer row while its own outbox row was still
    pending: both would have been published on recovery, the second reversing the position. The
    same decision is re-sent (by the outbox) with its own signal_id; a new one only once the first
    is published and a newer row shows nothing."""
    from msd.bus.publisher import ConfirmingPublisher
    from tests.fixtures.rabbit import amqp_url
    h = make(in_flight_timeout_s=0.3)
    h.role.outbox.publisher = ConfirmingPublisher(amqp_url("msd-no-such-vhost"), connection_name="test-down")
    pid = open_position(h.dsn, "DOWNPUBUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "DOWNPUBUSDT", "2"))
    [(first, _)] = h.until(lambda: h.exits(pid), what="the exit, recorded but not published")
    h.until(lambda: h.role.book[("DOWNPUBUSDT", pid)].in_flight[0].stalled, what="stalled")
    for _ in range(3):                                          # newer rows: marks of position-manager
        mark_price(h.dsn, "DOWNPUBUSDT", "96")
        h.queues["positions"].put(update(pid, "DOWNPUBUSDT", "2"))
        settle(h, 2)
    assert [sid for sid, _ in h.exits(pid)] == [first]
    assert execute(h.dsn, "SELECT outbox_state FROM msd.signals WHERE signal_id = %s", (first,)) == [("pending",)]
    h.role.outbox.publisher.close()
    h.role.outbox.publisher = h.publisher                       # the broker is back
    h.until(lambda: h.role.outbox.flush() >= 0 and execute(
        h.dsn, "SELECT outbox_state FROM msd.signals WHERE signal_id = %s", (first,)) == [("sent",)],
        what="the pending exit published with its own id")
    settle(h, 2)
    mark_price(h.dsn, "DOWNPUBUSDT", "96")                      # a newer row after publication: may go again
    h.queues["positions"].put(update(pid, "DOWNPUBUSDT", "2"))
    h.until(lambda: len(h.exits(pid)) == 2, what="a new decision once published")
    assert len({sid for sid, _ in h.exits(pid)}) == 2


@pytest.mark.parametrize("committed", [True, False])
def test_exit_whose_outbox_reply_was_lost_is_never_sent_again_under_a_new_signal_id(make, committed):
    """Regression (exit review 4): when the outbox write raised "connection lost", the exit was
    decided again under a new signal_id; if the write had committed (only the reply was lost) the
    first one went out from the outbox too: two full exits, the second reversing the position.
    The retry uses the same signal_id, and an exit the outbox holds after all is taken as sent."""
    from msd.roles.runtime.outbox import Submitted
    h = make()
    real_submit, lost = h.role.outbox.submit, []

    def reply_lost(signal, mode, also=None):
        if not lost:
            lost.append(signal.signal_id)
            if committed:
                real_submit(signal, mode, also=also)
            return Submitted(False, False, "PostgreSQL connection lost: server closed the connection")
        return real_submit(signal, mode, also=also)
    h.role.outbox.submit = reply_lost
    pid = open_position(h.dsn, "LOSTUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "LOSTUSDT", "2"))
    h.until(lambda: lost, what="the first attempt")
    h.queues["exit_prices"].put(trade("LOSTUSDT", "96.5"))     # evaluated again
    settle(h, 3)
    assert [sid for sid, _ in h.exits(pid)] == lost, "one exit, under the first decision's signal_id"
    state = h.role.book[("LOSTUSDT", pid)]
    assert [f.signal_id for f in state.in_flight] == lost and h.role.unsure == {}


def reject(dsn, signal_id, asset):
    execute(dsn, """INSERT INTO orders (order_id, signal_id, asset, side, order_type, quantity, status)
                    VALUES (%s, %s, %s, 'SELL', 'Market', 2, 'rejected')""", (f"REJECTED-{signal_id}", signal_id, asset))


def test_permanently_rejected_exit_backs_off_instead_of_looping(make, caplog):
    """Regression (exit review 5): each rejection allowed a new decision at once, so an exit
    order-manager always refuses was re-sent in a loop. The second refusal in a row starts a
    bounded backoff, said once (ERROR line), in a metric and a status entry (and /healthz)."""
    import logging
    h = make(rules={"stop_loss_pct": 2, "cooldown_seconds": 1})
    pid = open_position(h.dsn, "REFUSEDUSDT", "2.00000000", "100", "97.00000000")
    h.queues["positions"].put(update(pid, "REFUSEDUSDT", "2"))
    with caplog.at_level(logging.WARNING, logger="msd.exits"):
        [(first, _)] = h.until(lambda: h.exits(pid), what="the first exit")
        reject(h.dsn, first, "REFUSEDUSDT")
        h.until(lambda: len(h.exits(pid)) == 2, what="decided again at once after the first refusal")
        reject(h.dsn, h.exits(pid)[1][0], "REFUSEDUSDT")
        h.until(lambda: h.role.book[("REFUSEDUSDT", pid)].rejections == 2, what="the second refusal")
        for _ in range(6):                                      # ticks keep coming: nothing is decided
            h.queues["exit_prices"].put(trade("REFUSEDUSDT", "96"))
            settle(h, 1)
    assert len(h.exits(pid)) == 2
    assert len([r for r in caplog.records if "EXITS REFUSED" in r.getMessage()]) == 1
    status = h.status()
    assert list(status["exits_refused"]) == [f"REFUSEDUSDT {pid}"] and "exits_refused" in status["degraded"]
    assert metrics.EXITS_REFUSED_BACKOFF._value.get() == 1


def test_exit_counters_count_events_not_evaluation_turns(make):
    """Regression (exit review 12): `exits_suppressed` (and its metric) grew by one on every
    evaluation of a held exit, i.e. per tick, so "20 suppressed" meant 20 ticks of one exit in
    flight. Each counter now counts what it says: sent once per signal, a hold once per position
    and reason, a stall once per exit."""
    h = make(in_flight_timeout_s=0.3)
    pid = open_position(h.dsn, "COUNTUSDT", "2.00000000", "100", "97.00000000")
    held_before = counter(metrics.EXITS_SUPPRESSED, "in_flight")
    stalls_before, sent_before = counter(metrics.EXIT_STALLS), counter(metrics.EXIT_SIGNALS, "stop_loss")
    h.queues["positions"].put(update(pid, "COUNTUSDT", "2"))
    h.until(lambda: h.exits(pid), what="the exit")
    evaluations = h.role.stats.evaluations
    for price in ("96.9", "96.8", "96.7", "96.6", "96.5", "96.4", "96.3", "96.2"):
        h.queues["exit_prices"].put(trade("COUNTUSDT", price))
        settle(h, 1, 0.1)
    assert h.role.stats.evaluations >= evaluations + 8, "every tick was evaluated (and held)"
    status = h.status()
    assert status["exits_suppressed"] == {"in_flight": 1} and status["exits_sent"] == {"stop_loss": 1}
    assert counter(metrics.EXITS_SUPPRESSED, "in_flight") == held_before + 1
    assert counter(metrics.EXIT_SIGNALS, "stop_loss") == sent_before + 1
    assert status["stalls_total"] == 1 and counter(metrics.EXIT_STALLS) == stalls_before + 1
    assert status["exits_in_flight"] == 1 and len(status["exits_stalled"]) == 1
