"""Resident memory (RSS) of the daemon's processes, read from /proc/<pid>/statm (Linux).

RSS counts each process's shared library pages in full, so the sum over processes is an upper
bound of what the daemon holds (benchmarks/scale.py also reports the proportional share, PSS).
"""
from __future__ import annotations

import os
from typing import Mapping

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | None) -> int | None:
    """The resident set of `pid` in bytes; None when there is no such process (or no /proc)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def memory_view(pids: Mapping[str, int | None], trainer_pid: int | None) -> dict[str, int | None]:
    """RSS per process (supervisor and roles; None for one not running), their total, and the
    trainer's apart: it runs only while training and is not part of the daemon's standing cost."""
    view = {name: rss_bytes(pid) for name, pid in pids.items()}
    view["total_without_trainer"] = sum(v for v in view.values() if v is not None)
    view["trainer"] = rss_bytes(trainer_pid)
    return view
