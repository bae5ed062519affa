"""Regressions of the hostile review of issue #8's exits (one test per finding, named after the
bug), in-process against the real database and broker like test_exit_role.py, whose harness
they share."""
import time
from datetime import datetime, timezone

import pytest

from tests.integration.exit_helpers import execute, open_position, stored_state
from tests.integration.test_exit_role import backend, make, update  # noqa: F401  (fixtures)

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
