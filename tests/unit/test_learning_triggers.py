"""Retraining triggers as tables."""
from datetime import datetime, timedelta, timezone

import pytest

from msd.learning.triggers import Schedule, data_threshold_reached, schedule_decision

T = datetime(2026, 11, 24, 1, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("schedule, moment, expected", [
    (Schedule(daily_at="02:00"), T, T.replace(hour=2, minute=0)),
    (Schedule(daily_at="02:00"), T.replace(hour=2, minute=0), T.replace(hour=2, minute=0) + timedelta(days=1)),
    (Schedule(daily_at="00:15"), T, T.replace(hour=0, minute=15) + timedelta(days=1)),
    (Schedule(every_s=6 * 3600), T, T + timedelta(hours=6)),
])
def test_next_after(schedule, moment, expected):
    assert schedule.next_after(moment) == expected


@pytest.mark.parametrize("kwargs", [{}, {"every_s": 60, "daily_at": "01:00"}, {"every_s": 10}, {"daily_at": "25:00"},
                                    {"daily_at": "2:00"}])
def test_invalid_schedules_name_the_key(kwargs):
    with pytest.raises(ValueError, match="trainer.schedule"):
        Schedule(**kwargs)


@pytest.mark.parametrize("persisted, now, due, missed", [
    (None, T, False, False),                                  # first start: schedule the next one
    (T + timedelta(minutes=1), T, False, False),
    (T, T + timedelta(seconds=30), True, False),              # on time (the loop polls every few s)
    (T - timedelta(hours=3), T, True, True),                  # missed while down: run once at start
])
def test_schedule_decision(persisted, now, due, missed):
    schedule = Schedule(every_s=3600)
    decision = schedule_decision(schedule, persisted, now)
    assert (decision.due, decision.missed) == (due, missed)
    assert decision.next_run_at > now


def test_a_missed_run_runs_once_not_once_per_missed_period():
    schedule = Schedule(every_s=3600)
    first = schedule_decision(schedule, T - timedelta(hours=10), T)
    assert first.due and not schedule_decision(schedule, first.next_run_at, T + timedelta(seconds=5)).due


@pytest.mark.parametrize("count, threshold, fired", [(9, 10, False), (10, 10, True), (500, None, False)])
def test_data_threshold(count, threshold, fired):
    assert data_threshold_reached(count, threshold) is fired
