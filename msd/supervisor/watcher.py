"""Turns changes to the config file into one `reload` event (cf. dramatiq's watcher).

Editors save in different ways (write in place, write a temp file and rename it over the
original, delete and recreate), so the directory is watched and any event touching the file's
name counts; a burst of such events within `settle_s` becomes a single reload.
"""
from __future__ import annotations

import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from msd.supervisor.inbox import Event, Inbox


class ConfigWatcher(FileSystemEventHandler):
    def __init__(self, path: Path, inbox: Inbox, settle_s: float = 0.15):
        self.path = Path(path).resolve()
        self._inbox = inbox
        self._settle_s = settle_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._observer = Observer()

    def start(self) -> None:
        self._observer.schedule(self, str(self.path.parent), recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = {event.src_path, getattr(event, "dest_path", "") or ""}
        if not any(p and Path(str(p)).resolve() == self.path for p in paths):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._settle_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        self._inbox.post(Event("reload", {"source": "file change"}))
