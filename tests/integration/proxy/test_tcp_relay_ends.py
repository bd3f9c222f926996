"""How TCP-mode relays end, through the real process: an idle one is closed after
P_IDLE_TIMEOUT, and an upstream reset reaches the client as a reset, not a clean end."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import LOOPBACK


@pytest.fixture
async def tcp_upstream() -> AsyncIterator[int]:
    """Echoes each read; on ``RESET`` it answers ``partial`` and resets the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if data == b"RESET":
                writer.write(b"partial")
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


def tcp_env(port: int, **settings: str) -> dict[str, str]:
    return {
        "BREAKER_PROTOCOL": "tcp",
        "BREAKER_UPSTREAM": f"tcp://{LOOPBACK}:{port}",
        **{f"BREAKER_{name}": value for name, value in settings.items()},
    }


async def test_an_idle_relay_is_closed(tcp_upstream: int, proxies: Callable[..., Any]) -> None:
    proxy = proxies(tcp_env(tcp_upstream, IDLE_TIMEOUT="500ms"))
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    async with asyncio.timeout(10):  # a deadline that proves the close, not a timing
        assert await reader.read() == b""
    writer.close()
    assert await proxy.metric("sidecar_tunnels_idle_closed_total") == 1
    assert proxy.events("tcp_idle_closed")


async def test_a_busy_relay_outlives_the_idle_timeout(
    tcp_upstream: int, proxies: Callable[..., Any]
) -> None:
    proxy = proxies(tcp_env(tcp_upstream, IDLE_TIMEOUT="1s"))
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.5  # past two idle periods, never idle for one
    while loop.time() < until:
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        await asyncio.sleep(0.05)  # the client's pace
    writer.close()
    assert await proxy.metric("sidecar_tunnels_idle_closed_total") == 0


async def test_an_upstream_reset_reaches_the_client_as_a_reset(
    tcp_upstream: int, proxies: Callable[..., Any]
) -> None:
    proxy = proxies(tcp_env(tcp_upstream))
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"RESET")
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(10):
            while await reader.read(65536):  # b"partial" may or may not come first
                pass
    writer.close()
    assert await proxy.metric("sidecar_upstream_errors_total", kind="reset") == 1
