"""The downstream side: one client connection, its requests parsed by llhttp (httptools).

Shaped like uvicorn's ``httptools_impl``: llhttp calls back per head element, filling the
``Exchange`` that then runs the request (an exchange is its request's head as well).
Pipelined requests are answered in order: the ones behind the active exchange wait in a
queue and reading pauses until they are served.
Writes are collected per read from either side and handed to the outbox, so a response head
and its first body bytes leave in one send, at the end of the loop iteration.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from sidecars.observability import get_logger
from sidecars.proxy import errors
from sidecars.proxy import headers as h
from sidecars.proxy.errors import SidecarError, bad_request
from sidecars.proxy.exchange import NEW, Exchange
from sidecars.proxy.headers import DROP, HOST
from sidecars.proxy.request import RequestHead
from sidecars.proxy.timer import DeadlineTimer

if TYPE_CHECKING:
    from sidecars.proxy.route import Route
    from sidecars.proxy.upstream import UpstreamConnection

# llhttp's error texts -> the reason counted in sidecar_bad_requests_total.
_PARSE_ERRORS: Final = (
    ("Transfer-Encoding can't be present with Content-Length", "content_length_and_chunked"),
    ("Content-Length", "invalid_content_length"),
    ("Transfer-Encoding", "invalid_transfer_encoding"),
    ("whitespace after header value", "obs_fold"),
    ("header token", "invalid_header_name"),
    ("header value char", "invalid_header_value"),
    ("chunk", "invalid_chunked_body"),
    ("Pause on PRI", "http2_preface"),
)
log: Final = get_logger("sidecars.proxy")

_REQUEST_SPELLINGS: Final = h.REQUEST_HEADERS.by_spelling
_TLS_RECORD: Final = 0x16  # first byte of a TLS ClientHello
# How long a refused client may go on sending before the connection is closed (nginx's
# lingering_time is 30 s; a refusal only needs the answer to arrive first).
_LINGER: Final = 2.0
# How long a keep-alive connection keeps its parser and its reusable exchange (about 1.7 KiB)
# once idle: a busy connection reuses them (making them again costs a few microseconds per
# request), one idle longer gives them back and makes new ones for its next request.
IDLE_RELEASE: Final = 0.5


def parse_error(error: HttpParserError, data: bytes) -> SidecarError:
    """The answer to input llhttp refused."""
    message = str(error)
    if isinstance(error, HttpParserInvalidMethodError):
        if data[:1] == bytes([_TLS_RECORD]):
            return bad_request("tls_on_plain_port", "TLS sent to a plain HTTP port")
        return bad_request("invalid_method", "not an HTTP/1.1 request")
    for fragment, reason in _PARSE_ERRORS:
        if fragment in message:
            return bad_request(reason, message)
    return bad_request("malformed", message)


class ClientConnection(asyncio.Protocol):
    # Why reading is paused (a bit each): resumed only when no reason is left.
    PAUSED_BY_UPSTREAM = 1  # the upstream is not taking the request body fast enough
    PAUSED_BY_BODY = 2  # the body passed the replay limit while no connection was ready
    PAUSED_BY_PIPELINE = 4  # requests are waiting behind the active one
    PAUSED_BY_UPGRADE = 8  # an Upgrade request waits for the upstream's 101
    PAUSED_FOR_GOOD = 16  # input refused: nothing more is read

    __slots__ = (
        "_begun",
        "_diverted",
        "_head",
        "_head_bytes",
        "_head_started",
        "_idle_since",
        "_in_head",
        "_lingering",
        "_parser",
        "_paused",
        "_queue",
        "_reads",
        "_reads_checked",
        "_receiving",
        "_starting",
        "_timer",
        "_upgrade_buffer",
        "active",
        "close_after",
        "closed",
        "closing",
        "draining",
        "loop",
        "out",
        "peer",
        "remote_addr",
        "route",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        self.loop = route.loop
        self.transport: asyncio.Transport | None = None
        # Made when the first bytes arrive, so a connection that never speaks costs less.
        self._parser: HttpRequestParser | None = None
        self._timer = DeadlineTimer(self.loop, self._on_timer, route.timer_clock)
        self.peer = b""
        self.remote_addr = ""
        self._head: Exchange | None = None  # the request being parsed while _in_head
        self._in_head = False
        # llhttp has begun a message not yet complete (perhaps only its method's first bytes,
        # kept inside llhttp with no other callback yet): the parser is not given back idle.
        self._begun = False
        # When the head being read began: accept for the first request, the first byte of
        # the next one on keep-alive; 0: none begun.
        self._head_started = 0.0
        self._head_bytes = 0
        self._receiving: Exchange | None = None
        self._starting: Exchange | None = None
        self.active: Exchange | None = None
        # Pipelined requests waiting: rare and short; made for the first one (an idle
        # connection holds no empty list).
        self._queue: list[Exchange] | None = None
        # Bytes for the client, handed to the outbox together by flush().
        self.out: list[bytes] = []
        self._paused = 0
        self._reads = 0  # body reads: a count, not a time (a clock per read costs more)
        self._reads_checked = 0
        self._idle_since = 0.0  # when the last exchange ended; 0: none yet
        self._upgrade_buffer: bytearray | None = None
        self._lingering = False
        # Input no longer goes to the parser (lingering, tunnelled, kept for an upgrade, or
        # refused): one test on the hot path instead of four.
        self._diverted = False
        self.tunnel: UpstreamConnection | None = None
        self.write_paused = False
        self.close_after = False
        self.draining = False
        self.closing = False
        self.closed = False

    # -- used by exchanges ------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        out = self.out
        if out and not self.closing:
            assert self.transport is not None
            self.route.outbox.write(self.transport, out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def pause_reading(self, reason: int) -> None:
        if not self._paused and not self.closed:
            assert self.transport is not None
            self.transport.pause_reading()
        self._paused |= reason
        if reason == self.PAUSED_FOR_GOOD:
            self._diverted = True

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closed:
                assert self.transport is not None
                self.transport.resume_reading()

    def abort(self) -> None:
        """Cut the connection mid-response (what was sent so far still goes out)."""
        self.flush()
        self._close()

    def on_exchange_done(self, exchange: Exchange) -> None:
        self.active = None  # (on a closed connection too: no cycle left behind)
        if self.closed:
            return
        self.flush()
        if self.close_after:
            self._close(
                linger=not exchange.request_done or bool(self._paused & self.PAUSED_FOR_GOOD)
            )
            return
        queue = self._queue
        if queue:
            self.active = queue.pop(0)
            if not queue:
                self._queue = None
                self.resume_reading(self.PAUSED_BY_PIPELINE)
            self.loop.call_soon(self._start_next)
            return
        if self.draining:
            self._close()
            return
        # The connection's timer is always armed: when it fires it finds the connection idle
        # and measures from here (first to give back what the next request may make again).
        self._idle_since = now = self.route.timer_clock()
        self._timer.set(now + min(IDLE_RELEASE, self.route.idle_timeout))

    def start_tunnel(self, conn: UpstreamConnection, data: bytes) -> None:
        """Relay raw bytes both ways from now on (after the upstream's 101)."""
        assert self.transport is not None
        self.tunnel = conn
        self._diverted = True
        # A tunnel idle both ways for P_IDLE_TIMEOUT is closed (the timer counts the reads).
        self._reads_checked = self._reads = 0
        self._timer.set(self.route.timer_clock() + self.route.idle_timeout)
        conn.start_tunnel(self.transport, data)
        if self._upgrade_buffer:
            conn.write(bytes(self._upgrade_buffer))
        self._upgrade_buffer = None
        self.resume_reading(self.PAUSED_BY_UPGRADE)
        if self.write_paused:
            conn.pause_reading()

    def drain(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer."""
        self.draining = True
        if self.active is None and not self._in_head and self.tunnel is None:
            self._close()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote_addr, self.peer = _address(str(peer[0]) if peer else "")
        route = self.route
        route.connections.add(self)
        route.metrics.connections.inc()
        route.metrics.active_connections.inc()
        self._head_started = now = self.route.timer_clock()
        self._timer.set(now + route.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._diverted:
            self._diverted_data(data)
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._upgrade_buffer = bytearray(data[upgrade.args[0] :])
            self._diverted = True
            self.pause_reading(self.PAUSED_BY_UPGRADE)
            self.close_after = True  # unless the upstream agrees to switch protocols
        except HttpParserCallbackError as error:
            raise error.__context__ or error from None
        except HttpParserError as error:
            self._refuse(parse_error(error, data))
        if self._in_head or (self.active is None and not self.closing):
            # A head not complete in one read (perhaps not even its target yet): now its time
            # and size are watched.
            if not self._head_started:
                self._head_started = self.route.timer_clock()
            self._head_bytes += len(data)
            if self._head_bytes > self.route.max_header_size:
                self._refuse(errors.HEAD_TOO_LARGE)
            else:
                self._timer.set(self._head_started + self.route.header_timeout)
        starting = self._starting
        if starting is not None:
            self._starting = None
            starting.start()

    def _diverted_data(self, data: bytes) -> None:
        if self._lingering:
            return  # what a refused client still sends is read and dropped
        tunnel = self.tunnel
        if tunnel is not None:
            self._reads += 1
            tunnel.write(data)
        elif self._upgrade_buffer is not None:
            self._upgrade_buffer += data
        # else: input refused for good, dropped

    def eof_received(self) -> bool:
        if self._lingering:
            return False
        tunnel = self.tunnel
        if tunnel is not None:
            if tunnel.transport is not None and tunnel.transport.can_write_eof():
                self.route.outbox.write_eof(tunnel.transport)
                return True
            return False
        if self.active is None or self._receiving is not None:
            return False
        # The client half-closed after its request: answer, then close.
        self.close_after = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # The timer's callback, the parser's protocol and the exchange's client are this
        # connection: reference cycles. Broken here, a closed connection is freed at once
        # instead of by the cycle collector, which after a storm of connections ran too
        # rarely (a full pass) to give their memory back to the next ones.
        self._timer.close()
        self._parser = None
        self._head = self._receiving = self._starting = None
        route = self.route
        route.connections.discard(self)
        route.metrics.active_connections.dec()
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.close()
            return
        active = self.active
        if active is not None:
            active.on_client_gone()
        queue = self._queue
        if queue is not None:
            self._queue = None
            for waiting in queue:
                waiting.on_client_gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.active is not None:
            self.active.on_client_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.active is not None:
            self.active.on_client_resumed()

    # -- llhttp callbacks -------------------------------------------------------------------

    # A request begins with its target (llhttp has no other callback before it for a request
    # line, and an empty one is refused): on_message_begin is not needed, one callback less.

    def on_url(self, url: bytes) -> None:
        if self._in_head:  # more of a target that came in more than one read
            head = self._head
            assert head is not None
            head.target += url
            head.size += len(url)
            return
        self._in_head = True
        head = self._head
        if head is not None and head.reusable:  # the previous request ended cleanly: reused
            head.reset()
        else:  # still busy (pipelined requests wait behind it), or not used yet
            self._head = head = Exchange(self, self.route)
        head.target = url
        head.size = len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        assert head is not None
        head.size += len(name) + len(value) + 4
        role = _REQUEST_SPELLINGS.get(name)
        if role is None:
            role = h.REQUEST_HEADERS.learn(name)
        if not role:  # FORWARD
            head.lines += (name, b": ", value, b"\r\n")
        elif role == HOST and head.host is None:
            head.host = value  # on every request: spared a call
        elif role != DROP:
            _take_header(head, role, name, value)

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._in_head = False
        self._head_started = 0.0
        self._head_bytes = 0
        if self.closing:
            return  # bytes behind a request that ended the connection
        route = self.route
        parser = self._parser
        assert parser is not None
        method = head.method = parser.get_method()
        head.is_head = method == b"HEAD"
        # An exchange assumes HTTP/1.1 kept alive; only other requests pay for finding out
        # (get_http_version() formats a string).
        if not parser.should_keep_alive() or head.asked_keep_alive or self.draining:
            self._judge_version(head)
        if not head.request_id:
            head.request_id = route.request_ids.next()
        trace_context = route.trace_context
        if trace_context is not None and trace_context.begin(head):
            route.metrics.traceparent_replaced.inc()
        if head.upgrade is not None and not parser.should_upgrade():
            head.upgrade = None
        if head.listed:
            head.lines = h.without_listed(head.lines, head.listed)
        if not (
            head.error is None
            and head.target[:1] == b"/"
            and head.host is not None
            and head.content_length is None
            and head.size <= route.max_header_size
            and method != b"CONNECT"
        ):
            _judge_head(head, route)  # the common request needs none of its checks
        self._receiving = head
        if self.active is None:
            self.active = self._starting = head
        else:
            self._enqueue(head)
            self.pause_reading(self.PAUSED_BY_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self._reads += 1
        exchange = self._receiving
        if exchange is not None:
            exchange.on_request_body(body)

    def on_message_begin(self) -> None:
        self._begun = True
        if self.active is not None and not self._head_started:
            # The first bytes of a next request while one is active (pipelined): its head
            # is timed from here.
            self._head_started = self.route.timer_clock()

    def on_message_complete(self) -> None:
        self._begun = False
        exchange = self._receiving
        if exchange is not None:
            self._receiving = None
            exchange.on_request_end()

    def _judge_version(self, head: RequestHead) -> None:
        """A request other than HTTP/1.1 kept alive: HTTP/1.0 keeps the connection only when
        it asked (llhttp judged that), any other version is refused."""
        parser = self._parser
        assert parser is not None
        version = parser.get_http_version()
        head.http11 = version == "1.1"
        head.keep_alive = parser.should_keep_alive() and not self.draining
        if version not in ("1.1", "1.0") and head.error is None:
            head.error = bad_request("unsupported_version", f"HTTP/{version} not supported", 505)

    # -- refusals and timeouts --------------------------------------------------------------

    def _refuse(self, error: SidecarError) -> None:
        """Read nothing more; answer ``error`` after the requests already taken, then close."""
        in_head = self._in_head
        self.pause_reading(self.PAUSED_FOR_GOOD)
        self._in_head = False
        receiving = self._receiving
        if receiving is not None:
            # The broken part is a request body: that request gets the answer.
            self._receiving = None
            receiving.on_request_failed(error)
            return
        head = self._head
        exchange = head if in_head and head is not None else Exchange(self, self.route)
        exchange.error = error
        exchange.keep_alive = False
        exchange.request_id = exchange.request_id or self.route.request_ids.next()
        trace_context = self.route.trace_context
        if trace_context is not None and not exchange.trace_id:
            trace_context.begin(exchange)
        exchange.request_done = True
        if self.active is None:
            self.active = exchange
            exchange.start()
        else:
            self._enqueue(exchange)

    def _enqueue(self, exchange: Exchange) -> None:
        if self._queue is None:
            self._queue = [exchange]
        else:
            self._queue.append(exchange)

    def _start_next(self) -> None:
        active = self.active
        if active is not None and active.state == NEW and not self.closed:
            active.start()

    def _on_timer(self) -> None:
        if self.closed:
            return
        if self._lingering:
            self.route.outbox.close(self.transport)  # type: ignore[arg-type]
            return
        now = self.route.timer_clock()
        route = self.route
        tunnel = self.tunnel
        if tunnel is not None:
            moved = self._reads + tunnel.reads
            if moved == self._reads_checked:
                log.info("tunnel_idle_closed", upstream=route.name, idle_timeout=route.idle_timeout)
                route.metrics.tunnels_idle_closed.inc()
                self._close()  # the upstream side follows when the client side is gone
                return
            self._reads_checked = moved
            self._timer.set(now + route.idle_timeout)
            return
        if self._in_head:
            deadline = self._head_started + route.header_timeout
            if now < deadline:
                self._timer.set(deadline)
            else:
                self._refuse(errors.HEADER_TIMEOUT)
            return
        if self.active is None and self._upgrade_buffer is None:
            # Idle between requests, or a head not begun (a new connection that never spoke,
            # or bytes before a target): close quietly.
            if self._head_started:
                deadline = self._head_started + route.header_timeout
            else:
                deadline = self._idle_since + route.idle_timeout
                if not self._begun and (self._parser is not None or self._head is not None):
                    release_at = self._idle_since + IDLE_RELEASE
                    if now >= release_at:
                        self._release_idle_state()
                    else:
                        deadline = min(deadline, release_at)
            if now < deadline:
                self._timer.set(deadline)
            else:
                self._close()
            return
        receiving = self._receiving
        if receiving is not None and receiving is self.active:
            # A request body on its way: nothing read for a whole idle period is a stall.
            if self._reads == self._reads_checked:
                self._refuse(errors.BODY_TIMEOUT)
                return
            self._reads_checked = self._reads
        self._timer.set(now + route.idle_timeout)

    def _release_idle_state(self) -> None:
        """Drop the parser and the reusable exchange of a connection idle between requests
        (no bytes of a next head read): its next request makes new ones."""
        self._parser = None
        self._head = None

    def _close(self, *, linger: bool = False) -> None:
        """Close after what was written; with ``linger``, the client may still be sending
        (a refused request): half-close and drop its input for a while instead, since closing
        on unread input makes the kernel reset the connection and the answer can be lost."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._receiving = None
        if not linger:
            self.route.outbox.close(self.transport)
            return
        self._lingering = True
        self.route.outbox.write_eof(self.transport)
        if self._paused:
            self._paused = 0
            self.transport.resume_reading()
        self._timer.set(self.route.timer_clock() + _LINGER)


# Client addresses as str and bytes, shared by the connections from one address (a sidecar's
# clients are few hosts: a copy of each per connection was 0.1 KiB of every idle one).
_ADDRESSES: Final[dict[str, tuple[str, bytes]]] = {}
_ADDRESSES_KEPT: Final = 4096


def _address(host: str) -> tuple[str, bytes]:
    known = _ADDRESSES.get(host)
    if known is None:
        if len(_ADDRESSES) >= _ADDRESSES_KEPT:
            _ADDRESSES.clear()
        known = _ADDRESSES[host] = (host, host.encode())
    return known


def _judge_head(head: RequestHead, route: Route) -> None:
    """Set ``head.error`` for a request to refuse, and the path to forward for a target in
    absolute form."""
    target = h.origin_form(head.target, route.local_authorities)
    if head.error is not None:
        pass
    elif head.size > route.max_header_size:
        head.error = errors.HEAD_TOO_LARGE
    elif head.method == b"CONNECT":
        head.error = bad_request(
            "connect_refused", "CONNECT refused: this sidecar is not an open proxy", 405
        )
    elif target is None:
        head.error = bad_request(
            "foreign_absolute_uri", "request for another host: not an open proxy"
        )
    elif head.http11 and head.host is None:
        head.error = bad_request("missing_host", "HTTP/1.1 request without Host")
    elif (
        route.max_body is not None
        and head.content_length is not None
        and head.content_length > route.max_body
    ):
        head.error = errors.BODY_TOO_LARGE
    if target is not None:
        head.target = target


def _take_header(head: RequestHead, role: int, name: bytes, value: bytes) -> None:
    """A request header the engine reads (and may rewrite) rather than pass through."""
    if role == h.HOST:
        if head.host is not None and head.error is None:
            head.error = bad_request("duplicate_host", "more than one Host header")
        head.host = value
    elif role == h.CONTENT_LENGTH:
        head.content_length = int(value)  # llhttp checked the digits and duplicates
    elif role == h.TRANSFER_ENCODING:
        head.chunked = True
        if value.strip().lower() != b"chunked" and head.error is None:
            head.error = bad_request(
                "invalid_transfer_encoding", "only Transfer-Encoding: chunked is accepted", 501
            )
    elif role == h.CONNECTION:
        if b"keep-alive" in value.lower():
            head.asked_keep_alive = True
        if value not in h.PLAIN_CONNECTION:
            listed = h.connection_listed(value)
            if listed:
                head.listed = (head.listed or []) + listed
    elif role == h.EXPECT:
        head.expect_continue = value.strip().lower() == b"100-continue"
    elif role == h.UPGRADE:
        head.upgrade = value
    elif role == h.REQUEST_ID:
        # Kept when it is a sane length; the access log and the upstream see the same value.
        if 0 < len(value) <= 128:
            head.request_id = value
            head.request_id_given = True
    elif role == h.FORWARDED_FOR:
        head.forwarded_for = (
            value if head.forwarded_for is None else head.forwarded_for + b", " + value
        )
    elif role == h.FORWARDED_HOST:
        head.forwarded_host = head.forwarded_host or value
    elif role == h.FORWARDED_PROTO:
        head.forwarded_proto = head.forwarded_proto or value
    elif role == h.IDEMPOTENCY_KEY:
        head.idempotency_key = True
        head.lines.extend((name, b": ", value, b"\r\n"))
    elif role == h.USER_AGENT:
        head.user_agent = value
        head.lines.extend((name, b": ", value, b"\r\n"))
    elif role == h.TRACE_CONTEXT:
        trace_lines = (name, b": ", value, b"\r\n")
        if head.trace_lines is None:
            head.trace_lines = list(trace_lines)
        else:
            head.trace_lines.extend(trace_lines)
