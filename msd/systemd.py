"""sd_notify for the supervisor (Type=notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Off systemd (no NOTIFY_SOCKET) every call is a no-op. On systemd a datagram is sent without
ever waiting: the socket is non-blocking, so when systemd does not read it (its queue holds a
handful of datagrams) a notification is dropped and counted, and the supervisor loop, with
its respawns and its control socket, goes on. A failure is logged once per kind of error.

`watchdog()` sends `WATCHDOG=1` at most every half of `WATCHDOG_USEC` (sd_watchdog_enabled(3):
only when WATCHDOG_PID is unset or ours); without a watchdog interval it sends nothing, since
systemd is not waiting for one.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

from msd import metrics

log = logging.getLogger("msd.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic):
        env = os.environ if env is None else env
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._warned: set[str] = set()
        self._clock = clock
        self._last_ping: float | None = None
        self.dropped = 0
        self.watchdog_interval_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram; False (never a wait) when it could not be sent right now."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._address)
            return True
        except OSError as exc:
            self.dropped += 1
            metrics.NOTIFY_DROPPED.inc()
            kind = type(exc).__name__
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning("cannot notify systemd at %s (dropped, not waited for; said once): %s",
                            self._address, exc)
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        """WATCHDOG=1 if half the watchdog interval has passed since the last ping sent."""
        if self.watchdog_interval_s is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s / 2:
            return False
        sent = self.notify("WATCHDOG=1")
        if sent:
            self._last_ping = now
        return sent

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets newer systemd match RELOADING=1 to this reload (sd_notify(3)).
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None     # meant for another process (e.g. inherited)
    return int(usec) / 1e6


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()   # abstract namespace socket
    if value.startswith("/"):
        return value
    return None  # vsock and other address families are not used by msd's unit
