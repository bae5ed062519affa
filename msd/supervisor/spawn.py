"""What the supervisor hands a child process, and where the child starts.

A child is started with the `spawn` method at `child_entry(spec)`: the role runtime is imported
there, inside the child, by name (`ROLE_RUNTIME`), so the supervisor itself never imports
msd.roles (DESIGN §3). The exit codes are the one vocabulary both sides use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_TIMED_OUT = 4
EXIT_FENCED = 5          # a write was refused: another instance leads now (msd.errors.Fenced)

ROLE_RUNTIME = "msd.roles.runtime.process"


@dataclass
class ChildSpec:
    """Everything a child needs; pickled once by `spawn`."""
    name: str
    module: str                              # the role's module with `run(ctx) -> int`
    config: Any                              # msd.config.Config
    conn: Any                                # multiprocessing Connection to the supervisor
    queues: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, Any] = field(default_factory=dict)


def child_entry(spec: ChildSpec) -> None:
    """The target of every spawned child (runs in the child only)."""
    importlib.import_module(ROLE_RUNTIME).child_main(spec)
