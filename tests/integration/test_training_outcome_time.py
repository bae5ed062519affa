"""A training outcome's `at` is the event time of the attempt, written by the code that records
it, never the insert time of a column default (issue 12: "column defaults stamp training
outcomes"). The data-threshold count starts again from it, so a replay or a slow run must not
move it to whenever the row happened to be written."""
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from msd.learning.job import train_strategies
from msd.store.datasets import labelled_since_last_training
from msd.store.versions import record_training_outcome, training_outcomes
from tests import learning_data
from tests.integration.test_learning import STRATEGY, Ctx, seed
from tests.learning_data import START

pytestmark = pytest.mark.integration
EVENT = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)     # far from any insert time


def request(tmp_path):
    return {"id": "req-at", "params": learning_data.params(models_dir=str(tmp_path))}


def test_outcomes_are_stamped_with_the_attempts_event_time_not_the_insert_time(db, tmp_path):
    seed(db, strength=4.0, seed=1)
    reads = []

    def clock():
        reads.append(EVENT + timedelta(hours=len(reads)))
        return reads[-1]
    trained = train_strategies(Ctx(), db, request(tmp_path), clock)["strategies"][STRATEGY]
    skipped = train_strategies(Ctx(), db, request(tmp_path), clock)["strategies"][STRATEGY]
    assert (trained["outcome"], skipped["outcome"]) == ("trained", "skipped")     # the second: a drought
    with db.transaction() as conn:
        stamps = [row["at"] for row in training_outcomes(conn, STRATEGY)]
    assert stamps == reads == [EVENT, EVENT + timedelta(hours=1)]


def test_the_data_threshold_counts_from_the_event_time(db):
    """Decisions whose label came after the attempt's event time count as new, even when the
    outcome row was written later."""
    seed(db, n=300, strength=4.0, seed=2)
    horizon = learning_data.HORIZON_S
    cut = START + timedelta(minutes=150)
    with db.transaction() as conn:
        record_training_outcome(conn, STRATEGY, "skipped", "test", at=cut)
        after = labelled_since_last_training(conn, horizon, START + timedelta(days=30))[STRATEGY]
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM msd.signals WHERE strategy_id = %s AND created_at + %s > %s",
                        (STRATEGY, timedelta(seconds=horizon), cut))
            assert after == cur.fetchone()[0] > 0


def test_an_outcome_without_its_event_time_is_refused(db, fresh_pg_dsn):
    with db.transaction() as conn, pytest.raises(ValueError, match="at: None is invalid"):
        record_training_outcome(conn, STRATEGY, "skipped", "test", at=None)
    with psycopg2.connect(fresh_pg_dsn) as conn, conn.cursor() as cur, \
            pytest.raises(psycopg2.errors.NotNullViolation):
        cur.execute("INSERT INTO msd.training_outcomes (strategy_id, outcome, reason) VALUES ('x', 'skipped', 'y')")
