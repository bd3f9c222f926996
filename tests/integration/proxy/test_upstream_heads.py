"""Response heads through the real ``sidecars breaker`` process from a raw-socket upstream
that keeps its connections: the common head (parsed in one pass), split heads, the edges of
keep-alive and bodiless answers, and upstreams that send too much or too little."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from proxy_parts import NGINX_ANSWER as NGINX
from proxy_parts import NGINX_BODY as BODY
from support import LOOPBACK

# Where /split/<n> cuts NGINX into two writes: in the status line, a name, a value, the
# empty line, the body.
SPLITS = [1, 9, 20, 70, len(NGINX) - len(BODY) - 3, len(NGINX) - len(BODY) - 1, len(NGINX) - 5]
SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"
CLOSE = object()  # in a script: the upstream closes the connection there
ANSWERS: dict[str, list[Any]] = {
    "/nginx": [NGINX],
    "/extra": [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n"],
    "/short": [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", CLOSE],
    "/head": [b"HTTP/1.1 200 OK\r\nContent-Length: 612\r\nX-A: b\r\n\r\n"],
    "/204": [b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"],
    "/304": [b'HTTP/1.1 304 Not Modified\r\nContent-Length: 612\r\nETag: "x"\r\n\r\n'],
    "/close": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", CLOSE],
    "/http10": [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", CLOSE],
    "/http10-kept": [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"],
    "/listed": [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-secret\r\nX-Secret: s\r\n"
        b"X-Kept: k\r\n\r\nok"
    ],
    "/retry-after": [
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n"
    ],
    **{f"/split/{at}": [NGINX[:at], NGINX[at:]] for at in SPLITS},
    **{f"/small/{at}": [SMALL[:at], SMALL[at:]] for at in range(1, len(SMALL))},
    # Heads shaped like the common one, each with one flaw llhttp refuses.
    "/duplicate-length": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"],
    "/signed-length": [b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"],
    "/nul-in-value": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x00b\r\n\r\nok"],
    "/obs-fold": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n b\r\n\r\nok"],
    "/bare-lf": [b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok"],
    "/space-in-name": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX A: b\r\n\r\nok"],
}


class RawUpstream:
    """Answers each request on a connection with its path's script, keeping the connection
    unless the script closes it; counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for step in ANSWERS[head.split(b" ", 2)[1].decode()]:
                    if step is CLOSE:
                        return
                    writer.write(step)
                    await writer.drain()
                    # A pause between writes, so that the proxy most likely reads them apart
                    # (the answer must be the same when it does not).
                    await asyncio.sleep(0.005)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = await RawUpstream().start()
    yield server
    assert server.server is not None
    server.server.close()


@pytest.fixture
def edge_proxy(upstream: RawUpstream, proxies: Callable[..., Any]) -> Any:
    return proxies({"BREAKER_UPSTREAM": f"http://{LOOPBACK}:{upstream.port}"})


def get(path: str, method: str = "GET") -> bytes:
    return b"%b %b HTTP/1.1\r\nHost: a\r\n\r\n" % (method.encode(), path.encode())


async def test_the_common_head_and_split_ones_are_relayed_alike_on_one_connection(
    edge_proxy: Any, connect: Any, upstream: RawUpstream
) -> None:
    connection = await connect(edge_proxy.port)
    for path in ["/nginx", *(f"/split/{at}" for at in SPLITS), "/nginx"]:
        await connection.send(get(path))
        response = await connection.response()
        assert (response.status, response.body) == (200, BODY), path
        assert response.headers["server"] == "nginx/1.22.1"
        assert response.headers["etag"] == '"5f0c-264"'
        assert response.headers["content-length"] == "612"
        assert response.headers["x-sidecar-attempts"] == "1"
        assert "connection" not in response.headers
    assert upstream.connections == 1
    assert await edge_proxy.metric("sidecar_upstream_errors_total") == 0


async def test_a_small_response_split_at_every_byte_is_relayed_alike(
    edge_proxy: Any, connect: Any, upstream: RawUpstream
) -> None:
    connection = await connect(edge_proxy.port)
    for at in range(1, len(SMALL)):
        await connection.send(get(f"/small/{at}"))
        response = await connection.response()
        assert (response.status, response.body, response.headers["x-a"]) == (200, b"ok", "b")
    assert upstream.connections == 1
    assert await edge_proxy.metric("sidecar_upstream_errors_total") == 0


@pytest.mark.parametrize(
    "path",
    [
        "/duplicate-length",
        "/signed-length",
        "/nul-in-value",
        "/obs-fold",
        "/bare-lf",
        "/space-in-name",
    ],
)
async def test_hostile_heads_are_bad_responses(edge_proxy: Any, connect: Any, path: str) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get(path))
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (502, "upstream_unavailable")
    assert await edge_proxy.metric("sidecar_upstream_errors_total", kind="bad_response") == 1


async def test_bytes_after_a_response_deliver_it_and_retire_the_connection(
    edge_proxy: Any, connect: Any, upstream: RawUpstream
) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get("/extra"))
    response = await connection.response()
    assert (response.status, response.body) == (200, b"hello")
    assert await edge_proxy.metric("sidecar_upstream_errors_total", kind="bad_response") == 1
    await connection.send(get("/nginx"))
    assert (await connection.response()).body == BODY
    assert upstream.connections == 2  # the first was not reused
    assert len(edge_proxy.events("upstream_bytes_after_response")) == 1


async def test_a_body_cut_short_by_the_upstream_cuts_the_client(
    edge_proxy: Any, connect: Any
) -> None:
    connection = await connect(edge_proxy.port)
    await connection.send(get("/short"))
    async with asyncio.timeout(10):
        data = await connection.reader.read()  # up to the proxy's close
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 100" in head
    assert body == b"only this"
    assert await edge_proxy.metric("sidecar_upstream_errors_total", kind="reset") == 1


@pytest.mark.parametrize(
    "case",
    [
        ("/head", "HEAD", 200, 1),
        ("/204", "GET", 204, 1),
        ("/304", "GET", 304, 1),
        ("/http10-kept", "GET", 200, 1),
        ("/listed", "GET", 200, 1),
        ("/retry-after", "GET", 429, 1),
        ("/close", "GET", 200, 3),
        ("/http10", "GET", 200, 3),
    ],
)
async def test_edges_of_keep_alive_and_bodiless_answers(
    edge_proxy: Any, connect: Any, upstream: RawUpstream, case: tuple[str, str, int, int]
) -> None:
    path, method, status, connections = case  # connections: how many the upstream accepts
    for _ in range(3):
        connection = await connect(edge_proxy.port)  # the test's parser: one HEAD each
        connection.head_only = method == "HEAD"
        await connection.send(get(path, method))
        response = await connection.response()
        assert response.status == status
        assert "connection" not in response.headers
        if path == "/head":
            assert (response.headers["content-length"], response.headers["x-a"]) == ("612", "b")
        elif path == "/204":
            assert "content-length" not in response.headers and response.body == b""
        elif path == "/304":
            assert (response.headers["content-length"], response.body) == ("612", b"")
        elif path == "/listed":
            assert "x-secret" not in response.headers and response.headers["x-kept"] == "k"
        elif path == "/retry-after":
            assert response.headers["retry-after"] == "3"
        else:
            assert response.body == b"ok"
    assert upstream.connections == connections
    assert await edge_proxy.metric("sidecar_upstream_errors_total") == 0
