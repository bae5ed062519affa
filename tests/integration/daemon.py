"""Run the real daemon as a subprocess for integration tests.

Each `Daemon` gets its own database, vhost, control socket, metrics port and a real
NOTIFY_SOCKET datagram socket that records what the supervisor tells systemd.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from msd import ctl
from msd.supervisor import protocol

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def base_config(tmp: Path, dsn: str, amqp_url: str, **overrides: Any) -> dict[str, Any]:
    cfg = {
        "control": {"socket": str(tmp / "msd.sock")},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "INFO"},
        "database": {"dsn": dsn, "connect_timeout_s": 3},
        "rabbitmq": {"url": amqp_url.replace("guest:guest@", "guest@"), "password_env": "MSD_TEST_AMQP_PASSWORD",
                     "heartbeat_s": 10},
        "supervisor": {"stop_deadline_s": 8, "heartbeat_interval_s": 0.2, "heartbeat_timeout_s": 5,
                       "backoff_initial_s": 0.05, "stable_after_s": 1, "boot_timeout_s": 30},
        "consumer": {"ws_gateway_declare": "exact", "batch_wait_ms": 2},
    }
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


class NotifyListener:
    """A NOTIFY_SOCKET stand-in: collects every datagram the daemon sends.

    With `read=False` nobody reads it: its queue fills after a few datagrams, like a systemd
    that is busy or hung."""

    def __init__(self, path: Path, read: bool = True):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if read:
            self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.split("\n")]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.sock.close()


# systemd's watchdog interval for test daemons: pings every 1 s (half of it).
WATCHDOG_USEC = "2000000"


class Daemon:
    def __init__(self, tmp: Path, config: dict[str, Any], *, read_notify: bool = True,
                 env: dict[str, str] | None = None):
        self.tmp = tmp
        self.config = config
        self.config_path = tmp / "model-service.yaml"
        self.write_config(config)
        self.socket = Path(config["control"]["socket"])
        self.notify = NotifyListener(tmp / "notify.sock", read=read_notify)
        self.extra_env = dict(env or {})
        self.log_path = tmp / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, wait_ready: bool = True) -> "Daemon":
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "PYTHONPATH": str(ROOT),
               "MSD_TEST_AMQP_PASSWORD": "guest", "WATCHDOG_USEC": WATCHDOG_USEC, **self.extra_env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "msd.cli", "run", "-c", str(self.config_path)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait_ready:
            wait_for(lambda: "READY=1" in self.notify.lines() or self.proc.poll() is not None, 60, what="READY=1")
            assert self.proc.poll() is None, self.tail()
        return self

    def ctl(self, *args: str) -> tuple[int, str]:
        return _run_ctl(["-s", str(self.socket), *args])

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        reply = ctl.call(self.socket, protocol.request(cmd, **args), timeout=15)
        assert reply["ok"], reply
        return reply["result"]

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def role(self, name: str) -> dict[str, Any]:
        return self.status()["roles"][name]

    def wait_running(self, name: str, timeout: float = 10.0, other_than_pid: int | None = None) -> dict:
        def ready():
            role = self.role(name)
            return role if role["state"] == "RUNNING" and role["pid"] != other_than_pid else None
        return wait_for(ready, timeout, what=f"{name} RUNNING")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not stop within %ss\n%s" % (timeout, self.tail()))

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.notify.close()
            if getattr(self, "_log", None):
                self._log.close()


def _run_ctl(args: list[str]) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "msd.ctl", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    return out.returncode, out.stdout + out.stderr


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(daemon: "Daemon") -> list[int]:
    """SIGKILL the daemon's supervisor and every process under it at once (a host that dies)."""
    pids = [daemon.proc.pid] + descendants(daemon.proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.proc.wait(10)
    return pids
