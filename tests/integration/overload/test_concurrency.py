"""P_MAX_REQUESTS, P_MAX_PENDING, P_QUEUE_TIMEOUT and P_MAX_ACTIVE_RETRIES through a real
``sidecars`` process and an upstream that counts the requests it serves at once."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from overload_parts import CountingUpstream
from proxy_parts import RunningProxy, ambassador_env, breaker_env, eventually, send
from support import LOOPBACK


async def concurrency(proxy: RunningProxy) -> dict[str, Any]:
    (route,) = (await proxy.status())["routes"].values()
    return dict(route["concurrency"])


def assert_overloaded(answer: tuple[int, Any, bytes]) -> None:
    status, headers, body = answer
    assert status == 503
    assert headers["X-Sidecar-Error"] == "overloaded"
    assert json.loads(body)["error"] == "overloaded"


async def test_the_upstream_never_sees_more_than_the_cap(upstreams: Any, proxies: Any) -> None:
    counting = CountingUpstream(service=0.05)
    upstream = await upstreams(mode=counting)
    env = breaker_env(upstream, max_requests="8", max_pending="40", queue_timeout="30s")
    proxy = await proxies("breaker", env)
    clients = 500
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        answers = await asyncio.gather(*(send(session, proxy) for _ in range(clients)))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503}
    for answer in answers:
        if answer[0] == 503:
            assert_overloaded(answer)
    assert counting.highest <= 8
    assert counting.highest >= 2  # the cap was reached for real, not serialised
    assert statuses[200] == counting.served >= 8 + 40  # the queue was served, not just the cap
    rejected = "sidecar_overload_rejected_total"
    assert await proxy.metric(rejected, reason="queue_full") == statuses[503]
    assert await proxy.metric(rejected, reason="queue_timeout") == 0
    state = await concurrency(proxy)
    assert state["in_flight"] == 0 and state["queue_depth"] == 0
    assert await proxy.metric("sidecar_in_flight") == 0
    assert await proxy.metric("sidecar_concurrency_limit") == 8
    if statuses[503]:
        assert proxy.events("overload_rejections_started")


async def test_a_queued_request_gets_the_slot_given_back(upstreams: Any, proxies: Any) -> None:
    upstream = await upstreams(mode="hang")
    env = breaker_env(upstream, max_requests="1", max_pending="1", queue_timeout="30s")
    proxy = await proxies("breaker", env)
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(send(session, proxy))
        await upstream.wait_hits(1)
        second = asyncio.ensure_future(send(session, proxy))

        async def queued() -> bool:
            return (await concurrency(proxy))["queue_depth"] == 1

        await eventually(queued, "a request queued")
        assert await proxy.metric("sidecar_queue_depth") == 1
        assert_overloaded(await send(session, proxy))  # over the cap and the queue
        assert upstream.hits == 1
        upstream.gate.set()
        assert (await first)[0] == 200
        assert (await second)[0] == 200
    assert upstream.hits == 2
    assert await proxy.metric("sidecar_overload_rejected_total", reason="queue_full") == 1


async def test_a_request_waits_no_longer_than_the_queue_timeout(
    upstreams: Any, proxies: Any
) -> None:
    upstream = await upstreams(mode="hang")
    env = breaker_env(upstream, max_requests="1", max_pending="5", queue_timeout="200ms")
    proxy = await proxies("breaker", env)
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(send(session, proxy))
        await upstream.wait_hits(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert_overloaded(await send(session, proxy))
        waited = loop.time() - started
        assert waited >= 0.2  # never answered before its queue timeout
        upstream.gate.set()
        assert (await first)[0] == 200
    assert upstream.hits == 1
    assert await proxy.metric("sidecar_overload_rejected_total", reason="queue_timeout") == 1
    assert (await concurrency(proxy))["queue_depth"] == 0


async def test_without_a_queue_the_excess_is_refused_at_once(
    upstreams: Any, proxies: Any
) -> None:
    upstream = await upstreams(mode="hang")
    proxy = await proxies("breaker", breaker_env(upstream, max_requests="2"))
    async with aiohttp.ClientSession() as session:
        held = [asyncio.ensure_future(send(session, proxy)) for _ in range(2)]
        await upstream.wait_hits(2)
        for _ in range(3):
            assert_overloaded(await send(session, proxy))
        upstream.gate.set()
        assert [(await answer)[0] for answer in held] == [200, 200]
        assert (await send(session, proxy))[0] == 200  # the slots came back
    assert await proxy.metric("sidecar_overload_rejected_total", reason="max_requests") == 3


async def test_active_retries_are_capped(upstreams: Any, proxies: Any) -> None:
    gate = asyncio.Event()
    failures = 0

    async def fail_then_hang(request: web.Request) -> web.StreamResponse:
        nonlocal failures
        if request.headers.get("X-Sidecar-Attempt", "1") == "1" and failures < 2:
            failures += 1
            return web.Response(status=503, text="first attempt fails")
        await gate.wait()
        return web.Response(text="retried")

    upstream = await upstreams(mode=fail_then_hang)
    env = ambassador_env(upstream, max_active_retries="1", max_attempts="3")
    proxy = await proxies("ambassador", env)
    async with aiohttp.ClientSession() as session:
        retrying = asyncio.ensure_future(send(session, proxy))
        await upstream.wait_hits(2)  # its retry is in flight (and hangs)
        status, _, body = await send(session, proxy)  # its retry is refused
        assert status == 503 and body == b"first attempt fails"  # the upstream's own answer
        gate.set()
        assert (await retrying)[0] == 200
    assert await proxy.metric("sidecar_overload_rejected_total", reason="max_retries") == 1


async def test_a_client_leaving_the_queue_gives_its_place_up(upstreams: Any, proxies: Any) -> None:
    upstream = await upstreams(mode="hang")
    env = breaker_env(upstream, max_requests="1", max_pending="1", queue_timeout="30s")
    proxy = await proxies("breaker", env)

    async def depth(expected: int) -> None:
        async def reached() -> bool:
            return (await concurrency(proxy))["queue_depth"] == expected

        await eventually(reached, f"queue depth {expected}")

    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(send(session, proxy))
        await upstream.wait_hits(1)
        _, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        await depth(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset: the client is gone, not half-closed
        await depth(0)  # the place is free again, and no slot was taken for it
        waiting = asyncio.ensure_future(send(session, proxy))
        await depth(1)
        upstream.gate.set()
        assert (await first)[0] == 200
        assert (await waiting)[0] == 200
    assert upstream.hits == 2
    assert (await concurrency(proxy))["in_flight"] == 0
    assert await proxy.metric("sidecar_overload_rejected_total", reason="queue_full") == 0
