"""The trainer process: one training request, then exit. SIGTERM = cancel.

The supervisor starts a trainer per request and SIGTERMs it when a newer request arrives.
SIGTERM and the run's own deadline (SIGALRM) raise in the main thread, so the job stops where
it is; the run is then recorded as cancelled or timed out, and the exit code tells the
supervisor which. The trainer never touches a shared data-plane queue.
"""
from __future__ import annotations

import os

# One BLAS thread, set before anything loads numpy: the trainer's matrices have 9 columns, where
# OpenBLAS's threads gain nothing and, on a machine whose cores are busy (the daemon's signal
# path shares them), spin against each other (a 65,536 x 30 product took 0.4 s instead of 7 ms).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib  # noqa: E402  (the imports follow the setting on purpose)
import logging
import math
import signal
from typing import Any, Callable

from msd.roles.runtime.edges import open_database
from msd.roles.runtime.process import RoleContext
from msd.supervisor.spawn import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_TIMED_OUT
from msd.store.db import Database
from msd.store.training import finish_run, mark_abandoned_runs, start_run

log = logging.getLogger("msd.trainer")

Job = Callable[[RoleContext, Database, dict], dict]


class TrainingCancelled(BaseException):
    """Raised by the SIGTERM handler; BaseException so a job's `except Exception` cannot eat it."""


class TrainingTimedOut(BaseException):
    """Raised by the SIGALRM handler when trainer.timeout_s has elapsed."""


def resolve_job(reference: str) -> Job:
    module_name, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _raise(exc_type: type[BaseException]) -> Callable[..., None]:
    def handler(signum: int, _frame: Any) -> None:
        raise exc_type(signal.Signals(signum).name)
    return handler


def run(ctx: RoleContext) -> int:
    request = dict(ctx.args["request"])
    signal.signal(signal.SIGTERM, _raise(TrainingCancelled))
    signal.signal(signal.SIGALRM, _raise(TrainingTimedOut))
    db = open_database(ctx.config, "msd")
    run_id = None
    try:
        job = resolve_job(ctx.config.trainer.job)
        with db.transaction() as conn:
            mark_abandoned_runs(conn)
            run_id = start_run(conn, trigger=request["source"], reason=request["reason"], pid=os.getpid(),
                               strategy_id=request.get("strategy"))
        ctx.booted()
        signal.alarm(max(1, math.ceil(ctx.config.trainer.timeout_s)))
        log.info("training run %s started for request %s (%s)", run_id, request["id"], request["reason"])
        summary = job(ctx, db, request)
        signal.alarm(0)
        return _finish(ctx, db, run_id, "succeeded", EXIT_OK, summary=summary)
    except TrainingCancelled as exc:
        return _finish(ctx, db, run_id, "cancelled", EXIT_CANCELLED, error=f"cancelled by {exc}")
    except TrainingTimedOut:
        return _finish(ctx, db, run_id, "timed_out", EXIT_TIMED_OUT,
                       error=f"exceeded trainer.timeout_s={ctx.config.trainer.timeout_s:g}s")
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        return _finish(ctx, db, run_id, "failed", EXIT_FAILED, error=f"{type(exc).__name__}: {exc}")


def _finish(ctx: RoleContext, db: Database, run_id: int | None, status: str, code: int,
            summary: dict | None = None, error: str | None = None) -> int:
    signal.alarm(0)
    # A second SIGTERM while recording the outcome must not leave the run row half-written.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if run_id is not None:
        try:
            with db.transaction() as conn:
                finish_run(conn, run_id, status, summary=summary, error=error)
        except Exception:
            log.exception("could not record the outcome of training run %s", run_id)
    ctx.event("train_result", run_id=run_id, status=status, summary=summary, error=error)
    log.info("training run %s %s", run_id, status, extra={"error": error} if error else None)
    return code
