"""A real HTTP server the tests run as a log destination (NDJSON collector, OTLP receiver).

It keeps every request it took (the body un-gzipped), answers with the statuses a test queues
(``refuse``), and can be stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import LOOPBACK


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    raw: bytes = b""
    """The body as it came (gzipped when it was)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


class HttpReceiver:
    def __init__(self, answer: Callable[[Received], Answer] | None = None) -> None:
        self.port = 0
        self.taken: list[Received] = []
        self.refused: list[Received] = []
        self.queued: deque[Answer] = deque()
        self.answer = answer or (lambda request: Answer(200, {}))
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def refuse(
        self, count: int, status: int, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (not taken)."""
        with self._lock:
            self.queued.extend(Answer(status, headers or {}, body) for _ in range(count))

    def _handle(self, request: Received) -> Answer:
        with self._lock:
            if self.queued:
                self.refused.append(request)
                return self.queued.popleft()
        answer = self.answer(request)
        with self._lock:
            (self.taken if 200 <= answer.status < 300 else self.refused).append(request)
        return answer

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gzipped = self.headers.get("Content-Encoding") == "gzip"
                body = gzip.decompress(raw) if gzipped else raw
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver._handle(Received(self.path, headers, body, raw))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:  # kept-alive connections too: a stopped server answers nothing
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [request.body for request in self.taken]
