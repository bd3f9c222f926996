"""P_MAX_CONNECTIONS in TCP mode, in front of a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from proxy_parts import RunningProxy, eventually
from support import LOOPBACK


async def open_relay(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """b"+PONG\\r\\n" through the relay, or b"" when the sidecar hung up."""
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(5):  # a hang is a failure of its own, not a test timeout
            return await reader.readline()
    except ConnectionError:
        return b""


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def open_connections(proxy: RunningProxy) -> int:
    (route,) = (await proxy.status())["routes"].values()
    return int(route["connections"])


async def test_connections_past_the_cap_are_closed_at_once(
    proxies: Any, redis_server: Any
) -> None:
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_PROTOCOL": "tcp",
            "BREAKER_UPSTREAM": f"tcp://{LOOPBACK}:{redis_server.port}",
            "BREAKER_MAX_CONNECTIONS": "2",
        },
    )
    relays = [await open_relay(proxy.port) for _ in range(2)]
    for relay in relays:
        assert await ping(*relay) == b"+PONG\r\n"
    third = await open_relay(proxy.port)
    assert await ping(*third) == b""  # closed without a dial
    await close(third[1])
    rejected = "sidecar_overload_rejected_total"
    assert await proxy.metric(rejected, reason="max_connections") == 1
    await close(relays[0][1])

    async def one_left() -> bool:
        return await open_connections(proxy) == 1

    await eventually(one_left, "the closed relay forgotten")
    again = await open_relay(proxy.port)
    assert await ping(*again) == b"+PONG\r\n"  # under the cap again
    for _, writer in (relays[1], again):
        await close(writer)
    assert await proxy.metric(rejected, reason="max_connections") == 1
    assert proxy.events("overload_rejections_started")
