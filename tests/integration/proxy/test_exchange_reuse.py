"""A client connection reuses its exchange for the next request: through the real process,
nothing of a request (its headers, its trace, its body, its errors) reaches the next one."""

from __future__ import annotations

import json
from typing import Any

GET = b"GET /echo HTTP/1.1\r\nHost: app.local\r\n\r\n"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# A request that sets every header-derived field the engine keeps.
LOADED = (
    b"PUT /loaded HTTP/1.1\r\n"
    b"Host: first.local\r\n"
    b"User-Agent: loaded-agent\r\n"
    b"X-Request-Id: loaded-request-id\r\n"
    b"X-Forwarded-For: 10.1.1.1\r\n"
    b"X-Forwarded-Host: forwarded.local\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"Idempotency-Key: key-1\r\n"
    b"traceparent: 00-" + CLIENT_TRACE.encode() + b"-00f067aa0ba902b7-01\r\n"
    b"tracestate: vendor=loaded\r\n"
    b"Connection: keep-alive, X-Private\r\n"
    b"X-Private: secret\r\n"
    b"Expect: 100-continue\r\n"
    b"Content-Length: 5\r\n\r\n"
)


def echoed(body: bytes) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads(body)
    return seen


def assert_plain(seen: dict[str, Any], path: str = "/echo") -> None:
    """What the echo upstream saw of a plain GET: nothing of an earlier request."""
    headers = seen["headers"]
    assert (seen["method"], seen["path"], seen["body_size"]) == ("GET", path, 0)
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "app.local"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-sidecar-attempt"] == "1"
    assert headers["x-request-id"] != "loaded-request-id"
    assert CLIENT_TRACE not in headers["traceparent"]
    for name in (
        "user-agent",
        "idempotency-key",
        "tracestate",
        "x-private",
        "content-length",
        "transfer-encoding",
        "expect",
        "upgrade",
    ):
        assert name not in headers, name


async def test_a_loaded_request_leaves_nothing_to_the_next(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(LOADED)
    assert await connection.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await connection.send(b"hello")
    first = await connection.response()
    seen = echoed(first.body)
    # The loaded request itself was forwarded as it should be.
    assert (seen["method"], seen["body_size"]) == ("PUT", 5)
    assert seen["headers"]["x-request-id"] == "loaded-request-id"
    assert seen["headers"]["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert seen["headers"]["tracestate"] == "vendor=loaded"
    for _ in range(3):
        await connection.send(GET)
        response = await connection.response()
        assert response.status == 200
        assert_plain(echoed(response.body))
        # No 100 Continue for a request that did not ask (a leaked expect would send one).
        assert not response.body.startswith(b"HTTP/1.1 100")


async def test_a_chunked_request_then_a_plain_one(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(
        b"POST /chunked HTTP/1.1\r\nHost: app.local\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" + GET
    )
    first = echoed((await connection.response()).body)
    assert (first["method"], first["body_size"]) == ("POST", 5)
    assert_plain(echoed((await connection.response()).body))


async def test_head_then_get_on_one_connection(proxy: Any, connect: Any) -> None:
    """A leaked HEAD would strip the next answer's body (and break the client's framing)."""
    connection = await connect(proxy.port)
    connection.head_only = True
    await connection.send(b"HEAD /echo HTTP/1.1\r\nHost: app.local\r\n\r\n")
    assert (await connection.response()).status == 200
    connection = await connect(proxy.port)
    await connection.send(b"HEAD /echo HTTP/1.1\r\nHost: app.local\r\n\r\n")
    # Read the HEAD answer's head alone, then a GET whose answer must carry its body.
    head = await connection.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    await connection.send(GET)
    response = await connection.response()
    assert response.status == 200
    assert_plain(echoed(response.body))


async def test_errors_mid_sequence_leave_no_state(proxy: Any, connect: Any) -> None:
    """Failure answers (an upstream's 503 and 500) between plain requests on one connection:
    each next request starts clean (one attempt, its own request id)."""
    connection = await connect(proxy.port)
    ids = set()
    for path in (b"/status/503", b"/echo", b"/status/500", b"/echo"):
        await connection.send(GET.replace(b"/echo", path))
        response = await connection.response()
        assert response.headers["x-sidecar-attempts"] == "1"
        if path == b"/echo":
            assert response.status == 200
            seen = echoed(response.body)
            assert_plain(seen)
            ids.add(seen["headers"]["x-request-id"])
        else:
            assert response.status == int(path[-3:])
    assert len(ids) == 2


async def test_pipelined_loaded_and_plain_requests(proxy: Any, connect: Any) -> None:
    """Pipelined requests each get their own exchange; the ones after keep nothing."""
    connection = await connect(proxy.port)
    loaded = LOADED.replace(b"Expect: 100-continue\r\n", b"") + b"hello"
    await connection.send(loaded + GET + loaded + GET + GET)
    seen = [echoed((await connection.response()).body) for _ in range(5)]
    assert [s["method"] for s in seen] == ["PUT", "GET", "PUT", "GET", "GET"]
    for plain in (seen[1], seen[3], seen[4]):
        assert_plain(plain)
    assert seen[2]["headers"]["idempotency-key"] == "key-1"
    # Then, no longer pipelined, the connection goes on as usual.
    await connection.send(GET)
    assert_plain(echoed((await connection.response()).body))


async def test_a_timed_out_request_leaves_nothing_to_the_next(
    proxies: Any, backend: Any, connect: Any
) -> None:
    """A sidecar-made 504 (the upstream too slow) keeps the connection; the next request on
    it is a first attempt of its own, not a retry of the one that failed."""
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_TIMEOUT": "200ms"})
    connection = await connect(proxy.port)
    await connection.send(GET.replace(b"/echo", b"/slow?delay=2"))
    failed = await connection.response()
    assert (failed.status, failed.headers["x-sidecar-error"]) == (504, "upstream_timeout")
    for _ in range(2):
        await connection.send(GET)
        response = await connection.response()
        assert (response.status, response.headers["x-sidecar-attempts"]) == (200, "1")
        assert_plain(echoed(response.body))
