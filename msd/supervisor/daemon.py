"""`msd run`: wire the arbiter to the outside world and run it in the foreground.

Order matters: the metrics directory is set before anything imports prometheus_client's
multiprocess machinery, signal handlers are installed before children start, and every
thread only posts to the arbiter's inbox.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from msd.metrics_dir import prepare_multiprocess_dir, remove_multiprocess_dir
from msd.logs import StrayOutput
from msd.config import Config
from msd.supervisor.arbiter import Arbiter
from msd.supervisor.control import ControlServer
from msd.supervisor.host import ProcessHost
from msd.supervisor.http import start_http
from msd.supervisor.inbox import Event, Inbox
from msd.supervisor.watcher import ConfigWatcher
from msd.systemd import Notifier

log = logging.getLogger("msd.supervisor")


def _install_signal_handlers(inbox: Inbox) -> None:
    def stop(signum, _frame):
        inbox.post(Event("stop", {"reason": f"received {signal.Signals(signum).name}"}))

    def reload(_signum, _frame):
        inbox.post(Event("reload", {"source": "SIGHUP"}))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def _capture_stray_output(inbox: Inbox) -> StrayOutput:
    """From here on, what any msd process writes to fds 1/2 outside logging becomes a log line."""
    stray = StrayOutput(lambda text: inbox.post(Event("stray_output", {"text": text})))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stray.stream)
    return stray


def serve(config: Config, prom_dir: Path | None = None) -> int:
    """Run the supervisor; `prom_dir` is the metrics directory prepared before prometheus_client was imported."""
    prom_dir = prom_dir or prepare_multiprocess_dir()
    inbox = Inbox()
    stray = _capture_stray_output(inbox)
    notifier = Notifier()
    arbiter = Arbiter(config, ProcessHost(), notifier, inbox=inbox)
    control = ControlServer(config.control.socket, inbox)
    watcher = ConfigWatcher(config.source, inbox)
    http = None
    try:
        control.start()
        _install_signal_handlers(inbox)
        watcher.start()
        if config.metrics.port:
            http = start_http(config.metrics.host, config.metrics.port, lambda: arbiter.health,
                              lambda: arbiter.lease_view()["role"] if config.leadership.enabled else None)
        log.info("msd starting", extra={"config_file": str(config.source),
                                        "control_socket": str(config.control.socket),
                                        "metrics_port": config.metrics.port})
        code = arbiter.run()
        log.info("msd stopped (exit code %d)", code)
        return code
    finally:
        watcher.stop()
        control.close()
        if http is not None:
            http.shutdown()
        notifier.close()
        remove_multiprocess_dir(prom_dir)
        stray.restore()
