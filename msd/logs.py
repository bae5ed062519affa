"""Logging: one writer (the supervisor's stdout), every line with role, pid and trace id.

Children never write logs themselves: they send records over their pipe (see
msd.roles.runtime.PipeLogHandler) and the supervisor re-emits them here, so lines from several
processes never interleave mid-line. Lines are JSON (for journald and log shippers) or readable
text for a person at a terminal (`logging.format`: auto = text on a TTY, JSON otherwise).

While the supervisor runs, file descriptors 1 and 2 of every msd process point into a pipe that
the supervisor reads (`StrayOutput`): whatever a library or the interpreter writes outside
logging (a "leaked semaphore" warning, a traceback before logging is set up) becomes a log line
too, so the stream stays one JSON object per line.

pika logs each failed connection attempt at ERROR with a traceback; msd reports the broker's
state itself (one line down, one line back), so pika's records are demoted to DEBUG.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable, TextIO

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
QUIET_LIBRARIES = ("pika",)
_TEXT_SKIP = {"name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
              "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
              "threadName", "processName", "process", "message", "asctime", "taskName", "role", "pid"}


class _RoleDefaults(logging.Filter):
    """Lines from the supervisor itself carry role=supervisor and its pid."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = "supervisor"
        if not hasattr(record, "pid"):
            record.pid = os.getpid()
        return True


class QuietLibraries(logging.Filter):
    """Demote WARNING/ERROR records of noisy libraries (pika) to DEBUG; drop them below the root level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in QUIET_LIBRARIES and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class TextFormatter(logging.Formatter):
    """`12:00:01.234 WARNING consumer  message  key=value ...` with the traceback below, if any."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _TEXT_SKIP and not k.startswith("_") and v is not None)
        line = f"{moment} {record.levelname:<7} {getattr(record, 'role', '-'):<10} {record.getMessage()}"
        if extras:
            line += f"  [{extras}]"
        exc_text = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        return f"{line}\n{exc_text}" if exc_text else line


def resolve_format(fmt: str, stream: TextIO) -> str:
    """"json" or "text"; `auto` is text when `stream` is a terminal."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError, OSError):
        return "json"


def make_handler(stream: TextIO | None = None, fmt: str = "json") -> logging.Handler:
    stream = stream or sys.stdout
    handler = logging.StreamHandler(stream)
    if resolve_format(fmt, stream) == "text":
        handler.setFormatter(TextFormatter())
    else:
        handler.setFormatter(JsonFormatter(FORMAT, rename_fields={"levelname": "level", "asctime": "time"},
                                           timestamp=False))
    handler.addFilter(_RoleDefaults())
    handler.addFilter(QuietLibraries())
    return handler


def setup(level: str, stream: TextIO | None = None, fmt: str = "json") -> logging.Handler:
    root = logging.getLogger()
    handler = make_handler(stream, fmt)
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return handler


def emit_child_record(data: dict[str, Any], role: str) -> None:
    """Write a record received from a child as if it had been logged here, tagged with its role."""
    data = dict(data)
    exc_text = data.pop("exc_text", None)
    record = logging.makeLogRecord({**data, "args": None, "role": role})
    if exc_text:
        record.exc_text = exc_text
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class StrayOutput:
    """Route fds 1 and 2 (inherited by every child) through a pipe; `on_text` gets what arrives.

    The log handler keeps writing to the original stdout (`stream`). `on_text` is called from
    the reader thread with the complete lines of one read (a traceback written at once stays
    one record); the supervisor only posts them to its inbox.
    """

    def __init__(self, on_text: Callable[[str], None]):
        self._on_text = on_text
        self._saved = (os.dup(1), os.dup(2))
        self.stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        threading.Thread(target=self._pump, name="stray-output", daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_end, 65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            complete, _, pending = pending.rpartition(b"\n")
            if len(pending) > 16384:        # no newline in sight: do not hold it forever
                complete, pending = complete + b"\n" + pending, b""
            if complete.strip():
                self._on_text(complete.decode("utf-8", "replace").strip("\n")[:16384])

    def restore(self) -> None:
        """Point fds 1 and 2 back at where they were (the pipe stays for processes still holding it)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)


class LineBudget:
    """At most `per_window` log lines per key per `window_s`; the rest are counted, then summarised.

    A flood of identical problems (junk on a queue, a failing stage) must not become a log storm:
    `allow(key)` says whether this occurrence gets its own line; `summaries()` returns
    (key, suppressed count) once for every window that ended with lines held back.
    """

    def __init__(self, per_window: int = 5, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.per_window, self.window_s, self._clock = per_window, window_s, clock
        self._windows: dict[Any, list[float]] = {}     # key -> [started, lines, suppressed]
        self._ended: list[tuple[Any, int]] = []

    def allow(self, key: Any) -> bool:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.window_s:
            if window is not None and window[2]:
                self._ended.append((key, int(window[2])))
            window = self._windows[key] = [now, 0, 0]
        if window[1] < self.per_window:
            window[1] += 1
            return True
        window[2] += 1
        return False

    def summaries(self) -> list[tuple[Any, int]]:
        now = self._clock()
        ended, self._ended = self._ended, []
        for key, window in list(self._windows.items()):
            if now - window[0] >= self.window_s:
                if window[2]:
                    ended.append((key, int(window[2])))
                del self._windows[key]
        return ended
