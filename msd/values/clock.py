"""The clock a role reads at its loop's edge and passes in as `now` (issue 12): the decisions it
calls take `now` and never read a clock, so a test or a replay can inject its own time."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]      # aware UTC


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
