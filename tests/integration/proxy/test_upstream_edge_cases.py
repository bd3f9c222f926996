"""Upstream answers at the edges of HTTP/1.1, from a raw-socket upstream, through the real
``sidecars breaker`` process: each is relayed as what it is, or refused as a bad response."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import LOOPBACK

BODY = gzip.compress(b"compressed by the upstream " * 200)


def chunked(data: bytes, size: int = 1000) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


# What the upstream writes for each request path; it closes the connection afterwards.
ANSWERS = {
    "/status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "/status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
    "/gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(BODY),
    "/gzip-split": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(BODY)
    ),
    "/gzip-by-close": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + BODY,
    "/huge-head": (
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 300_000 + b"\r\nContent-Length: 2\r\n\r\nok"
    ),
}


@pytest.fixture
async def raw_upstream() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        writer.write(ANSWERS[path])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


@pytest.fixture
def edge_proxy(raw_upstream: int, proxies: Callable[..., Any]) -> Any:
    # The default 30 s deadline: a bad status must not wait for it.
    return proxies({"BREAKER_UPSTREAM": f"http://{LOOPBACK}:{raw_upstream}"})


def get(path: str) -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode()


@pytest.mark.parametrize("path", ["/status-099", "/status-600"])
async def test_a_status_outside_100_to_599_is_a_bad_response(
    edge_proxy: Any, connect: Any, path: str
) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get(path))
    response = await connection.response()  # at once, not after P_TIMEOUT
    assert (response.status, response.headers["x-sidecar-error"]) == (502, "upstream_unavailable")
    assert json.loads(response.body)["error"] == "upstream_unavailable"
    assert await edge_proxy.metric("sidecar_upstream_errors_total", kind="bad_response") == 1


@pytest.mark.parametrize("path", ["/gzip-chunked", "/gzip-split"])
async def test_codings_before_chunked_are_relayed(edge_proxy: Any, connect: Any, path: str) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get(path))
    response = await connection.response()
    assert response.status == 200
    assert response.headers["transfer-encoding"] == "gzip, chunked"
    assert gzip.decompress(response.body) == b"compressed by the upstream " * 200


async def test_codings_not_ending_in_chunked_are_delimited_by_close(
    edge_proxy: Any, connect: Any
) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get("/gzip-by-close"))
    async with asyncio.timeout(10):
        data = await connection.reader.read()  # the whole answer, up to the close
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 200 ok"
    assert b"transfer-encoding: gzip" in lines and b"connection: close" in lines
    assert not any(line.startswith(b"content-length") for line in lines)
    assert body == BODY
    assert await edge_proxy.metric("sidecar_upstream_errors_total") == 0


async def test_a_head_over_the_bound_is_refused_even_when_one_read_completes_it(
    edge_proxy: Any, connect: Any
) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get("/huge-head"))
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (502, "upstream_unavailable")
    assert await edge_proxy.metric("sidecar_upstream_errors_total", kind="bad_response") == 1
