"""Fault injection in TCP mode through the real ``sidecars breaker`` process: a refused
connect, a delayed connect and a reset mid-stream, from the environment and from a drill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from proxy_parts import Proxies, RunningProxy, breaker_env, eventually
from support import LOOPBACK


class EchoServer:
    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"tcp://{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    server.server = await asyncio.start_server(server.handle, LOOPBACK, 0)
    yield server
    server.server.close()


def tcp_env(echo: EchoServer, **settings: str) -> dict[str, str]:
    return breaker_env(echo.url, protocol="tcp", **settings)


async def exchange(proxy: RunningProxy, payload: bytes = b"ping") -> tuple[bytes, bytes | None]:
    """What came back for ``payload``, then the rest (None: the stream was reset)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    try:
        writer.write(payload)
        first = await reader.read(65536)
        writer.write(b"more")
        try:
            rest: bytes | None = await reader.read(65536)
        except ConnectionResetError:
            rest = None
        return first, rest
    except ConnectionResetError:
        return b"", None
    finally:
        writer.close()


async def test_a_refused_connect_is_injected(echo: EchoServer, proxies: Proxies) -> None:
    proxy = await proxies("breaker", tcp_env(echo, fault_abort="503@100%"))
    first, _ = await exchange(proxy)
    assert first == b""  # closed without a byte
    assert echo.connections == 0
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 1
    assert await proxy.metric("sidecar_upstream_errors_total", kind="connect") == 1


async def test_a_connect_delayed_past_the_connect_timeout_times_out(
    echo: EchoServer, proxies: Proxies
) -> None:
    proxy = await proxies("breaker", tcp_env(echo, fault_delay="10s@100%", connect_timeout="100ms"))
    first, _ = await exchange(proxy)
    assert first == b""
    assert echo.connections == 0
    assert await proxy.metric("sidecar_upstream_errors_total", kind="timeout") == 1
    assert await proxy.metric("sidecar_faults_injected_total", kind="delay") == 1


async def test_a_short_connect_delay_still_relays(echo: EchoServer, proxies: Proxies) -> None:
    proxy = await proxies("breaker", tcp_env(echo, fault_delay="20ms@100%"))
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    assert await proxy.metric("sidecar_faults_injected_total", kind="delay") == 1


async def test_a_stream_is_reset_after_its_first_bytes(echo: EchoServer, proxies: Proxies) -> None:
    proxy = await proxies("breaker", tcp_env(echo, fault_reset="100%"))
    first, rest = await exchange(proxy)
    assert first == b"ping"  # mid-stream: the first bytes went through
    assert rest in (None, b"")  # then the cut, never the echo of "more"
    assert await proxy.metric("sidecar_faults_injected_total", kind="reset") == 1

    async def counted() -> bool:
        return await proxy.metric("sidecar_upstream_errors_total", kind="reset") == 1

    await eventually(counted, "the reset counted as the upstream's")


async def test_a_drill_resets_tcp_streams_until_deleted(echo: EchoServer, proxies: Proxies) -> None:
    proxy = await proxies("breaker", {**tcp_env(echo), "SIDECAR_ADMIN_TOKEN": "t"})
    headers = {"Authorization": "Bearer t"}
    url = proxy.sidecar.admin_url + "/faults"
    async with aiohttp.ClientSession() as session:
        body = {"reset": True, "duration": "1m"}
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 201
        assert (await exchange(proxy))[1] in (None, b"")
        async with session.delete(url, headers=headers) as response:
            assert response.status == 200
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.write(b"more")
    assert await reader.readexactly(4) == b"more"
    writer.close()
