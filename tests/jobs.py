"""Trainer jobs used by the integration tests (named in a test config's trainer.job)."""
import time

from msd.learning.job import summarise_executions


def slow_summary(ctx, db, request):
    """The real summary job followed by a long stretch of work, so a test can cancel it midway."""
    summary = summarise_executions(ctx, db, request)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        ctx.beat()
    return summary
