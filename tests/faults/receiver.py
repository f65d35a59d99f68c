"""A real webhook receiver on 127.0.0.1 that counts what it accepted, by Idempotency-Key.

It can be taken down (nothing listens on its port: connection refused), made slow (it answers
after the notifier's timeout, having read the request: a real receiver would have acted on it)
and brought back. Every request it answered 2xx, or read in full while slow, counts as accepted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shared.embedded import free_port


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: Counter[str] = Counter()
        self.requests = 0
        self.slow_seconds = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                key = self.headers.get("Idempotency-Key") or "<none>"
                with receiver._lock:
                    receiver.requests += 1
                    receiver.accepted[key] += 1
                if receiver.slow_seconds:
                    time.sleep(receiver.slow_seconds)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass  # the notifier gave up waiting (its timeout)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        return Handler

    def up(self) -> None:
        if self._server is not None:
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def accepted_for(self, keys: set[str]) -> Counter[str]:
        with self._lock:
            return Counter({k: n for k, n in self.accepted.items() if k in keys})

    def close(self) -> None:
        self.down()
