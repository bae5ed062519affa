"""Regression (issue 12): stamps that later decisions read were the database's `now()`, not the
caller's injected clock: retired_at and activated_at of a version, a pause's paused_at, a
warm-up budget's started_at, the outbox's expiry cut-off, expired_at, voided_at and ages, and
whether a decision's label may still come (the learning loop's label window).
With a clock far from the wall's (a replay, a test), a retirement looked older or newer than
the training it is compared with, a budget's duration was measured between two clocks, and
pending signals expired at once (decided in the past) or never (decided in the future).

Each family runs on the real server with a clock years away from the wall's, and the
expiry/voiding decisions are checked both ways: a row expires iff the passed `now` says so.
"""
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import psycopg2
import pytest

from msd.bus.signal_format import signal_to_wire
from msd.ml.params import TrainingParams
from msd.roles.runtime.outbox import Expiry, Outbox
from msd.roles.signaller.model_book import ModelBook, sync_modes
from msd.store.datasets import LabelWindow, warmup_budget_decisions
from msd.store.neighbours import create_neighbour_tables
from msd.store.outbox import expire_stale, in_flight_notional, insert_signal, pending_backlog, void_pending
from msd.store.pauses import budget_starts, pause, pauses, resume, start_budget
from msd.store.versions import (activate, deactivate, get_version, latest_retirements, retire,
                                rollback)
from tests import learning_data
from tests.integration.test_outbox import QUEUE, queued_ids, setup, signal  # noqa: F401 (fixture)
from tests.integration.test_store_versions import STRATEGY, create

pytestmark = pytest.mark.integration

FUTURE = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)     # years after the wall clock
PAST = datetime(2019, 1, 2, 3, 4, 5, tzinfo=timezone.utc)       # years before it
CLOCKS = [pytest.param(FUTURE, id="future"), pytest.param(PAST, id="past")]
MAX_AGE = timedelta(seconds=60)


def decided(at: datetime, side: str = "sell"):
    """A warm-up signal decided at `at` (its timestamp is the row's created_at)."""
    made = signal()
    return made.__class__(**{**made.__dict__, "timestamp": at, "signal_type": side})


def record(db, *signals) -> None:
    with db.transaction() as conn:
        for item in signals:
            insert_signal(conn, item, signal_to_wire(item), "warmup")


def column(db, sql: str, *args):
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


# --- model versions -------------------------------------------------------------------------

@pytest.mark.parametrize("now", CLOCKS)
def test_activation_rollback_and_retirement_are_stamped_with_the_callers_now(db, tmp_path, now):
    create(db, tmp_path)
    create(db, tmp_path)
    with db.transaction() as conn:
        activate(conn, STRATEGY, 1, reason="gate passed", now=now, evidence={})
        activate(conn, STRATEGY, 2, reason="gate passed", now=now + timedelta(hours=1), evidence={})
        retire(conn, STRATEGY, 2, "live quality degraded", now=now + timedelta(hours=2))
        rollback(conn, STRATEGY, 1, reason="v2 degraded", now=now + timedelta(hours=2))
    with db.transaction() as conn:
        assert get_version(conn, STRATEGY, 2).activated_at == now + timedelta(hours=1)
        assert get_version(conn, STRATEGY, 2).retired_at == now + timedelta(hours=2)
        assert get_version(conn, STRATEGY, 1).activated_at == now + timedelta(hours=2)
        assert latest_retirements(conn) == {STRATEGY: now + timedelta(hours=2)}


def test_deactivation_starts_the_new_warmup_budget_at_the_callers_now(db, tmp_path):
    create(db, tmp_path)
    with db.transaction() as conn:
        start_budget(conn, STRATEGY, "first warm-up", now=FUTURE - timedelta(days=30))
        activate(conn, STRATEGY, 1, reason="gate passed", now=FUTURE - timedelta(days=1), evidence={})
        deactivate(conn, STRATEGY, reason="v1 degraded", now=FUTURE)
        assert budget_starts(conn) == {STRATEGY: FUTURE}


# --- pauses and warm-up budgets --------------------------------------------------------------

@pytest.mark.parametrize("now", CLOCKS)
def test_pause_resume_and_budgets_are_stamped_with_the_callers_now(db, now):
    with db.transaction() as conn:
        start_budget(conn, "s1", "first warm-up", now=now)
        start_budget(conn, "s1", "first warm-up", now=now + timedelta(days=9), only_if_missing=True)
        assert budget_starts(conn) == {"s1": now}                       # kept: it existed
        assert pause(conn, "s1", "budget", "budget spent", now=now + timedelta(days=1))
        assert pauses(conn)["s1"].paused_at == now + timedelta(days=1)
        resume(conn, "s1", "warmup", "operator", None, now=now + timedelta(days=2))
        assert budget_starts(conn) == {"s1": now + timedelta(days=2)}


def test_sync_modes_starts_a_first_warmup_budget_at_the_signallers_now(db, tmp_path):
    params = TrainingParams.from_mapping(learning_data.params(models_dir=str(tmp_path)))
    book = ModelBook(db, lambda: params)
    book.reload(["s1"])                     # no version: warm-up
    sync_modes(db, book, [SimpleNamespace(id="s1")], lambda p: {"heuristic": "momentum"}, FUTURE)
    with db.transaction() as conn:
        assert budget_starts(conn) == {"s1": FUTURE}


