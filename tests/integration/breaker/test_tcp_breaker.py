"""The breaker in TCP mode in front of a real redis-server that goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from proxy_parts import RunningProxy, eventually
from support import LOOPBACK

Proxies = Callable[[str, dict[str, str]], Awaitable[RunningProxy]]


async def ping(port: int) -> bytes:
    """PING through a fresh connection: b"+PONG\\r\\n", or b"" when the sidecar hangs up."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(5):  # a hang is a failure of its own, not a test timeout
            return await reader.readline()
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_upstream_going_away_and_coming_back(proxies: Proxies, redis_server: Any) -> None:
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_PROTOCOL": "tcp",
            "BREAKER_UPSTREAM": f"tcp://{LOOPBACK}:{redis_server.port}",
            "BREAKER_FAILURE_THRESHOLD": "2",
            "BREAKER_OPEN_SECONDS": "1",
        },
    )
    assert await ping(proxy.port) == b"+PONG\r\n"

    async def relay_judged() -> bool:
        # The verdict on a relayed connection comes when both sides have closed.
        return bool((await proxy.breaker())["window"]["requests"] == 1)

    await eventually(relay_judged, "the first relay recorded as a success")
    redis_server.stop()
    assert await ping(proxy.port) == b""  # refused upstream: the client is hung up on
    assert await ping(proxy.port) == b""
    assert (await proxy.breaker())["state"] == "open"
    assert await ping(proxy.port) == b""  # rejected without dialling
    assert await proxy.metric("sidecar_circuit_rejected_total") == 1
    redis_server.start()
    await proxy.wait_breaker("half_open")
    assert await ping(proxy.port) == b"+PONG\r\n"  # the trial connection
    await proxy.wait_breaker("closed")
    assert await ping(proxy.port) == b"+PONG\r\n"
    transitions = "sidecar_circuit_transitions_total"
    assert await proxy.metric(transitions, **{"from": "half_open", "to": "closed"}) == 1
