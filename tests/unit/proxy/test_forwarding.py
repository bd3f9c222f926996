"""The HTTP data path over fake transports: heads rewritten, bodies framed, connections reused."""

from __future__ import annotations

import contextlib
from typing import Any

import httptools
import pytest

from sidecars.proxy.client import IDLE_RELEASE
from sidecars.proxy.headers import FORWARD, HeaderRoles

GET = b"GET /orders?id=7 HTTP/1.1\r\nHost: localhost:15001\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: test\r\n\r\nhello"


class Parsed:
    """One HTTP message parsed by llhttp, as a test reads it."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: str) -> str | None:
        values = [v.decode() for n, v in self.headers if n.decode().lower() == name.lower()]
        assert len(values) <= 1, f"{name} appears {len(values)} times"
        return values[0] if values else None

    def names(self) -> set[str]:
        return {name.decode().lower() for name, _ in self.headers}


def parse_request(data: bytes) -> Parsed:
    parsed = Parsed()
    with contextlib.suppress(httptools.HttpParserUpgrade):  # the rest is tunnel data
        httptools.HttpRequestParser(parsed).feed_data(data)
    return parsed


def parse_responses(data: bytes, count: int = 1) -> list[tuple[int, Parsed]]:
    """The first ``count`` complete responses in ``data``, as (status, Parsed)."""
    responses: list[tuple[int, Parsed]] = []

    class Messages:
        current = Parsed()

        def on_message_begin(self) -> None:
            self.current = Parsed()

        def on_header(self, name: bytes, value: bytes) -> None:
            self.current.on_header(name, value)

        def on_body(self, body: bytes) -> None:
            self.current.on_body(body)

        def on_message_complete(self) -> None:
            self.current.complete = True
            responses.append((parser.get_status_code(), self.current))

    parser = httptools.HttpResponseParser(Messages())
    with contextlib.suppress(httptools.HttpParserError):  # only complete answers count
        parser.feed_data(data)
    assert len(responses) >= count, f"{len(responses)} complete responses in {data!r}"
    return responses[:count]


def parse_response(data: bytes) -> tuple[int, Parsed]:
    return parse_responses(data)[0]


async def test_the_request_head_is_rewritten_for_the_upstream(wire: Any) -> None:
    w = wire()
    await w.send(
        b"GET /orders?id=7 HTTP/1.1\r\nHost: localhost:15001\r\nUser-Agent: app/1\r\n"
        b"Accept: */*\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s3\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Sidecar-Attempt: 9\r\n\r\n"
    )
    sent = w.sent_upstream()
    assert sent.startswith(b"GET /orders?id=7 HTTP/1.1\r\nHost: backend.internal:8080\r\n")
    request = parse_request(sent)
    assert request.header("User-Agent") == "app/1"
    assert request.header("Accept") == "*/*"
    assert request.header("X-Forwarded-For") == "10.0.0.1, 192.0.2.7"
    assert request.header("X-Forwarded-Proto") == "http"
    assert request.header("X-Forwarded-Host") == "localhost:15001"
    assert request.header("X-Sidecar-Attempt") == "1"
    assert request.header("X-Request-Id")
    hop_by_hop = {"connection", "keep-alive", "proxy-authorization", "te", "x-secret"}
    assert not request.names() & hop_by_hop


async def test_a_given_request_id_is_kept(wire: Any) -> None:
    w = wire()
    await w.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n")
    assert parse_request(w.sent_upstream()).header("X-Request-Id") == "abc-123"
    await w.answer(OK)
    assert w.access_lines()[-1]["request_id"] == "abc-123"


async def test_the_path_prefix_is_prepended(wire: Any) -> None:
    w = wire(upstream="http://backend.internal:8080/api/v1")
    await w.send(GET)
    assert w.sent_upstream().startswith(b"GET /api/v1/orders?id=7 HTTP/1.1\r\n")


async def test_the_response_goes_back_with_the_attempt_count(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\nX-Custom: yes\r\n\r\nok"
    )
    status, response = parse_response(w.received())
    assert (status, response.body) == (201, b"ok")
    assert response.header("X-Sidecar-Attempts") == "1"
    assert response.header("X-Custom") == "yes"
    assert response.header("Content-Length") == "2"
    assert not response.names() & {"keep-alive", "connection"}


async def test_the_upstream_connection_is_reused(wire: Any) -> None:
    w = wire()
    for _ in range(3):
        await w.send(GET)
        await w.answer(OK)
        assert parse_response(w.received())[0] == 200
    assert w.dialer.opened == 1
    assert w.pool.idle_count == 1


async def test_an_upstream_connection_close_is_not_reused(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close, X-Internal\r\n"
        b"X-Internal: 1\r\n\r\n"
    )
    status, response = parse_response(w.received())
    assert status == 200
    assert "x-internal" not in response.names()
    assert w.upstream_transport().closed
    assert w.pool.idle_count == 0


async def test_a_chunked_response_is_rechunked_for_http11(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    partial = w.received()
    assert b"Transfer-Encoding: chunked\r\n" in partial
    assert partial.endswith(b"\r\n\r\n3\r\nabc\r\n")  # streamed before the end arrived
    await w.answer(b"2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    status, response = parse_response(partial + w.received())
    assert (status, response.body) == (200, b"abcde")
    assert w.pool.idle_count == 1


async def test_an_http10_client_gets_a_close_delimited_body(wire: Any) -> None:
    w = wire()
    await w.send(b"GET / HTTP/1.0\r\n\r\n")
    await w.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    received = w.received()
    assert b"Transfer-Encoding" not in received
    assert b"Connection: close\r\n" in received
    assert received.endswith(b"\r\n\r\nabc")
    assert w.client_transport.closed


async def test_a_close_delimited_upstream_answer_ends_at_eof(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
    w.upstreams[-1].eof_received()
    await w.settle()
    status, response = parse_response(w.received())
    assert (status, response.body, response.complete) == (200, b"all of it", True)
    assert response.header("Transfer-Encoding") == "chunked"


async def test_head_and_no_content_answers_have_no_body(wire: Any) -> None:
    w = wire()
    await w.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    await w.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert w.received().endswith(b"Content-Length: 5\r\nX-Sidecar-Attempts: 1\r\n\r\n")
    # The same upstream connection then carries the next exchange correctly.
    for status in (204, 304):
        await w.send(GET)
        await w.answer(b"HTTP/1.1 %d X\r\n\r\n" % status)
        assert w.received().endswith(b"X-Sidecar-Attempts: 1\r\n\r\n")
    await w.send(GET)
    await w.answer(OK)
    assert parse_response(w.received())[1].body == b"hello"
    assert w.dialer.opened == 1


async def test_request_bodies_stream_with_their_framing(wire: Any) -> None:
    w = wire()
    await w.send(b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
    assert w.sent_upstream().endswith(b"Content-Length: 10\r\nX-Sidecar-Attempt: 1\r\n\r\n01234")
    await w.send(b"56789")
    assert w.sent_upstream() == b"56789"
    await w.answer(OK)
    await w.send(b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n")
    assert w.sent_upstream().endswith(
        b"Transfer-Encoding: chunked\r\nX-Sidecar-Attempt: 1\r\n\r\n4\r\nwxyz\r\n"
    )
    await w.send(b"0\r\n\r\n")
    assert w.sent_upstream() == b"0\r\n\r\n"


async def test_pipelined_requests_are_answered_in_order(wire: Any) -> None:
    w = wire()
    await w.send(GET.replace(b"/orders", b"/first") + GET.replace(b"/orders", b"/second"))
    assert parse_request(w.sent_upstream()).url == b"/first?id=7"
    assert not w.client_transport.reading  # the second waits: nothing more is read
    await w.answer(OK.replace(b"hello", b"one!!"))
    assert parse_request(w.sent_upstream()).url == b"/second?id=7"
    await w.answer(OK.replace(b"hello", b"two!!"))
    bodies = [parsed.body for _, parsed in parse_responses(w.received(), 2)]
    assert bodies == [b"one!!", b"two!!"]
    assert w.client_transport.reading


async def test_expect_100_continue_is_answered_by_the_sidecar(wire: Any) -> None:
    w = wire()
    await w.send(b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert w.received() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert parse_request(w.sent_upstream() + b"abc").header("Expect") is None
    await w.send(b"abc")
    await w.answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)  # an upstream's own 100 is dropped
    status, response = parse_response(w.received())
    assert (status, response.body) == (200, b"hello")


async def test_an_absolute_uri_naming_the_upstream_is_forwarded(wire: Any) -> None:
    w = wire()
    await w.send(b"GET http://backend.internal:8080/x HTTP/1.1\r\nHost: backend.internal\r\n\r\n")
    assert w.sent_upstream().startswith(b"GET /x HTTP/1.1\r\n")


async def test_an_http10_request_closes_after_its_answer(wire: Any) -> None:
    w = wire()
    await w.send(b"GET / HTTP/1.0\r\n\r\n")
    await w.answer(OK)
    status, response = parse_response(w.received())
    assert (status, response.header("Connection")) == (200, "close")
    assert w.client_transport.closed


async def test_an_upgrade_becomes_a_tunnel_after_101(wire: Any) -> None:
    w = wire()
    await w.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly"
    )
    request = parse_request(w.sent_upstream())
    assert (request.header("Connection"), request.header("Upgrade")) == ("upgrade", "websocket")
    await w.answer(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\nfrom-upstream"
    )
    received = w.received()
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Upgrade: websocket\r\n" in received
    assert received.endswith(b"\r\n\r\nfrom-upstream")
    assert w.sent_upstream() == b"early"
    await w.send(b"client-bytes")
    assert w.sent_upstream() == b"client-bytes"
    await w.answer(b"more")
    assert w.received() == b"more"


async def test_every_answer_is_access_logged(wire: Any) -> None:
    w = wire()
    await w.send(b"GET /a?b=c HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8\r\n\r\n")
    await w.answer(OK)
    (line,) = w.access_lines()
    assert line["event"] == "access"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/a?b=c", 200)
    assert (line["attempts"], line["bytes"], line["user_agent"]) == (1, 5, "curl/8")
    assert (line["remote_addr"], line["upstream"]) == ("192.0.2.7", "backend.internal")
    assert line["request_id"] and line["duration"] >= 0


async def test_backpressure_pauses_the_other_side(wire: Any) -> None:
    w = wire()
    await w.send(b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nfirst")
    upstream = w.upstreams[-1]
    upstream.pause_writing()  # the upstream's socket buffer is full: stop reading the body
    assert not w.client_transport.reading
    upstream.resume_writing()
    assert w.client_transport.reading
    await w.send(b"x" * 95)
    await w.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 1000)
    w.client.pause_writing()  # the client is not reading the answer: stop reading upstream
    assert not w.upstream_transport().reading
    w.client.resume_writing()
    assert w.upstream_transport().reading


async def test_the_idle_bound_closes_only_settled_connections(wire: Any) -> None:
    now = [1000.0]
    w = wire(upstream_max_idle="1", timer_clock=lambda: now[0])
    clients = [w.client, w.connect(), w.connect()]
    for client in clients:  # three requests in flight at once: three upstream connections
        client.data_received(GET)
    await w.settle()
    for index in range(3):
        await w.answer(OK, index)
    assert w.pool.idle_count == 3  # a burst's connections are not closed at once
    first = w.pool.take()
    assert first is w.upstreams[2]  # LIFO: the most recently used first
    now[0] += 5  # the others idle for a while now
    w.pool.put(first)
    await w.settle()
    assert w.upstream_transport(0).closed  # the settled one over the bound went
    assert w.pool.idle_count == 2


async def test_keep_alive_idleness_has_its_own_timeout(wire: Any) -> None:
    """A new connection must speak within HEADER_TIMEOUT; between requests IDLE_TIMEOUT
    applies."""
    now = [1000.0]
    w = wire(header_timeout="1s", idle_timeout="60s", timer_clock=lambda: now[0])
    await w.send(GET)
    await w.answer(OK)
    now[0] += 5  # five seconds idle since the answer
    w.client._on_timer()  # what the timer calls when it wakes up
    await w.settle()
    assert not w.client_transport.closed
    now[0] += 60
    w.client._on_timer()
    await w.settle()
    assert w.client_transport.closed
    fresh = w.connect()
    now[0] += 0.5  # a connection that never sent a byte, for half a second
    fresh._on_timer()
    await w.settle()
    assert not fresh.transport.closed  # type: ignore[union-attr]
    now[0] += 1
    fresh._on_timer()
    await w.settle()
    assert fresh.transport.closed  # type: ignore[union-attr]


async def test_an_idle_connection_gives_back_its_parser_and_exchange(wire: Any) -> None:
    """Past IDLE_RELEASE idle, the parser and the reusable exchange go; the next request
    makes new ones, and the idle timeout still counts from the end of the last answer."""
    now = [1000.0]
    w = wire(idle_timeout="60s", timer_clock=lambda: now[0])
    await w.send(GET)
    await w.answer(OK)
    assert w.client._parser is not None and w.client._head is not None
    now[0] += IDLE_RELEASE / 2
    w.client._on_timer()  # too soon: kept for a next request
    assert w.client._parser is not None
    now[0] += IDLE_RELEASE
    w.client._on_timer()
    assert w.client._parser is None and w.client._head is None
    assert w.client._timer.deadline == pytest.approx(1000.0 + 60)
    await w.send(GET)
    await w.answer(OK)
    assert w.received().count(b"HTTP/1.1 200 OK\r\n") == 2
    now[0] += 61
    w.client._on_timer()
    await w.settle()
    assert w.client_transport.closed


async def test_bytes_of_a_next_head_keep_the_parser(wire: Any) -> None:
    now = [1000.0]
    w = wire(header_timeout="10s", idle_timeout="60s", timer_clock=lambda: now[0])
    await w.send(GET)
    await w.answer(OK)
    await w.send(b"\r\n")  # before a target: the parser holds them
    now[0] += IDLE_RELEASE * 2
    w.client._on_timer()
    assert w.client._parser is not None
    await w.send(GET)
    await w.answer(OK)
    assert w.received().count(b"HTTP/1.1 200 OK\r\n") == 2


@pytest.mark.parametrize("start", [b"G", b"GET", b"GET "])
async def test_the_start_of_a_pipelined_head_survives_the_idle_release(
    wire: Any, start: bytes
) -> None:
    """The first bytes of a next request came while one was active (llhttp keeps a method
    before calling anything): the release past IDLE_RELEASE must not take them with the
    parser; the rest of the head completes the request."""
    now = [1000.0]
    w = wire(header_timeout="10s", idle_timeout="60s", timer_clock=lambda: now[0])
    await w.send(GET + start)
    await w.answer(OK)
    now[0] += IDLE_RELEASE * 2
    w.client._on_timer()
    assert w.client._parser is not None
    await w.send(GET[len(start) :])
    await w.answer(OK)
    assert w.received().count(b"HTTP/1.1 200 OK\r\n") == 2


async def test_an_idle_timeout_shorter_than_the_release_closes_on_time(wire: Any) -> None:
    now = [1000.0]
    w = wire(idle_timeout="200ms", timer_clock=lambda: now[0])
    await w.send(GET)
    await w.answer(OK)
    assert w.client._timer.deadline == pytest.approx(1000.2)


async def test_an_idle_tunnel_is_closed_after_the_idle_timeout(wire: Any) -> None:
    w = wire(idle_timeout="30s")
    await w.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    await w.answer(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    w.received()
    timer = w.client._timer
    assert timer.deadline - w.route.timer_clock() == pytest.approx(30, abs=1)
    # Each idle period with bytes moving either way keeps the tunnel; one without closes it.
    for move in (lambda: w.send(b"ping"), lambda: w.answer(b"pong")):
        await move()
        w.client._on_timer()
        await w.settle()
        assert not w.client_transport.closed
    w.client._on_timer()
    await w.settle()
    assert w.client_transport.closed and w.upstream_transport().closed


async def test_the_upstream_reason_phrase_is_kept(wire: Any) -> None:
    w = wire()
    answers = [
        (b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\n"),
        (b"HTTP/1.1 200 Fine Thanks\r\n", b"HTTP/1.1 200 Fine Thanks\r\n"),
        (b"HTTP/1.0 404 Nope\r\n", b"HTTP/1.1 404 Nope\r\n"),  # our version, their phrase
        (b"HTTP/1.1 299\r\n", b"HTTP/1.1 299 \r\n"),  # no phrase, unknown status
    ]
    for status_line, relayed in answers:
        await w.send(GET)
        await w.answer(status_line + b"Content-Length: 0\r\n\r\n")
        assert w.received().startswith(relayed)
    # A phrase in two reads, after an interim answer with a phrase of its own.
    await w.send(GET)
    await w.answer(b"HTTP/1.1 100 Carry On\r\n\r\nHTTP/1.1 503 Back ")
    await w.answer(b"Soon\r\nContent-Length: 0\r\n\r\n")
    assert w.received().startswith(b"HTTP/1.1 503 Back Soon\r\n")


async def test_an_http10_client_asking_for_keep_alive_keeps_its_connection(wire: Any) -> None:
    w = wire()
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    for _ in range(2):
        await w.send(request)
        await w.answer(OK)
        status, response = parse_response(w.received())
        assert (status, response.header("Connection"), response.body) == (
            200,
            "keep-alive",
            b"hello",
        )
        assert not w.client_transport.closed
    # A body of unknown length can only end with the connection: then it closes.
    await w.send(request)
    await w.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    received = w.received()
    assert b"Connection: close\r\n" in received and received.endswith(b"\r\n\r\nabc")
    await w.settle()
    assert w.client_transport.closed


async def test_a_sidecar_made_answer_to_http10_closes(wire: Any) -> None:
    w = wire()
    w.route.breaker.force_open()
    await w.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, response = parse_response(w.received())
    assert (status, response.header("Connection")) == (503, "close")
    await w.settle()
    assert w.client_transport.closed


async def test_header_names_are_matched_in_any_spelling(wire: Any) -> None:
    w = wire()
    for spelling in (b"x-request-id", b"X-REQUEST-ID", b"X-Request-Id"):
        await w.send(b"GET / HTTP/1.1\r\nHost: a\r\n%b: id-%b\r\n\r\n" % (spelling, spelling))
        request = parse_request(w.sent_upstream())
        assert request.header("X-Request-Id") == "id-" + spelling.decode()
        await w.answer(
            b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 2\r\nkeep-ALIVE: timeout=1\r\n"
            b"Connection: KEEP-ALIVE\r\nX-Sidecar-attempts: 9\r\n\r\nok"
        )
        status, response = parse_response(w.received())
        assert (status, response.body, response.header("X-Sidecar-Attempts")) == (200, b"ok", "1")
        assert not response.names() & {"keep-alive", "connection"}
    assert w.pool.idle_count == 1  # kept alive: every spelling was understood


def test_header_spellings_are_remembered_within_a_bound() -> None:
    roles = HeaderRoles({b"host": 1})
    assert roles.learn(b"HOST") == 1 and roles.by_spelling[b"HOST"] == 1
    assert roles.learn(b"Accept") == FORWARD
    for n in range(5000):  # names a peer makes up are not remembered past the bound
        roles.learn(b"X-Made-Up-%d" % n)
    assert len(roles.by_spelling) <= 1024
    assert roles.learn(b"x-" + b"long" * 100) == FORWARD
    assert b"x-" + b"long" * 100 not in roles.by_spelling
