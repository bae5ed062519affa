"""The control socket (Unix stream, mode 0600): one request frame in, one reply frame out.

Connection threads never touch supervisor state: they post a `control` event with a reply
slot and wait for the arbiter loop to answer.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from pathlib import Path

from msd.errors import ProtocolError
from msd.supervisor import protocol
from msd.supervisor.inbox import Event, Inbox

log = logging.getLogger("msd.control")
REPLY_TIMEOUT_S = 10.0


class ControlServer:
    def __init__(self, path: Path, inbox: Inbox):
        self.path = Path(path)
        self._inbox = inbox
        self._sock: socket.socket | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_if_live(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)   # the socket is born 0600: no window where others may connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="control", daemon=True).start()

    def close(self) -> None:
        """Stop serving; the socket file is removed only by the instance that bound it, so a
        second msd refused at start never deletes the running daemon's socket."""
        self._closed.set()
        if self._sock is None:
            return
        self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(REPLY_TIMEOUT_S)
            try:
                request = protocol.read_frame(conn)
                reply = self._ask_arbiter(request)
                protocol.write_frame(conn, reply)
            except ProtocolError as exc:
                _try_send(conn, protocol.error(str(exc)))
            except OSError as exc:
                log.debug("control connection dropped: %s", exc)

    def _ask_arbiter(self, request: dict) -> dict:
        if not isinstance(request.get("cmd"), str) or not isinstance(request.get("args", {}), dict):
            return protocol.error("a request needs a string 'cmd' and an object 'args'")
        slot: queue.SimpleQueue = queue.SimpleQueue()
        self._inbox.post(Event("control", {"request": request}, reply=slot))
        try:
            return slot.get(timeout=REPLY_TIMEOUT_S)
        except queue.Empty:
            return protocol.error(f"the supervisor did not answer within {REPLY_TIMEOUT_S:g}s")


def _try_send(conn: socket.socket, message: dict) -> None:
    try:
        protocol.write_frame(conn, message)
    except OSError:
        pass


def _refuse_if_live(path: Path) -> None:
    """Remove a stale socket file, but never steal the socket of a daemon that is running."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise RuntimeError(f"another msd is already answering on {path}")
