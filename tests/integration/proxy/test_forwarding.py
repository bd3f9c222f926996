"""Forwarding through the real ``sidecars breaker`` process to a real aiohttp upstream."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import aiohttp
from proxy_parts import eventually

GET = b"GET /echo HTTP/1.1\r\nHost: app.local\r\n\r\n"


async def test_requests_carry_the_forwarding_headers(proxy: Any, backend: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            proxy.url + "/echo?x=1",
            headers={"X-Forwarded-For": "10.9.8.7", "Host": "app.local", "X-Trace": "t"},
        ) as response,
    ):
        seen = await response.json()
        assert response.headers["X-Sidecar-Attempts"] == "1"
    headers = seen["headers"]
    assert seen["path"] == "/echo?x=1"
    assert headers["host"] == f"127.0.0.1:{backend.port}"
    assert headers["x-forwarded-host"] == "app.local"
    assert headers["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-sidecar-attempt"] == "1"
    assert headers["x-trace"] == "t"
    assert headers["x-request-id"]


async def test_keep_alive_reuses_upstream_connections(proxy: Any, connect: Any) -> None:
    opened = "sidecar_upstream_connections_opened_total"
    before = await proxy.metric(opened)
    connection = await connect(proxy.port)
    for _ in range(20):
        await connection.send(GET)
        assert (await connection.response()).status == 200
    assert await proxy.metric(opened) - before <= 1


async def test_big_bodies_stream_both_ways(
    proxy: Any, payload: Callable[[int], bytes], connect: Any
) -> None:
    size = 8 * 1024 * 1024
    data = payload(size)
    async with aiohttp.ClientSession() as session:
        async with session.put(proxy.url + "/upload", data=data) as response:
            seen = await response.json()
        assert (seen["body_size"], seen["body_sha256"]) == (size, hashlib.sha256(data).hexdigest())
        for query in ("", "&chunked=1"):
            async with session.get(f"{proxy.url}/big?size={size}{query}") as response:
                assert await response.read() == data
    # A chunked upload is re-framed for the upstream, byte for byte.
    connection = await connect(proxy.port)
    chunks = [data[i : i + 100_000] for i in range(0, 1_000_000, 100_000)]
    framed = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in chunks)
    await connection.send(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + framed
        + b"0\r\n\r\n"
    )
    seen = (await connection.response()).body
    assert hashlib.sha256(data[:1_000_000]).hexdigest().encode() in seen


async def test_pipelined_requests_are_answered_in_order(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(b"".join(GET.replace(b"/echo", b"/p%d" % n) for n in range(5)))
    paths = [(await connection.response()).body for _ in range(5)]
    assert [b'"path": "/p%d"' % n in body for n, body in enumerate(paths)] == [True] * 5


async def test_an_http10_client_is_answered_and_closed(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(b"GET /big?size=100000&chunked=1 HTTP/1.0\r\n\r\n")
    data = await connection.reader.read()  # the body ends with the connection
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding" not in head
    assert len(body) == 100000


async def test_head_and_no_content_have_no_body(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    connection.head_only = True
    await connection.send(b"HEAD /big?size=5000 HTTP/1.1\r\nHost: a\r\n\r\n")
    response = await connection.response()
    assert (response.status, response.headers["content-length"]) == (200, "5000")
    connection = await connect(proxy.port)  # a new one: the parser above expects a body
    await connection.send(b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
    assert [(await connection.response()).status for _ in range(2)] == [204, 200]


async def test_expect_100_continue(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(
        b"PUT /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await connection.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await connection.send(b"hello")
    response = await connection.response()
    assert (response.status, b'"body_size": 5' in response.body) == (200, True)
    assert b'"expect"' not in response.body


async def test_a_websocket_is_tunnelled(proxy: Any) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url + "/ws") as ws:
        for text in ("one", "two"):
            await ws.send_str(text)
            assert (await ws.receive_str()) == f"echo: {text}"


async def test_an_idle_websocket_is_closed_after_the_idle_timeout(
    backend: Any, proxies: Callable[..., Any]
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_IDLE_TIMEOUT": "1s"})
    async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url + "/ws") as ws:
        await ws.send_str("one")
        assert (await ws.receive_str()) == "echo: one"
        # Nothing moves either way now: the sidecar closes the tunnel (event-driven wait,
        # bounded by the receive timeout).
        message = await ws.receive(timeout=10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert proxy.events("tunnel_idle_closed")
    assert await proxy.metric("sidecar_tunnels_idle_closed_total") == 1


async def test_an_http10_client_can_keep_its_connection(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    for _ in range(2):
        await connection.send(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = await connection.response()
        assert (response.status, response.headers["connection"]) == (200, "keep-alive")


async def test_every_request_is_access_logged(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(b"GET /echo?logged=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-42\r\n\r\n")
    assert (await connection.response()).status == 200

    def lines() -> list[dict[str, Any]]:
        return [e for e in proxy.events("access") if e["request_id"] == "rid-42"]

    await eventually(lambda: bool(lines()), "the access line")
    (line,) = lines()
    assert (line["method"], line["path"], line["status"], line["attempts"]) == (
        "GET",
        "/echo?logged=1",
        200,
        1,
    )


async def test_the_access_log_can_be_turned_off(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    quiet = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_ACCESS_LOG": "off"})
    connection = await connect(quiet.port)
    await connection.send(GET)
    assert (await connection.response()).status == 200
    assert quiet.events("access") == []
    assert await quiet.metric("sidecar_requests_total", code="200") == 1
