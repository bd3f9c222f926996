"""The admin port through the real ``sidecars breaker`` process: a slow client is cut after
the request deadline, and past the connection cap new connections are closed, so dribbling
clients cannot hold the admin plane (often bound to every interface)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from support import LOOPBACK, Sidecar, free_port, http_get, metric_value

from sidecars import admin

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"


@pytest.fixture
async def breaker() -> AsyncIterator[Sidecar]:
    admin_port = free_port()
    env = {
        "BREAKER_UPSTREAM": f"http://{LOOPBACK}:{free_port()}",
        "BREAKER_LISTEN": f"{LOOPBACK}:{free_port()}",
        "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
    }
    sidecar = Sidecar(["breaker"], env, admin_port).start()
    try:
        await sidecar.wait_ready()
        yield sidecar
    finally:
        sidecar.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed; fails if it is still open after
    ``seconds`` (a deadline that proves the close, not a timing)."""
    received = b""
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                received += data
    return received


async def closed_count(sidecar: Sidecar, reason: str) -> float:
    text = await asyncio.to_thread(sidecar.metrics)
    return metric_value(text, "sidecars_admin_connections_closed_total", reason=reason)


async def test_a_dribbling_admin_client_is_cut_at_the_request_deadline(breaker: Sidecar) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, breaker.admin_port)
    request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: " + b"x" * 10_000

    async def dribble() -> None:
        for byte in request:  # one byte a second, never a whole head
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
            await asyncio.sleep(1)  # the client's pace

    sending = asyncio.create_task(dribble())
    try:
        assert await closed_within(reader, 3 * admin.REQUEST_SECONDS) == b""
    finally:
        sending.cancel()
        writer.close()
    assert await closed_count(breaker, "request_timeout") == 1
    status, _ = await asyncio.to_thread(http_get, breaker.admin_url + "/readyz")
    assert status == 200


async def test_connections_past_the_cap_are_closed(breaker: Sidecar) -> None:
    held: list[asyncio.StreamWriter] = []
    try:
        for _ in range(admin.MAX_CONNECTIONS):
            reader, writer = await asyncio.open_connection(LOOPBACK, breaker.admin_port)
            writer.write(HEALTHZ)  # answered, then kept alive: surely counted by the server
            await reader.readuntil(b"alive")
            held.append(writer)
        reader, writer = await asyncio.open_connection(LOOPBACK, breaker.admin_port)
        writer.write(HEALTHZ)
        assert await closed_within(reader, 10) == b""
        writer.close()
    finally:
        for writer in held:
            writer.close()
    # Once the held connections are gone, the admin plane answers again.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        with contextlib.suppress(OSError):
            if await closed_count(breaker, "too_many") >= 1:  # polls may add to it
                break
        assert loop.time() < deadline, "the admin plane did not answer again"
        await asyncio.sleep(0.02)  # polling interval