def test_a_naive_now_is_refused_rather_than_read_in_the_servers_time_zone(db):
    with db.transaction() as conn:
        with pytest.raises(ValueError, match="now"):
            pause(conn, "s1", "operator", "why", now=FUTURE.replace(tzinfo=None))
        with pytest.raises(ValueError, match="now"):
            expire_stale(conn, ("warmup",), MAX_AGE, now=FUTURE.replace(tzinfo=None))


@pytest.mark.parametrize("table, columns, values", [
    ("msd.signals", "signal_id, strategy_id, asset, signal_type, amount, confidence, mode, body, snapshot",
     "gen_random_uuid(), 's1', 'BTCUSDT', 'buy', 10, 0.5, 'warmup', '{}', '{}'"),
    ("msd.warmup_budgets", "strategy_id, reason", "'s1', 'first warm-up'"),
    ("msd.strategy_pauses", "strategy_id, cause, reason", "'s1', 'operator', 'why'"),
])
def test_a_decision_time_column_has_no_database_clock_default(db, table, columns, values):
    with pytest.raises(psycopg2.errors.NotNullViolation):
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})")


# --- the outbox --------------------------------------------------------------------------------

@pytest.mark.parametrize("now", CLOCKS)
def test_expiry_is_decided_and_stamped_at_the_callers_now(db, now):
    stale, fresh = decided(now - timedelta(seconds=90)), decided(now - timedelta(seconds=30))
    record(db, stale, fresh)
    with db.transaction() as conn:
        [expired] = expire_stale(conn, ("warmup",), MAX_AGE, now=now)
    assert (expired.signal_id, expired.created_at, expired.age_s) == (stale.signal_id, now - timedelta(seconds=90), 90.0)
    assert column(db, "SELECT expired_at FROM msd.signals WHERE signal_id = %s", stale.signal_id) == now
    assert column(db, "SELECT last_error FROM msd.signals WHERE signal_id = %s",
                  stale.signal_id) == "expired unsent after 90s (limit 60.0s)"
    assert column(db, "SELECT outbox_state FROM msd.signals WHERE signal_id = %s", fresh.signal_id) == "pending"
    with db.transaction() as conn:          # 31 s later by the same clock, the fresh one is stale too
        [later] = expire_stale(conn, ("warmup",), MAX_AGE, now=now + timedelta(seconds=31))
    assert (later.signal_id, later.age_s) == (fresh.signal_id, 61.0)


@pytest.mark.parametrize("now", CLOCKS)
def test_voiding_and_the_backlog_age_are_measured_at_the_callers_now(db, now):
    older, newer = decided(now - timedelta(seconds=45)), decided(now - timedelta(seconds=5))
    record(db, older, newer)
    with db.transaction() as conn:
        assert pending_backlog(conn, ("warmup",), now) == (2, 45.0)
        [voided] = void_pending(conn, {newer.signal_id: ("position_closed", "position closed")}, now=now)
    assert (voided.age_s, voided.reason) == (5.0, "position_closed")
    assert column(db, "SELECT voided_at FROM msd.signals WHERE signal_id = %s", newer.signal_id) == now


@pytest.mark.parametrize("now", CLOCKS)
def test_in_flight_exposure_compares_the_decisions_time_with_the_callers_now(db, now):
    buy = decided(now - timedelta(seconds=30), side="buy")
    with db.transaction() as conn:
        create_neighbour_tables(conn)
    record(db, buy)
    assert column(db, "SELECT created_at FROM msd.signals WHERE signal_id = %s", buy.signal_id) == buy.timestamp
    with db.transaction() as conn:
        assert in_flight_notional(conn, "BTCUSDT", 120, now) == Decimal(25)
        assert in_flight_notional(conn, "BTCUSDT", 120, now + timedelta(minutes=2)) == Decimal(0)


@pytest.mark.parametrize("now", CLOCKS)
def test_the_roles_outbox_expires_by_the_injected_clock(setup, now):
    """The runtime Outbox measures at the clock it is given (the role's), not the wall's."""
    db, publisher, url = setup
    stale, fresh = decided(now - timedelta(seconds=90)), decided(now - timedelta(seconds=30))
    record(db, stale, fresh)
    outbox = Outbox(db, publisher, QUEUE, modes=("warmup",), expiry=Expiry(("warmup",), 60), clock=lambda: now)
    outbox.flush()
    assert outbox.settle(10.0)
    assert outbox.expired == 1 and queued_ids(url) == [fresh.signal_id]
    assert column(db, "SELECT expired_at FROM msd.signals WHERE signal_id = %s", stale.signal_id) == now


# --- label windows ---------------------------------------------------------------------------------

@pytest.mark.parametrize("now", CLOCKS)
def test_a_warmup_call_is_overdue_iff_the_callers_now_says_its_bars_are_late(db, now):
    """The budget charges an overdue call (no label will come) at its worst case: `open` is
    decided at the window's `now` (the learning loop passes its own), not the database's."""
    call = decided(now - timedelta(minutes=30))         # horizon 15 min + bar lag 2 min: over at `now`
    record(db, call)
    with db.transaction() as conn:
        _, overdue = warmup_budget_decisions(conn, "s1", LabelWindow(900, 120, now), since=call.timestamp)
        _, waiting = warmup_budget_decisions(conn, "s1", LabelWindow(900, 120, now - timedelta(minutes=20)),
                                             since=call.timestamp)
    assert [d.signal_id for d in overdue] == [call.signal_id] and waiting == []
