"""The directory of Prometheus' multiprocess files, prepared before prometheus_client is imported.

prometheus_client decides once, when it is first imported, whether values live in memory or in
files under PROMETHEUS_MULTIPROC_DIR. The supervisor must therefore set the variable before
anything imports `msd.metrics`; otherwise its own metrics (role restarts, children running,
config reloads, training runs, dropped sd_notify datagrams) stay in its memory and never reach a
scrape, which merges only the files. Stdlib only, for that reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(base: str | None = None) -> Path:
    """Create an empty directory for this run's metric files and point the environment at it."""
    runtime = base or os.environ.get("RUNTIME_DIRECTORY")
    path = Path(tempfile.mkdtemp(prefix="msd-prom-", dir=runtime))
    os.environ[ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
