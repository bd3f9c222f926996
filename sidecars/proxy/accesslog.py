"""One JSON line per request on stdout, written cheaply.

structlog's processor chain per request would cost more than proxying the request, and so
would a dict through orjson: lines are formatted straight to bytes by one ``%`` per line,
collected, and written once per event loop iteration. What is the same for every line of an
iteration (the timestamp, the sidecar) is formatted once per iteration, as nginx caches its
time per event loop turn: lines answered in one iteration share a timestamp, their durations
stay exact. Values a client chose are escaped as JSON strings; the request ids the sidecar
makes need no escaping, and user agents repeat, so their JSON form is cached.
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
# The order of every other sidecar event (observability._Envelope), then the request's fields.
_PREFIX = (
    b'{"timestamp":"%b.%06dZ","level":"info","sidecar":%b,"logger":"sidecars.proxy.access",'
    b'"event":"access",'
)
_LINE = (
    b'%b"upstream":%b,"method":"%b","path":"%b","status":%b,"attempts":%b,"duration":%.6f,'
    b'"bytes":%b,"request_id":"%b","remote_addr":"%b","user_agent":%b%b'
)
_END = b"}\n"
# With trace context: the trace, the sidecar's span, and the client's span (null: a new trace).
_TRACE_END = b',"trace_id":"%b","span_id":"%b","parent_span_id":%b}\n'
# Small numbers as text: a list index and %b cost less than %d.
_NUMBERS = [b"%d" % n for n in range(1024)]
# Distinct user agents whose JSON form is kept; past it the cache starts again.
_USER_AGENTS_MAX = 256


def json_string(value: bytes) -> bytes:
    """``value`` as a JSON string (bytes that are not UTF-8 become U+FFFD)."""
    if _UNSAFE.search(value) is None:
        return b'"' + value + b'"'
    return orjson.dumps(value.decode("utf-8", "replace"))


def _json_inner(value: bytes) -> bytes:
    """``value`` as the inside of a JSON string."""
    return orjson.dumps(value.decode("utf-8", "replace"))[1:-1]


def _trace_end(exchange: Exchange) -> bytes:
    parent = exchange.parent_id
    return _TRACE_END % (
        exchange.trace_id,
        exchange.span_id,
        b"null" if parent is None else b'"' + parent + b'"',
    )


class AccessLog:
    __slots__ = (
        "_end_of_iteration",
        "_lines",
        "_prefix",
        "_second",
        "_second_text",
        "_sidecar",
        "_stream",
        "_user_agents",
    )

    def __init__(
        self, end_of_iteration: EndOfIteration, sidecar: str, stream: BinaryIO | None = None
    ) -> None:
        self._end_of_iteration = end_of_iteration
        self._sidecar = orjson.dumps(sidecar)
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._lines: list[bytes] = []
        self._prefix = b""
        self._second = -1
        self._second_text = b""
        self._user_agents: dict[bytes, bytes] = {}

    def write(self, exchange: Exchange, status: int, duration: float) -> None:
        lines = self._lines
        if not lines:
            self._end_of_iteration.defer(self.flush)
            self._prefix = self._iteration_prefix()
        target = exchange.target
        if _UNSAFE.search(target) is not None:
            target = _json_inner(target)
        user_agent = exchange.user_agent
        if user_agent is not None:
            user_agent = self._user_agents.get(user_agent) or self._user_agent(user_agent)
        attempt = exchange.attempt
        sent = exchange.bytes_sent
        lines.append(
            _LINE
            % (
                self._prefix,
                exchange.route.json_name,
                exchange.method,
                target,
                _NUMBERS[status],  # 100-599, or nginx's 499
                _NUMBERS[attempt] if attempt < 1024 else b"%d" % attempt,
                duration,
                _NUMBERS[sent] if sent < 1024 else b"%d" % sent,
                (
                    _json_inner(exchange.request_id)
                    if exchange.request_id_given and _UNSAFE.search(exchange.request_id)
                    else exchange.request_id
                ),
                exchange.client.peer,
                b"null" if user_agent is None else user_agent,
                _END if not exchange.span_id else _trace_end(exchange),
            )
        )

    def flush(self) -> None:
        lines = self._lines
        if not lines:
            return
        self._lines = []
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            # stdout gone (closed pipe): the access log is best effort, the proxy keeps serving.
            pass

    def _iteration_prefix(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return _PREFIX % (self._second_text, int((now - second) * 1e6), self._sidecar)

    def _user_agent(self, value: bytes) -> bytes:
        cache = self._user_agents
        if len(cache) >= _USER_AGENTS_MAX:
            cache.clear()
        text = cache[value] = json_string(value)
        return text
