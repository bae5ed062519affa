"""When to retrain (FR-019 … FR-022): schedule and data threshold. Pure.

Quality degradation is msd.ml.gate.degradation_check (rolling live accuracy with hysteresis).

The signaller's learning loop feeds these functions what it reads (counts, live metrics, the
persisted next scheduled time) and sends a training request for whatever fires; the latest
request wins in the supervisor (FR-023). Times are aware UTC datetimes, passed in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from msd.values.parsing import InvalidValue

_DAILY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Schedule:
    """Either every `every_s` seconds, or daily at `daily_at` ("HH:MM", UTC)."""
    every_s: float | None = None
    daily_at: str | None = None

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.daily_at is None):
            raise InvalidValue("trainer.schedule", {"every_s": self.every_s, "daily_at": self.daily_at},
                               "exactly one of every_s or daily_at")
        if self.every_s is not None and not self.every_s >= 60:
            raise InvalidValue("trainer.schedule.every_s", self.every_s, "a number >= 60")
        if self.daily_at is not None and not _DAILY.match(str(self.daily_at)):
            raise InvalidValue("trainer.schedule.daily_at", self.daily_at, "HH:MM (UTC)")

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after `moment`."""
        if self.every_s is not None:
            return moment + timedelta(seconds=self.every_s)
        hour, minute = (int(part) for part in self.daily_at.split(":"))
        candidate = datetime.combine(moment.astimezone(timezone.utc).date(), time(hour, minute), timezone.utc)
        return candidate if candidate > moment else candidate + timedelta(days=1)


@dataclass(frozen=True)
class ScheduleDecision:
    due: bool                  # run now
    next_run_at: datetime      # what to persist
    missed: bool = False       # the due time passed while msd was not running


def schedule_decision(schedule: Schedule, persisted_next: datetime | None, now: datetime) -> ScheduleDecision:
    """Whether the scheduled run is due. A run missed while msd was down runs once, at start."""
    if persisted_next is None:
        return ScheduleDecision(False, schedule.next_after(now))
    if persisted_next > now:
        return ScheduleDecision(False, persisted_next)
    missed = now - persisted_next > timedelta(minutes=5)
    return ScheduleDecision(True, schedule.next_after(now), missed)


def data_threshold_reached(new_labelled: int, threshold: int | None) -> bool:
    """N new labelled executions since the last training (None = this trigger is off)."""
    return threshold is not None and new_labelled >= threshold
