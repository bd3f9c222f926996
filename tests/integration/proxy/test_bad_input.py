"""Bad input from either side, through the real process: each gets a defined answer, a metric
and a log line, and the process keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import LOOPBACK, free_port

GET = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"


async def still_serving(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    await connection.send(GET)
    assert (await connection.response()).status == 200


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"\x01\x02\x03 garbage\r\n\r\n", 400, "invalid_method"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64), 400, "tls_on_plain_port"),
        (HEAD + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431, "head_too_large"),
        (HEAD + b"Bad{Name: x\r\n\r\n", 400, "invalid_header_name"),
        (
            HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            400,
            "content_length_and_chunked",
        ),
        (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "invalid_content_length"),
        (HEAD + b"Content-Length: -1\r\n\r\n", 400, "invalid_content_length"),
        (HEAD + b"X-Folded: a\r\n b\r\n\r\n", 400, "obs_fold"),
        (b"CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n", 405, "connect_refused"),
        (b"GET http://169.254.169.254/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "foreign_absolute_uri"),
    ],
)
async def test_bad_requests_are_refused_and_counted(
    proxy: Any, connect: Any, data: bytes, status: int, reason: str
) -> None:
    before = await proxy.metric("sidecar_bad_requests_total", reason=reason)
    connection = await connect(proxy.port)
    await connection.send(data)
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (status, "bad_request")
    assert json.loads(response.body)["error"] == "bad_request"
    assert await connection.closed()
    assert await proxy.metric("sidecar_bad_requests_total", reason=reason) == before + 1
    assert any(event["reason"] == reason for event in proxy.events("bad_request"))
    await still_serving(proxy, connect)


async def test_a_slowloris_client_gets_408(proxy: Any, connect: Any) -> None:
    before = await proxy.metric("sidecar_bad_requests_total", reason="header_timeout")
    connection = await connect(proxy.port)
    await connection.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # ...and nothing more
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (408, "bad_request")
    assert await connection.closed()
    assert await proxy.metric("sidecar_bad_requests_total", reason="header_timeout") == before + 1
    await still_serving(proxy, connect)


async def test_a_client_leaving_mid_body_is_counted(proxy: Any, connect: Any) -> None:
    metric = "sidecar_bad_requests_total"
    before = await proxy.metric(metric, reason="client_disconnected")
    connection = await connect(proxy.port)
    await connection.send(b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nonly this")
    await connection.close()
    deadline = asyncio.get_running_loop().time() + 10
    while await proxy.metric(metric, reason="client_disconnected") == before:
        assert asyncio.get_running_loop().time() < deadline, "the disconnect was not counted"
        await asyncio.sleep(0.02)  # polling interval
    await still_serving(proxy, connect)


async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, how: str) -> None:
    await reader.readuntil(b"\r\n\r\n")
    if how == "garbage":
        writer.write(b"220 smtp.example ESMTP ready\r\n\r\n")
    elif how == "cut":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes.")
    if how != "silent":
        await writer.drain()
        writer.close()
        return
    await reader.read()  # never answers; waits for the sidecar to give up


@pytest.fixture
async def bad_upstreams() -> AsyncIterator[dict[str, int]]:
    servers = {}
    for how in ("garbage", "early", "cut", "silent"):

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, how: str = how) -> None:
            await misbehave(r, w, how)

        servers[how] = await asyncio.start_server(handle, LOOPBACK, 0)
    yield {how: server.sockets[0].getsockname()[1] for how, server in servers.items()}
    for server in servers.values():
        server.close()


async def test_misbehaving_upstreams_get_sidecar_answers(
    bad_upstreams: dict[str, int], proxies: Callable[..., Any], connect: Any
) -> None:
    routes = {how: free_port() for how in bad_upstreams}
    env = {"BREAKER_ROUTES": ",".join(routes), "BREAKER_TIMEOUT": "500ms"}
    for how, port in routes.items():
        env[f"BREAKER_ROUTE_{how.upper()}_UPSTREAM"] = f"http://{LOOPBACK}:{bad_upstreams[how]}"
        env[f"BREAKER_ROUTE_{how.upper()}_LISTEN"] = f"{LOOPBACK}:{port}"
    proxy = proxies(env)
    expected = {
        "garbage": (502, "upstream_unavailable", "bad_response"),
        "early": (502, "upstream_unavailable", "reset"),
        "silent": (504, "upstream_timeout", "timeout"),
    }
    for how, (status, error, kind) in expected.items():
        connection = await connect(routes[how])
        await connection.send(GET)
        response = await connection.response()
        assert (response.status, response.headers["x-sidecar-error"]) == (status, error), how
        assert json.loads(response.body)["upstream"] == how
        assert await proxy.metric("sidecar_upstream_errors_total", upstream=how, kind=kind) == 1
    # An answer cut after its head: the client sees the cut, not a made-up error.
    connection = await connect(routes["cut"])
    await connection.send(GET)
    data = await connection.reader.read()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nten bytes.")
    assert await proxy.metric("sidecar_upstream_errors_total", upstream="cut", kind="reset") == 1
    failures = proxy.events("upstream_attempt_failed")
    assert {event["kind"] for event in failures} == {"bad_response", "reset", "timeout"}


async def test_a_body_over_the_limit_gets_its_413_while_still_sending(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_MAX_BODY": "1KiB"})
    connection = await connect(proxy.port)
    await connection.send(b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
    connection.writer.write(b"x" * 1_000_000)  # still sending when the answer comes
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (413, "bad_request")
    assert await connection.closed()
    assert await proxy.metric("sidecar_bad_requests_total", reason="body_too_large") == 1
