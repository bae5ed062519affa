"""Trainer jobs used by the integration tests (named in a test config's trainer.job)."""
import time

from msd.roles.trainer_jobs import summarise_executions


def slow_summary(ctx, db, request):
    """The real summary job followed by a long stretch of work, so a test can cancel it midway."""
    summary = summarise_executions(ctx, db, request)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        ctx.beat()
    return summary


def stray_output(ctx, db, request):
    """The real summary job, after writing outside logging the way libraries and the interpreter do."""
    import os
    import sys
    print("a stray print to stdout")
    sys.stdout.flush()
    os.write(2, b"/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: "
                b"resource_tracker: There appear to be 1 leaked semaphore objects to clean up at shutdown\n")
    return summarise_executions(ctx, db, request)
