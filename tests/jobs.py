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


def _hang(ctx):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        ctx.beat()


def train_first_then_hang(ctx, db, request):
    """Trains (and promotes) the first configured strategy for real, then hangs "training the
    next one" until the run is cancelled: a run cancelled after promoting one strategy."""
    import logging
    import os

    from msd.learning.job import _Run, train_strategy, training_params
    from msd.store.training import running_run_of
    first = ctx.config.signaller.strategies[0].id
    with db.transaction() as conn:
        run_id = running_run_of(conn, os.getpid())
    summary = train_strategy(_Run(ctx, db, training_params(ctx, request), request.get("id"), run_id), first)
    logging.getLogger("msd.trainer").info("first strategy done: %s v%s promoted=%s", first,
                                          summary.get("version"), summary.get("promoted"))
    _hang(ctx)
    return {"strategies": {first: summary}}


def report_scope_then_hang(ctx, db, request):
    """Logs the scope the run was asked for, then works until cancelled."""
    import logging
    logging.getLogger("msd.trainer").info("training scope %s", request.get("strategies"),
                                          extra={"scope": request.get("strategies"), "request_id": request["id"]})
    _hang(ctx)
    return {}


def stray_output(ctx, db, request):
    """The real summary job, after writing outside logging the way libraries and the interpreter do."""
    import os
    import sys
    print("a stray print to stdout")
    sys.stdout.flush()
    os.write(2, b"/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: "
                b"resource_tracker: There appear to be 1 leaked semaphore objects to clean up at shutdown\n")
    return summarise_executions(ctx, db, request)
