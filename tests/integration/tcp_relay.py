"""A TCP relay in front of the real broker that can withhold the broker's replies and cut the line.

It reproduces what a broker-side close does to a publish in flight, deterministically: the
client's frames reach the broker (which routes the message and sends its confirm), the confirm
is held back, then the connection is cut, so the client never hears it.
"""
from __future__ import annotations

import socket
import threading


class Relay:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672)):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()    # set: bytes from the broker are dropped, not forwarded
        self.flowing = threading.Event()    # clear: bytes from the broker wait (paused), then go on
        self.flowing.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def hold(self) -> None:
        """From now on the client hears nothing from the broker (its confirms included)."""
        self.holding.set()

    def pause(self) -> None:
        """From now on the broker's bytes (confirms included) wait in the relay until `resume`."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        """Close every relayed connection on both sides; later connections are relayed normally."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.holding.clear()
        self.flowing.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return      # closed
            broker = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, broker]
            threading.Thread(target=self._pump, args=(client, broker, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_broker: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_broker:
                    self.flowing.wait()
                if not (from_broker and self.holding.is_set()):
                    target.sendall(data)
        except OSError:
            pass        # cut
