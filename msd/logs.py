"""JSON logging: one writer (the supervisor's stdout), every line with role, pid and trace id.

Children never write logs themselves: they send records over their pipe (see
msd.roles.runtime.PipeLogHandler) and the supervisor re-emits them here, so lines from
several processes never interleave mid-line.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _RoleDefaults(logging.Filter):
    """Lines from the supervisor itself carry role=supervisor and its pid."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = "supervisor"
        if not hasattr(record, "pid"):
            record.pid = os.getpid()
        return True


def make_handler(stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(FORMAT, rename_fields={"levelname": "level", "asctime": "time"},
                                       timestamp=False))
    handler.addFilter(_RoleDefaults())
    return handler


def setup(level: str, stream: TextIO | None = None) -> logging.Handler:
    root = logging.getLogger()
    handler = make_handler(stream)
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.WARNING)
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
