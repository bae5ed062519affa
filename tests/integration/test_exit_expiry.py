"""Exits that expire in the outbox, in-process against the real database and broker.

The exit role is driven turn by turn (see test_exit_role.py); the broker refuses it (permissions
cleared on the test's vhost) so that exits wait in the outbox. The daemon-level regression is in
test_daemon_hardening.py.
"""
import time
from contextlib import contextmanager

import psycopg2
import pytest

from tests.fixtures.rabbit import close_vhost_connections, rabbitmqctl
from tests.integration.exit_helpers import execute, open_position, stored_state
from tests.integration.test_exit_role import backend, make, update  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
LADDER = {"take_profit": {"steps": [{"at_pct": 3, "close": 0.5}, {"at_pct": 5, "close": 1}],
                          "breakeven_after_first_step": True},
          "stop_loss_pct": 2, "cooldown_seconds": 60}


@contextmanager
def broker_refusing(vhost):
    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    close_vhost_connections(vhost)
    try:
        yield
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


@contextmanager
def exit_state_writes_failing(dsn):
    """Every write of the stored exit state fails inside the database (a trigger)."""
    execute(dsn, """CREATE FUNCTION msd.refuse_state() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'exit state refused'; END $$""")
    execute(dsn, """CREATE TRIGGER refuse_state BEFORE INSERT OR UPDATE OR DELETE ON msd.position_exit_state
                    FOR EACH ROW EXECUTE FUNCTION msd.refuse_state()""")
    try:
        yield
    finally:
        execute(dsn, "DROP TRIGGER refuse_state ON msd.position_exit_state")
        execute(dsn, "DROP FUNCTION msd.refuse_state()")


def outbox_rows(h, position_id):
    return execute(h.dsn, """SELECT signal_id::text, outbox_state, body->'metadata'->>'exit_reason' FROM msd.signals
                              WHERE body->'metadata'->>'position_id' = %s ORDER BY created_at""", (position_id,))


def marks(state):
    return (state["ladder_steps_done"], state["stop_moved_to_breakeven"], state["last_exit_at"],
            [f["signal_id"] for f in state["in_flight"]])


def test_exit_expiry_and_its_rollback_commit_together_or_not_at_all(make, backend):
    dsn, vhost = backend
    h = make(rules=LADDER, max_signal_age_s=1)
    pid = open_position(dsn, "EXPUSDT", "2.00000000", "100", "104.00000000")       # the first step reached
    with broker_refusing(vhost):
        h.queues["positions"].put(update(pid, "EXPUSDT", "2"))
        [(stale_id, state, reason)] = h.until(lambda: outbox_rows(h, pid), what="the step recorded")
        assert (state, reason) == ("pending", "take_profit_step")
        assert marks(stored_state(dsn, pid))[0:2] == ([0], True)
        assert marks(stored_state(dsn, pid))[3] == [stale_id]
        before = stored_state(dsn, pid)
        time.sleep(1.2)                                         # older than exits.max_signal_age_s now

        with exit_state_writes_failing(dsn):
            with pytest.raises(psycopg2.Error, match="exit state refused"):
                h.role.outbox.flush()
            assert outbox_rows(h, pid) == [(stale_id, "pending", "take_profit_step")]
        assert stored_state(dsn, pid) == before
        assert [f.signal_id for f in h.role.book[("EXPUSDT", pid)].in_flight] == [stale_id]

        h.role.outbox.flush()
        assert outbox_rows(h, pid) == [(stale_id, "expired", "take_profit_step")]
        state = stored_state(dsn, pid)
        assert marks(state) == ([], False, None, [])
        assert state["extreme_price"] == before["extreme_price"]       # the prices seen are kept
        memory = h.role.book[("EXPUSDT", pid)]
        assert (memory.ladder_steps_done, memory.stop_moved_to_breakeven, memory.in_flight) == ((), False, ())

        # Decided again at the current price (still at the step): a new exit, a new signal_id.
        rows = h.until(lambda: (lambda r: r if len(r) == 2 else None)(outbox_rows(h, pid)), what="decided again")
        (fresh_id, fresh_state, fresh_reason) = rows[1]
        assert fresh_id != stale_id and (fresh_state, fresh_reason) == ("pending", "take_profit_step")
        assert marks(stored_state(dsn, pid))[3] == [fresh_id]
    assert h.status()["expired"] == 1
