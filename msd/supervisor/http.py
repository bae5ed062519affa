"""`/metrics` (merged multiprocess Prometheus view) and `/healthz` (200 healthy, 503 + reasons)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from msd import metrics

HealthSource = Callable[[], tuple[bool, list[str]]]


def start_http(host: str, port: int, health: HealthSource,
               role: Callable[[], str | None] = lambda: None) -> ThreadingHTTPServer:
    """`role` says "leader" or "standby" in /healthz (None: leadership is off, no field): a
    healthy standby answers 200 too."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._send(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/healthz":
                ok, reasons = health()
                who = role()
                body = json.dumps({"healthy": ok, **({"role": who} if who else {}), "problems": reasons}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:   # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
