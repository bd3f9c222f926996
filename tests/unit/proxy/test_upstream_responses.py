"""Upstream responses through UpstreamConnection and the real exchange (fake transports):
Content-Length and chunked bodies give the client the same bytes however the response is
split into reads, and the edges (HEAD, 204, 304, HTTP/1.0, Connection: close,
bytes after the end) have one defined answer."""

from __future__ import annotations

import contextlib
from typing import Any

import httptools
import pytest
from proxy_parts import NGINX_ANSWER as NGINX
from proxy_parts import NGINX_BODY as BODY

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


class Parsed:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def names(self) -> set[str]:
        return set(self.headers)


def parse_response(data: bytes) -> tuple[int, Parsed]:
    """The first response in ``data``, complete."""
    parsed = Parsed()
    parser = httptools.HttpResponseParser(parsed)
    with contextlib.suppress(httptools.HttpParserError):  # bytes after it
        parser.feed_data(data)
    assert parsed.complete, data
    return parser.get_status_code(), parsed



def bad_responses(w: Any) -> float:
    return float(w.route.metrics.upstream_errors["bad_response"]._value.get())


async def exchange(w: Any, request: bytes, *reads: bytes) -> bytes:
    await w.send(request)
    for data in reads:
        await w.answer(data)
    return bytes(w.received())


async def test_a_response_split_at_any_byte_reaches_the_client_the_same(wire: Any) -> None:
    w = wire()
    whole = await exchange(w, GET, NGINX)
    status, response = parse_response(whole)
    assert (status, response.body) == (200, BODY)
    assert response.header("Server") == "nginx/1.22.1"
    assert response.header("ETag") == '"5f0c-264"'
    assert "connection" not in response.names()
    for at in range(1, len(NGINX)):
        got = await exchange(w, GET, NGINX[:at], NGINX[at:])
        assert got == whole, at
    assert (w.dialer.opened, w.pool.idle_count) == (1, 1)


async def test_a_body_in_many_reads_is_counted_to_its_end(wire: Any) -> None:
    w = wire()
    head, _, body = NGINX.partition(b"\r\n\r\n")
    reads = [head + b"\r\n\r\n" + body[:10]] + [body[at : at + 100] for at in range(10, 612, 100)]
    await w.send(GET)
    for data in reads[:-1]:
        await w.answer(data)
        assert w.pool.idle_count == 0  # not over yet
    await w.answer(reads[-1])
    status, response = parse_response(w.received())
    assert (status, response.body) == (200, BODY)
    assert w.pool.idle_count == 1


@pytest.mark.parametrize(
    "after",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # a whole second answer
        b"HTTP/1.1 2",  # the start of one
        b"garbage",
    ],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_bytes_after_a_response_deliver_it_but_close_the_connection(
    wire: Any, after: bytes, chunked: bool
) -> None:
    w = wire()
    before = bad_responses(w)
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        if chunked
        else b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    )
    status, response = parse_response(await exchange(w, GET, answer + after))
    assert (status, response.body) == (200, b"hello")
    assert w.upstreams[0].closed
    assert w.pool.idle_count == 0
    assert bad_responses(w) == before + 1
    # The next request gets a new connection and its answer.
    status, response = parse_response(await exchange(w, GET, answer))
    assert (status, response.body, w.dialer.opened) == (200, b"hello", 2)


async def test_bytes_after_a_connection_close_answer_are_not_a_bad_response(wire: Any) -> None:
    w = wire()
    before = bad_responses(w)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    status, response = parse_response(await exchange(w, GET, answer + b"more"))
    assert (status, response.body) == (200, b"hello")
    assert w.upstreams[0].closed
    assert bad_responses(w) == before


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 612\r\nX-A: b\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", False),  # no length: llhttp would wait for EOF
        (b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", True),
    ],
)
async def test_an_answer_to_head_has_no_body(wire: Any, answer: bytes, reused: bool) -> None:
    w = wire()
    await w.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    await w.answer(answer)
    got = w.received()
    assert got.startswith(answer.split(b"\r\n")[0])
    assert got.endswith(b"\r\n\r\n") and b"X-A: b\r\n" in got
    assert w.pool.idle_count == int(reused)


@pytest.mark.parametrize(
    ("answer", "bad"),
    [
        # A body (or a second answer) after the head of an answer to HEAD.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nx", True),
        # Line ends only, or an interim answer before the final one: nothing after it.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\r\n", False),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n"
         b"Content-Length: 5\r\n\r\n", False),
    ],
)
async def test_bytes_after_an_answer_to_head_close_the_connection(
    wire: Any, answer: bytes, bad: bool
) -> None:
    w = wire()
    before = bad_responses(w)
    await w.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    await w.answer(answer)
    assert w.received().startswith(b"HTTP/1.1 200 OK\r\n")
    assert (w.upstreams[0].closed, w.pool.idle_count) == (bad, int(not bad))
    assert bad_responses(w) == before + int(bad)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 612\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ],
)
async def test_204_and_304_end_with_their_head(wire: Any, answer: bytes) -> None:
    w = wire()
    got = await exchange(w, GET, answer)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(answer.split(b"\r\n")[0]) and body == b""
    if b" 304 " in answer and b"612" in answer:
        assert b"Content-Length: 612\r\n" in head + b"\r\n"
    if b" 204 " in answer:
        assert b"content-length" not in head.lower()
    assert w.pool.idle_count == 1


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\nok", True),
    ],
)
async def test_keep_alive_is_the_upstreams_word(wire: Any, answer: bytes, reused: bool) -> None:
    w = wire()
    status, response = parse_response(await exchange(w, GET, answer))
    assert (status, response.body) == (200, b"ok")
    assert "connection" not in response.names()
    assert w.pool.idle_count == int(reused)


async def test_retry_after_is_kept_and_relayed(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n")
    status, response = parse_response(w.received())
    assert (status, response.header("Retry-After")) == (429, "3")
    assert w.pool.idle_count == 1
    assert w.upstreams[0].retry_after == b"3"


async def test_a_short_body_then_close_cuts_the_client(wire: Any) -> None:
    w = wire()
    await w.send(GET)
    await w.answer(NGINX[:-100])
    w.upstreams[0].connection_lost(None)
    await w.settle()
    got = w.received()
    assert got.endswith(BODY[:-100])
    assert w.client_transport.aborted or w.client_transport.closed
