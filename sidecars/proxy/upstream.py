"""The upstream side of one HTTP/1.1 connection: sends request bytes, parses response heads
with llhttp (httptools) to judge outcomes, and streams response bodies to its exchange.

A connection serves one exchange at a time (no pipelining towards upstreams) and goes back to
its pool only when the response ended cleanly with keep-alive and the whole request was sent.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpResponseParser,
)

from sidecars.observability import LogThrottle, get_logger
from sidecars.proxy import headers as h
from sidecars.proxy.connection import Connection
from sidecars.proxy.headers import STANDARD_STATUS
from sidecars.proxy.timer import DeadlineTimer

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.pool import ConnectionPool


_RESPONSE_SPELLINGS: Final = h.RESPONSE_HEADERS.by_spelling
log: Final = get_logger("sidecars.proxy")


class _HeadResponseEnd(Exception):
    """Raised from on_headers_complete to stop llhttp after the head of a response to HEAD
    (httptools cannot tell llhttp that such a response has no body)."""


class _OutOfStep(Exception):
    """A response began where none was asked for (bytes after a complete response, or a
    second final answer to one request)."""


class _BadStatus(Exception):
    """A status outside 100-599: not an HTTP response (llhttp takes any three digits)."""


_BYTES_AFTER_LOGGED: Final = LogThrottle()  # an upstream that does it does it on every response


def _count_bytes_after_response(exchange: Exchange) -> None:
    route = exchange.route
    route.metrics.upstream_errors["bad_response"].inc()
    held_back = _BYTES_AFTER_LOGGED.due()
    if held_back is not None:
        log.warn("upstream_bytes_after_response", upstream=route.name, held_back=held_back)


def _after_heads(data: bytes, heads: int) -> bool:
    """Whether ``data``, which holds ``heads`` whole heads from its start (llhttp takes only
    CRLF line ends here), has more than line ends after the last of them: the rest of the read
    that brought a response to HEAD, which llhttp was stopped before reading."""
    end = 0
    for _ in range(heads):
        found = data.find(b"\r\n\r\n", end)
        if found < 0:
            return False
        end = found + 4
    return bool(data[end:].strip(b"\r\n"))


class UpstreamConnection(asyncio.Protocol, Connection):
    __slots__ = (
        "_interim",
        "_parser",
        "chunked",
        "closed",
        "codings",
        "content_length",
        "exchange",
        "head_bytes",
        "head_deadline",
        "head_done",
        "head_only",
        "idle_since",
        "interim_heads",
        "keep_alive",
        "listed",
        "loop",
        "parts",
        "pool",
        "pooled",
        "reading_paused",
        "reads",
        "reads_checked",
        "reason",
        "received",
        "retry_after",
        "reused",
        "special",
        "status",
        "status_line",
        "timer",
        "transport",
        "tunnel",
        "until_eof",
        "upgrade",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.timer = DeadlineTimer(self.loop, self._on_timer, pool.timer_clock)
        self.closed = False
        self.pooled = False
        self.reused = False
        self.idle_since = 0.0
        self.head_deadline = math.inf
        self.reads = 0  # a count, not a time: checking the clock per read costs more
        self.reads_checked = 0
        self.reading_paused = False
        self.tunnel: asyncio.Transport | None = None
        # The response being read. What its head sets is read only once the head is done;
        # the rest is reset by attach() for each request.
        self.head_bytes = 0
        self.head_done = False
        self.head_only = False
        self.received = False
        self._interim = False
        self.interim_heads = 0  # 1xx heads read before the response's own
        self.reason = b""
        self.parts: list[bytes] = []  # header name, b": ", value, b"\r\n", ... to relay
        self.content_length: bytes | None = None
        self.status = 0
        self.status_line = b""  # for the client: HTTP/1.1, the status, the upstream's phrase
        self.keep_alive = True
        self.until_eof = False
        # Set by rarer headers; reset (by attach) only after a response that had one.
        self.special = False
        self.chunked = False
        # Transfer codings other than a final chunked (b"gzip"), relayed to the client.
        self.codings: bytes | None = None
        self.listed: list[bytes] | None = None
        self.retry_after: bytes | None = None
        self.upgrade: bytes | None = None

    # -- used by the exchange ---------------------------------------------------------------

    def attach(self, exchange: Exchange, head_deadline: float, head_only: bool) -> None:
        """Serve ``exchange``'s request: a new response is expected by ``head_deadline``."""
        self.exchange = exchange
        self.head_deadline = head_deadline
        self.timer.set(head_deadline)
        self.head_bytes = 0
        self.head_done = False
        self.head_only = head_only
        self.received = False
        self.interim_heads = 0
        self.reason = b""
        self.parts = []
        self.content_length = None
        if self.special:
            self.special = False
            self.chunked = False
            self.codings = None
            self.listed = None
            self.retry_after = None
            self.upgrade = None

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self.pool.outbox.write(self.transport, data)

    def reuse(self) -> None:
        self.pool.put(self)

    def close(self) -> None:
        """Close once the bytes written so far are out."""
        self.exchange = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.pool.outbox.close(self.transport)
            self.pool.forget(self)

    def abort(self) -> None:
        self.exchange = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
            self.pool.forget(self)

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def start_tunnel(self, peer: asyncio.Transport, data: bytes) -> None:
        """After 101 Switching Protocols: relay raw bytes to ``peer`` from now on."""
        self.exchange = None
        self.tunnel = peer
        self.timer.cancel()
        self.reads = 0
        if data:
            self.pool.outbox.write(peer, data)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.reads += 1  # activity, for the tunnel's idle timeout (the client side's timer)
            self.pool.outbox.write(self.tunnel, data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle keep-alive connection: not a response to anything we sent.
            self.close()
            return
        self.received = True
        self.reads += 1
        if (
            not self.head_done
            and self.head_bytes + len(data) > self.pool.max_head_size
            and self._head_too_large(data)
        ):
            self._bad_response(exchange)
            return
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            if self.exchange is exchange:
                exchange.on_upstream_upgrade(self, data[upgrade.args[0] :])
            return
        except HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadResponseEnd):
                self._parser = HttpResponseParser(self)
                if not self.head_bytes and _after_heads(data, self.interim_heads + 1):
                    self._bad_response(exchange)  # delivered: bytes after it
            elif isinstance(error.__context__, (_OutOfStep, _BadStatus)):
                self._bad_response(exchange)
                return
            else:
                raise
        except HttpParserError:
            self._bad_response(exchange)
            return
        if self.exchange is exchange:
            if not self.head_done:
                self.head_bytes += len(data)
            exchange.client.flush()

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head being read passes the bound in ``data``, the read that may also
        complete it (and hold the start of the body). Checked before llhttp sees the bytes:
        it keeps a header it has not seen the end of, so an endless head would grow without
        bound."""
        end = data.find(b"\r\n\r\n")
        return end < 0 or self.head_bytes + end + 4 > self.pool.max_head_size

    def _bad_response(self, exchange: Exchange) -> None:
        if self.exchange is exchange:
            exchange.on_upstream_failure(self, "bad_response")
        elif not self.closed:
            # The response was delivered and the connection kept: the bytes came after it.
            self.abort()
            _count_bytes_after_response(exchange)

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            if self.tunnel.can_write_eof():
                self.pool.outbox.write_eof(self.tunnel)
                return True
            return False
        exchange = self.exchange
        if exchange is not None and self.until_eof and self.head_done:
            # A response delimited by the connection's end is complete now.
            self.keep_alive = False
            exchange.on_response_end(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.timer.cancel()
        self.pool.forget(self)
        if self.tunnel is not None:
            self.pool.outbox.close(self.tunnel)
            return
        exchange = self.exchange
        if exchange is None:
            return
        if self.until_eof and self.head_done:
            self.keep_alive = False
            exchange.on_response_end(self)
        else:
            exchange.on_upstream_failure(self, "reset")

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause_reading()  # the client's side of the tunnel
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.client.pause_reading(exchange.client.PAUSED_BY_UPSTREAM)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume_reading()
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.client.resume_reading(exchange.client.PAUSED_BY_UPSTREAM)

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:
            raise _OutOfStep  # bytes after the end of the response

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # in pieces when the status line came in more than one read

    def on_header(self, name: bytes, value: bytes) -> None:
        role = _RESPONSE_SPELLINGS.get(name)
        if role is None:
            role = h.RESPONSE_HEADERS.learn(name)
        if not role:  # FORWARD
            self.parts += (name, b": ", value, b"\r\n")
            return
        if role == h.CONTENT_LENGTH:
            self.content_length = value
        elif role == h.CONNECTION:
            if value not in h.PLAIN_CONNECTION:
                listed = h.connection_listed(value)
                if listed:
                    self.special = True
                    self.listed = (self.listed or []) + listed
        elif role == h.TRANSFER_ENCODING:
            self.special = True
            self._take_transfer_encoding(value)
        elif role == h.RETRY_AFTER:
            self.special = True
            self.retry_after = value
            self.parts += (name, b": ", value, b"\r\n")
        elif role == h.UPGRADE:
            self.special = True
            self.upgrade = value

    def _take_transfer_encoding(self, value: bytes) -> None:
        """Chunked framing only when chunked is the last coding; a response whose codings
        end otherwise is delimited by the connection's end (RFC 9112 6.3), as llhttp reads
        it. The other codings describe the body and are relayed."""
        previous = self.codings  # a second Transfer-Encoding line continues the list
        if self.chunked:
            previous = previous + b", chunked" if previous else b"chunked"
        listed = previous + b", " + value if previous else value
        before, _, last = listed.rpartition(b",")
        self.chunked = last.strip().lower() == b"chunked"
        self.codings = (before.strip() or None) if self.chunked else listed.strip()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 100 or status > 599:
            raise _BadStatus
        if status < 200 and status != 101:
            # Interim answers (100 Continue, 103 Early Hints) are not relayed: the sidecar
            # answers Expect itself, and the final answer follows.
            self._interim = True
            self.interim_heads += 1
            self.reason = b""
            self.parts = []
            self.listed = None
            self.content_length = None
            return
        if self.head_done:
            raise _OutOfStep  # a second answer to one request
        exchange = self.exchange
        assert exchange is not None
        self.status = status
        standard = STANDARD_STATUS.get(status)
        self.status_line = (
            standard[1]
            if standard is not None and standard[0] == self.reason
            else h.status_line(status, self.reason)
        )
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self.listed:
            self.parts = h.without_listed(self.parts, self.listed)
        self.until_eof = (
            self.content_length is None
            and not self.chunked
            and not self.head_only
            and status not in (101, 204, 304)
        )
        # The head deadline's timer is still armed; when it fires it watches body idleness.
        exchange.on_response_head(self)
        if self.head_only and self.exchange is exchange and not self.closed:
            exchange.on_response_end(self)
            raise _HeadResponseEnd

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        exchange = self.exchange
        if exchange is not None and self.status != 101:
            exchange.on_response_end(self)

    # -- timeouts ---------------------------------------------------------------------------

    def _on_timer(self) -> None:
        now = self.pool.timer_clock()
        exchange = self.exchange
        if exchange is None:
            if self.pooled:
                expires = self.idle_since + self.pool.idle_timeout
                if now >= expires:
                    self.close()
                else:
                    self.timer.set(expires)
            return
        if not self.head_done:
            if now >= self.head_deadline:
                exchange.on_upstream_failure(self, "timeout")
            else:
                self.timer.set(self.head_deadline)
            return
        # Streaming the body: nothing read for a whole idle period is a stall (unless reading
        # is paused: then the client is the slow one).
        if self.reads == self.reads_checked and not self.reading_paused:
            exchange.on_upstream_failure(self, "timeout")
        else:
            self.reads_checked = self.reads
            self.timer.set(now + self.pool.body_idle_timeout)
