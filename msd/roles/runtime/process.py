"""What every child process runs before and around its role.

The supervisor starts `child_main(spec)` with the `spawn` method (msd.supervisor.spawn). Here the child sets up its
own logging (records go over its private pipe to the supervisor's single writer), its
heartbeat thread, and SIGTERM handling (SIGTERM sets `ctx.stopping`; the role returns), then
imports its role module and calls `run(ctx) -> int`.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from msd import metrics
from msd.config import Config
from msd.errors import Fenced
from msd.store.db import WriterSession, set_writer_session
from msd.supervisor.spawn import EXIT_FAILED, EXIT_FENCED, ChildSpec

_STANDARD_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RoleContext:
    """The role's handle on its process: config, queues, stop flag, status and events."""

    def __init__(self, spec: ChildSpec):
        self.name = spec.name
        self.config = spec.config
        self.queues = spec.queues
        self.args = spec.args
        self.stopping = threading.Event()
        self._conn = spec.conn
        self._send_lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self.last_progress = time.monotonic()
        self.notices: list[tuple[str, dict]] = []    # other supervisor messages, for the role

    def send(self, kind: str, data: Mapping[str, Any]) -> None:
        """Send one message to the supervisor; a broken pipe means the supervisor is gone."""
        with self._send_lock:
            try:
                self._conn.send((kind, dict(data)))
            except (BrokenPipeError, EOFError, OSError):
                self.stopping.set()

    def beat(self) -> None:
        """Called by the role's main loop: proves the loop itself makes progress."""
        self.last_progress = time.monotonic()

    def set_status(self, **fields: Any) -> None:
        """Merge fields into the status shown by `msd-ctl status` (sent with each heartbeat)."""
        self._status.update(fields)

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def degrade(self, component: str, reason: str) -> None:
        """Report one component as degraded (shown in status, /healthz and systemd STATUS)."""
        degraded = dict(self._status.get("degraded") or {})
        degraded[component] = reason
        self._status["degraded"] = degraded

    def recover(self, component: str) -> None:
        degraded = dict(self._status.get("degraded") or {})
        if degraded.pop(component, None) is not None:
            self._status["degraded"] = degraded

    def poll_control(self) -> Config | None:
        """A config the supervisor sent for live application since the last call, else None.

        Only the role's main loop calls this, so receiving here never races another reader.
        """
        latest = None
        try:
            while self._conn.poll():
                kind, data = self._conn.recv()
                if kind == "config":
                    latest = data["config"]
                else:
                    self.notices.append((kind, data))
        except (EOFError, OSError):
            self.stopping.set()
        if latest is not None:
            self.config = latest
        return latest

    def wait_for_message(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a supervisor message (read it with poll_control)."""
        try:
            return self._conn.poll(timeout)
        except (EOFError, OSError):
            self.stopping.set()
            return False

    def take_notices(self) -> list[tuple[str, dict]]:
        """Messages other than config received by `poll_control`, oldest first."""
        notices, self.notices = self.notices, []
        return notices

    def booted(self) -> None:
        self.beat()
        self.send("booted", {})

    def event(self, kind: str, **data: Any) -> None:
        self.send("event", {"kind": kind, **data})


@dataclass
class _Dependency:
    up: bool | None = None          # None until the first operation said either way
    reason: str | None = None
    failed_attempts: int = 0
    down_since: float | None = None


class DependencyHealth:
    """What one role knows about each thing it depends on: "database", "broker", "ws-gateway".

    The edges report the outcome of real operations: `failed(name, reason)` when one failed,
    `succeeded(name)` only after one succeeded (a committed transaction, an opened and confirmed
    channel, an answered request), never because a retry is due. One WARNING line when a
    dependency goes down (with the reason), one INFO line when it is back (with the number of
    failed attempts in between); the state goes to `msd-ctl status` (`dependencies`), /healthz
    and systemd STATUS (via the supervisor) and `msd_dependency_up{role,dependency}`.
    Thread-safe: the consumer's subscription thread reports ws-gateway.
    """

    def __init__(self, ctx: "RoleContext", log: logging.Logger | None = None):
        self._ctx = ctx
        self._log = log or logging.getLogger(f"msd.{ctx.name}")
        self._lock = threading.Lock()
        self._deps: dict[str, _Dependency] = {}

    def failed(self, name: str, reason: str) -> None:
        with self._lock:
            dep = self._deps.setdefault(name, _Dependency())
            went_down = dep.up is not False
            dep.up, dep.reason = False, reason
            dep.failed_attempts += 1
            if went_down:
                dep.down_since = time.monotonic()
            self._publish()
        metrics.DEPENDENCY_UP.labels(self._ctx.name, name).set(0)
        if went_down:
            self._log.warning("%s down: %s", name, reason, extra={"dependency": name})

    def succeeded(self, name: str) -> None:
        with self._lock:
            dep = self._deps.setdefault(name, _Dependency())
            if dep.up is True:
                return
            came_back, attempts = dep.up is False, dep.failed_attempts
            down_for = time.monotonic() - (dep.down_since or time.monotonic())
            self._deps[name] = _Dependency(up=True)
            self._publish()
        metrics.DEPENDENCY_UP.labels(self._ctx.name, name).set(1)
        if came_back:
            self._log.info("%s back after %d failed attempt%s over %.1fs", name, attempts,
                           "" if attempts == 1 else "s", down_for,
                           extra={"dependency": name, "failed_attempts": attempts})

    def reporter(self, name: str) -> Callable[[bool, str | None], None]:
        """A callback `(ok, reason)` for an edge (Database, publisher, consumer) reporting on `name`."""
        def report(ok: bool, reason: str | None = None) -> None:
            if ok:
                self.succeeded(name)
            else:
                self.failed(name, reason or "unavailable")
        return report

    def is_down(self, name: str) -> bool:
        with self._lock:
            return self._deps.get(name, _Dependency()).up is False

    def reason(self, name: str) -> str | None:
        with self._lock:
            dep = self._deps.get(name)
            return dep.reason if dep is not None and dep.up is False else None

    def _publish(self) -> None:
        view = {name: {"up": dep.up, "reason": dep.reason, "failed_attempts": dep.failed_attempts}
                for name, dep in sorted(self._deps.items()) if dep.up is not None}
        self._ctx.set_status(dependencies=view)


class PipeLogHandler(logging.Handler):
    """Ships log records to the supervisor, which is the only process that writes logs."""

    def __init__(self, ctx: RoleContext):
        super().__init__()
        self._ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._ctx.send("log", record_to_dict(record))
        except Exception:  # a log line must never take the role down
            self.handleError(record)


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    data = {
        "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
        "msg": record.getMessage(), "created": record.created, "pid": os.getpid(),
    }
    if record.exc_info:
        data["exc_text"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    for key, value in vars(record).items():
        if key not in _STANDARD_RECORD_KEYS and key not in data:
            data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
    return data


def _heartbeat_loop(ctx: RoleContext, interval: float) -> None:
    while not ctx.stopping.wait(interval):
        ctx.send("heartbeat", {"progress_age_s": round(time.monotonic() - ctx.last_progress, 3),
                               "status": ctx.status()})


def _setup_logging(ctx: RoleContext) -> None:
    from msd.logs import QuietLibraries
    handler = PipeLogHandler(ctx)
    handler.addFilter(QuietLibraries())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(ctx.config.logging.level)


def _stop_soon(ctx: RoleContext) -> None:
    """SIGTERM handler. Event.set() takes the Event's lock, which the interrupted main thread may
    be holding inside Event.wait(); setting it from another thread cannot deadlock."""
    threading.Thread(target=ctx.stopping.set, name="sigterm", daemon=True).start()


def child_main(spec: ChildSpec) -> None:
    ctx = RoleContext(spec)
    # Until the role installs its own, SIGTERM only asks the role to stop; SIGINT (a terminal's
    # Ctrl-C reaching the whole process group) is left to the supervisor to turn into a stop.
    signal.signal(signal.SIGTERM, lambda *_: _stop_soon(ctx))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup_logging(ctx)
    threading.Thread(target=_heartbeat_loop, args=(ctx, spec.config.supervisor.heartbeat_interval_s),
                     name="heartbeat", daemon=True).start()
    log = logging.getLogger(f"msd.{spec.name}")
    if spec.args.get("writer"):
        # A leader's child: every write it makes is fenced by the epoch it was started for.
        set_writer_session(WriterSession(**spec.args["writer"]))
    code = EXIT_FAILED
    try:
        module = importlib.import_module(spec.module)
        code = module.run(ctx)
    except Fenced as exc:
        log.warning("role %s stops: %s", spec.name, exc)
        code = EXIT_FENCED
    except Exception:
        log.exception("role %s crashed", spec.name)
    finally:
        ctx.stopping.set()
        logging.shutdown()
    sys.exit(code)
