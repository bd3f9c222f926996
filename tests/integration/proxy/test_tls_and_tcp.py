"""https upstreams (verification, SNI, a custom CA) and TCP mode (relay, half-close, refusal)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from support import LOOPBACK, free_port

GET = b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[int, Path, list[str]]]:
    """An https upstream with a certificate for "localhost" from a private CA; yields its port,
    the CA bundle file and the SNI names clients sent."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    names: list[str] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name) and None  # type: ignore[func-returns-value]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls ok, host {request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=server_context)
    await site.start()
    yield int(runner.addresses[0][1]), ca_file, names
    await runner.cleanup()


async def test_an_https_upstream_is_verified_against_the_ca_file(
    tls_upstream: tuple[int, Path, list[str]], proxies: Callable[..., Any], connect: Any
) -> None:
    port, ca_file, names = tls_upstream
    proxy = proxies(
        {"BREAKER_UPSTREAM": f"https://localhost:{port}", "BREAKER_UPSTREAM_CA_FILE": str(ca_file)}
    )
    connection = await connect(proxy.port)
    await connection.send(GET)
    response = await connection.response()
    assert (response.status, response.body) == (200, f"tls ok, host localhost:{port}".encode())
    assert names == ["localhost"]


async def test_an_untrusted_certificate_is_a_tls_failure(
    tls_upstream: tuple[int, Path, list[str]], proxies: Callable[..., Any], connect: Any
) -> None:
    port, _, _ = tls_upstream
    proxy = proxies({"BREAKER_UPSTREAM": f"https://localhost:{port}"})  # system CAs only
    connection = await connect(proxy.port)
    await connection.send(GET)
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (502, "upstream_unavailable")
    assert await proxy.metric("sidecar_upstream_errors_total", kind="tls") == 1
    (failure,) = proxy.events("upstream_attempt_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in failure["detail"]


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Echoes until the client half-closes, then says goodbye and closes."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            writer.write(data)
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()


async def test_tcp_mode_relays_bytes_and_half_close(
    echo_server: tuple[int, list[bytes]], proxies: Callable[..., Any]
) -> None:
    port, received = echo_server
    proxy = proxies({"BREAKER_PROTOCOL": "tcp", "BREAKER_UPSTREAM": f"tcp://{LOOPBACK}:{port}"})
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    big = bytes(range(256)) * 4096  # 1 MiB both ways, more than any socket buffer
    writer.write(big)
    writer.write_eof()  # the upstream sees the end of input, and still answers
    echoed = await reader.read()
    writer.close()
    assert echoed == big + b"bye"
    assert b"".join(received) == big
    assert await proxy.metric("sidecar_connections_total") == 1
    assert await proxy.metric("sidecar_upstream_attempts_total", outcome="success") == 1


async def test_tcp_mode_hangs_up_when_the_upstream_refuses(proxies: Callable[..., Any]) -> None:
    proxy = proxies(
        {"BREAKER_PROTOCOL": "tcp", "BREAKER_UPSTREAM": f"tcp://{LOOPBACK}:{free_port()}"}
    )
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"PING\r\n")
    # Closed with the PING unread, the kernel may reset rather than end the stream.
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    writer.close()
    assert await proxy.metric("sidecar_upstream_errors_total", kind="connect") == 1
    assert (await proxy.metric("sidecar_upstream_attempts_total", outcome="failure")) == 1
