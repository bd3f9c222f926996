"""One JSON line per request on stdout, written cheaply.

structlog's processor chain per request would cost more than proxying the request, and so
would a dict through orjson: lines are formatted straight to bytes (values a client chose are
escaped as JSON strings), collected, and written once per event loop iteration.
"""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, BinaryIO

import orjson

from sidecars.proxy.batch import EndOfIteration

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange

# Bytes that need escaping in a JSON string, or may not be UTF-8.
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_LINE = (
    b'{"timestamp":"%b.%06dZ","level":"info","event":"access","sidecar":%b,"method":"%b",'
    b'"path":%b,"status":%d,"upstream":%b,"attempts":%d,"duration":%.6f,"bytes":%d,'
    b'"request_id":%b,"remote_addr":"%b","user_agent":%b}'
)


def json_string(value: bytes) -> bytes:
    """``value`` as a JSON string (bytes that are not UTF-8 become U+FFFD)."""
    if _UNSAFE.search(value) is None:
        return b'"' + value + b'"'
    return orjson.dumps(value.decode("utf-8", "replace"))


class AccessLog:
    __slots__ = ("_end_of_iteration", "_lines", "_second", "_second_text", "_sidecar", "_stream")

    def __init__(
        self, end_of_iteration: EndOfIteration, sidecar: str, stream: BinaryIO | None = None
    ) -> None:
        self._end_of_iteration = end_of_iteration
        self._sidecar = orjson.dumps(sidecar)
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._lines: list[bytes] = []
        self._second = -1
        self._second_text = b""

    def write(self, exchange: Exchange, status: int, duration: float) -> None:
        lines = self._lines
        if not lines:
            self._end_of_iteration.defer(self.flush)
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        head = exchange.head
        user_agent = head.user_agent
        lines.append(
            _LINE
            % (
                self._second_text,
                int((now - second) * 1e6),
                self._sidecar,
                head.method,
                json_string(head.target),
                status,
                exchange.route.json_name,
                exchange.attempt,
                duration,
                exchange.bytes_sent,
                json_string(head.request_id),
                exchange.client.peer,
                b"null" if user_agent is None else json_string(user_agent),
            )
        )

    def flush(self) -> None:
        lines = self._lines
        if not lines:
            return
        self._lines = []
        lines.append(b"")
        try:
            self._stream.write(b"\n".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            # stdout gone (closed pipe): the access log is best effort, the proxy keeps serving.
            pass
