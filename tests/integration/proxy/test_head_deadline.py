"""P_HEADER_TIMEOUT through the real process: it runs from accept for a connection's first
request, and from the first byte of the next request on keep-alive (bytes before the target
included), so a dribbling client cannot stretch it to twice its length.

Each client here would complete its head before the deadline if the deadline started at the
request target; with the deadline from accept (or the first byte) it gets 408 first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

HEADER_TIMEOUT = 2.0


async def dribble(connection: Any, schedule: list[tuple[float, bytes]]) -> None:
    """Send each piece at its time (seconds from now): a slow client's pace."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at, data in schedule:
        await asyncio.sleep(max(0.0, start + at - loop.time()))
        with contextlib.suppress(ConnectionError):
            await connection.send(data)


async def answer_to_dribble(connection: Any, schedule: list[tuple[float, bytes]]) -> Any:
    sending = asyncio.create_task(dribble(connection, schedule))
    try:
        return await connection.response()
    finally:
        sending.cancel()


@pytest.fixture
def slow_head_proxy(backend: Any, proxies: Callable[..., Any]) -> Any:
    return proxies(
        {
            "BREAKER_UPSTREAM": backend.url,
            "BREAKER_HEADER_TIMEOUT": f"{HEADER_TIMEOUT:g}s",
            "BREAKER_IDLE_TIMEOUT": "60s",
        }
    )


async def test_the_first_head_is_timed_from_accept(slow_head_proxy: Any, connect: Any) -> None:
    connection = await connect(slow_head_proxy.port)
    # Silent for most of the timeout, then the target, then the end of the head: complete
    # before target + timeout, late by accept + timeout.
    response = await answer_to_dribble(
        connection,
        [
            (0.75 * HEADER_TIMEOUT, b"GET /echo HTTP/1.1\r\nHost: a\r\n"),
            (1.6 * HEADER_TIMEOUT, b"\r\n"),
        ],
    )
    assert (response.status, response.headers["x-sidecar-error"]) == (408, "bad_request")
    assert await connection.closed()
    metric = "sidecar_bad_requests_total"
    assert await slow_head_proxy.metric(metric, reason="header_timeout") == 1


async def test_a_keep_alive_head_is_timed_from_its_first_byte(
    slow_head_proxy: Any, connect: Any
) -> None:
    connection = await connect(slow_head_proxy.port)
    await connection.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await connection.response()).status == 200
    # The method at once (before any target), the rest dribbled.
    response = await answer_to_dribble(
        connection,
        [
            (0.0, b"GET"),
            (0.75 * HEADER_TIMEOUT, b" /echo HTTP/1.1\r\nHost: a\r\n"),
            (1.6 * HEADER_TIMEOUT, b"\r\n"),
        ],
    )
    assert (response.status, response.headers["x-sidecar-error"]) == (408, "bad_request")
    assert await connection.closed()


async def test_an_idle_keep_alive_connection_may_then_send_a_whole_head(
    slow_head_proxy: Any, connect: Any
) -> None:
    connection = await connect(slow_head_proxy.port)
    await connection.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await connection.response()).status == 200
    # Idle longer than the header timeout (P_IDLE_TIMEOUT applies), then a prompt head.
    response = await answer_to_dribble(
        connection, [(1.5 * HEADER_TIMEOUT, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")]
    )
    assert response.status == 200
