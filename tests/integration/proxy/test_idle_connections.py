"""Idle client connections through the real process: the shared deadline wheel closes them,
a connection idle long enough to have given back its parser and exchange is still served,
and a storm of connections opened and closed leaves the sidecar healthy."""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import LOOPBACK

from sidecars.proxy.client import IDLE_RELEASE

GET = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
STORM = 2000
WAVE = 64  # requests in flight at once on the storm's connections
# Descriptors besides the storm's: the sidecar's reserve for its admin port (at most 256),
# this process's own files and the backend's listening side.
SPARE_DESCRIPTORS = 512


@pytest.fixture
def short_idle_proxy(backend: Any, proxies: Callable[..., Any]) -> Any:
    return proxies(
        {
            "BREAKER_UPSTREAM": backend.url,
            "BREAKER_HEADER_TIMEOUT": "1s",
            "BREAKER_IDLE_TIMEOUT": "1s",
        }
    )


async def test_idle_keep_alive_connections_are_closed(short_idle_proxy: Any, connect: Any) -> None:
    """Many connections' deadlines on one wheel: every idle one is closed, and one that
    never spoke is closed by the header deadline."""
    spoke = [await connect(short_idle_proxy.port) for _ in range(20)]
    silent = await connect(short_idle_proxy.port)
    for connection in spoke:
        await connection.send(GET)
        assert (await connection.response()).status == 200
    assert all(await asyncio.gather(*(c.closed() for c in [*spoke, silent])))


async def test_a_connection_idle_past_the_release_is_served_again(proxy: Any, connect: Any) -> None:
    connection = await connect(proxy.port)
    for _ in range(3):
        await connection.send(GET)
        assert (await connection.response()).status == 200
        # Idle long enough to give back its parser and exchange (what is tested here).
        await asyncio.sleep(IDLE_RELEASE * 3)
    await connection.send(GET + GET)  # pipelined, on freshly made ones
    assert [(await connection.response()).status for _ in range(2)] == [200, 200]


@pytest.fixture
def storm(backend: Any, proxies: Callable[..., Any]) -> Iterator[tuple[Any, int]]:
    """A sidecar started with room for the storm (it inherits this process's descriptor
    limit, raised as far as the hard limit allows), and the storm's size: a sidecar short of
    descriptors pauses accepting (tested in test_descriptor_reserve.py), which is not what is
    tested here. Each storm connection that asks costs one more descriptor on both sides
    (the sidecar's upstream connection, the backend's end of it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = STORM * 3 // 2 + SPARE_DESCRIPTORS
    limit = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), hard))
    try:
        # The header deadline must not run out while the storm is still being opened.
        running = proxies({"BREAKER_UPSTREAM": backend.url, "BREAKER_HEADER_TIMEOUT": "60s"})
        size = min(STORM, (limit - SPARE_DESCRIPTORS) * 2 // 3)
        if size < 200:
            pytest.skip(f"the hard descriptor limit ({hard}) leaves no room for a storm")
        yield running, size
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_storm_of_connections_leaves_the_process_healthy(storm: tuple[Any, int]) -> None:
    proxy, size = storm
    sockets = []
    try:
        for _ in range(size):
            sock = socket.create_connection((LOOPBACK, proxy.port), timeout=10)
            sockets.append(sock)
        asking = sockets[::2]
        # In waves: a thousand requests at once would need a thousand upstream connections
        # at once, past the backend's accept backlog (128), and SYN retries outlast the
        # connect timeout. The storm tested is the client side's.
        for start in range(0, len(asking), WAVE):
            wave = asking[start : start + WAVE]
            for sock in wave:
                sock.sendall(GET)
            for sock in wave:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()
    with socket.create_connection((LOOPBACK, proxy.port), timeout=10) as sock:
        sock.sendall(GET)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert proxy.sidecar.process.poll() is None
