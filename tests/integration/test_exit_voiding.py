"""Pending exits whose position changed while the broker was down are voided, not sent (issue #8).

In-process against the real database and broker, the role driven turn by turn (test_exit_role.py);
the broker refuses the role (permissions cleared on the test's vhost) so that exits wait in the
outbox. The daemon-level regression is in test_daemon_hardening.py.
"""
from contextlib import contextmanager
from decimal import Decimal as D

import json

import pika
import pytest

from msd import metrics
from tests.fixtures.rabbit import amqp_url
from tests.integration.exit_helpers import SIGNALS_QUEUE, execute, mark_price, open_position, stored_state
from tests.integration.test_exit_expiry import broker_refusing
from tests.integration.test_exit_role import backend, make, update  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
STOP = {"stop_loss_pct": 2, "cooldown_seconds": 1}


def outbox_rows(dsn, position_id):
    return execute(dsn, """SELECT signal_id::text, outbox_state, body->'metadata'->>'quantity', last_error
                             FROM msd.signals WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at""",
                   (position_id,))


def received(vhost):
    """What order-manager would take off the signals queue now (emptying it)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        channel = conn.channel()
        channel.queue_declare(SIGNALS_QUEUE, durable=True)
        bodies = []
        while True:
            method, _, body = channel.basic_get(SIGNALS_QUEUE, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(json.loads(body))
    finally:
        conn.close()


@contextmanager
def positions_unreadable(dsn):
    execute(dsn, "ALTER TABLE positions RENAME TO positions_away")
    try:
        yield
    finally:
        execute(dsn, "ALTER TABLE positions_away RENAME TO positions")


def voided_count(h, reason):
    return metrics.SIGNALS_VOIDED.labels(h.config.exits.strategy_id, "exit", reason)._value.get()


def test_a_pending_exit_of_a_position_closed_meanwhile_is_voided_and_a_failed_read_voids_nothing(make, backend):
    dsn, vhost = backend
    h = make(rules=STOP)
    pid = open_position(dsn, "VOIDUSDT", "2.00000000", "100", "97.00000000")      # below the 2% stop
    before = voided_count(h, "position_flat")
    received(vhost)
    with broker_refusing(vhost):
        h.queues["positions"].put(update(pid, "VOIDUSDT", "2"))
        [(exit_id, state, quantity, _)] = h.until(lambda: outbox_rows(dsn, pid), what="the exit recorded")
        assert (state, D(quantity)) == ("pending", D(2))
        mark_price(dsn, "VOIDUSDT", "97.00000000", size="0")         # closed by hand meanwhile
    # The broker is back, but the row cannot be read: nothing voided, nothing sent.
    with positions_unreadable(dsn):
        assert h.role.outbox.flush() == 0
    assert [r[:3] for r in outbox_rows(dsn, pid)] == [(exit_id, "pending", quantity)]
    assert [f["signal_id"] for f in stored_state(dsn, pid)["in_flight"]] == [exit_id]
    assert received(vhost) == []

    assert h.role.outbox.flush() == 0
    [(voided_id, state, _, error)] = outbox_rows(dsn, pid)
    assert (voided_id, state) == (exit_id, "voided")
    assert error.startswith("position closed/changed before it was sent")
    assert voided_count(h, "position_flat") == before + 1
    assert h.status()["exits_voided"] == {"position_flat": 1}
    assert received(vhost) == []                                   # order-manager never saw it
    h.turn(3)                                                        # decided again: flat, nothing to do
    assert received(vhost) == [] and len(outbox_rows(dsn, pid)) == 1
    assert ("VOIDUSDT", pid) not in h.role.book


def test_a_pending_full_close_larger_than_the_row_now_is_voided_and_the_rest_decided_again(make, backend):
    dsn, vhost = backend
    h = make(rules=STOP)
    pid = open_position(dsn, "HALFUSDT", "2.00000000", "100", "97.00000000")
    received(vhost)
    with broker_refusing(vhost):
        h.queues["positions"].put(update(pid, "HALFUSDT", "2"))
        [(stale_id, _, _, _)] = h.until(lambda: outbox_rows(dsn, pid), what="the exit recorded")
        mark_price(dsn, "HALFUSDT", "97.00000000", size="1.5")      # partly closed by something else
    h.role.outbox.flush()
    assert outbox_rows(dsn, pid)[0][:2] == (stale_id, "voided")
    # Decided again from the row as it is now: a new exit of what is left, which goes out.
    rows = h.until(lambda: (lambda r: r if len(r) == 2 and r[1][1] == "sent" else None)(outbox_rows(dsn, pid)),
                   what="decided again and sent")
    fresh_id, _, fresh_quantity, _ = rows[1]
    assert fresh_id != stale_id and D(fresh_quantity) == D("1.5")
    assert [(m["signal_id"], D(m["metadata"]["quantity"])) for m in received(vhost)] == [(fresh_id, D("1.5"))]
    assert [f["signal_id"] for f in stored_state(dsn, pid)["in_flight"]] == [fresh_id]


def test_pending_exits_left_by_a_previous_run_are_checked_before_they_go_out(make, backend):
    dsn, vhost = backend
    first = make(rules=STOP)
    pid = open_position(dsn, "BACKUSDT", "2.00000000", "100", "97.00000000")
    received(vhost)
    with broker_refusing(vhost):
        first.queues["positions"].put(update(pid, "BACKUSDT", "2"))
        [(exit_id, _, _, _)] = first.until(lambda: outbox_rows(dsn, pid), what="the exit recorded")
        # msd stops with the exit pending; meanwhile the position flips (long 2 -> short 1).
        mark_price(dsn, "BACKUSDT", "97.00000000", size="-1")
    again = make(rules=STOP)                        # the next run: restores, then flushes
    again.turn()
    again.role.outbox.flush()
    assert [r[:2] for r in outbox_rows(dsn, pid)] == [(exit_id, "voided")]
    assert again.status()["exits_voided"] == {"position_flipped": 1}
    assert received(vhost) == []
    assert again.role.book[("BACKUSDT", pid)].in_flight == ()     # the short is watched afresh
