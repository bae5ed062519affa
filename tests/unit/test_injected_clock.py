"""Issue 12: time is injected. The signaller reads its clock (msd.values.clock) once per entry
from its loop and passes `now` in; the learning lifecycle and the backtest take `now` (event
time in a replay). Nothing on those paths reads the wall clock itself."""
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2] / "msd"
WALL_CLOCK = re.compile(r"datetime\.now\(|datetime\.utcnow\(|time\.time\(|date\.today\(")
TAKE_NOW = sorted([*ROOT.glob("roles/signaller/*.py"), *ROOT.glob("backtest/*.py"),
                   ROOT / "learning/lifecycle.py", ROOT / "strategies/signal_turn.py", ROOT / "learning/triggers.py", ROOT / "learning/monitoring.py"])


@pytest.mark.parametrize("path", TAKE_NOW, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_wall_clock_read(path):
    reads = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
             if WALL_CLOCK.search(line)]
    assert reads == []


@pytest.mark.parametrize("frequency_s, since_s, due", [(2.0, 0.5, False), (2.0, 1.0, True), (0.25, 0.2, False),
                                                      (0.25, 0.25, True),
                                                      (2.0, -5.0, True)])     # the clock stepped back
def test_schedule_trigger_pacing_follows_the_passed_in_now(frequency_s, since_s, due):
    """A schedule-triggered strategy is tried at most every min(frequency, 1 s) of the `now` the
    loop passes in (it read time.monotonic() before): a replayed or frozen clock paces it."""
    from msd.strategies.signal_turn import attempt_due
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    params = SimpleNamespace(id="s", warmup=SimpleNamespace(frequency_s=frequency_s))
    assert attempt_due(params, now - timedelta(seconds=since_s), now) is due
    assert attempt_due(params, None, now) is True      # never tried on that asset
