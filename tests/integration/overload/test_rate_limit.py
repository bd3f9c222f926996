"""P_RATE_LIMIT through real ``sidecars`` processes: the local bucket, and one limit shared by
two replicas through a real redis-server, with the local fallback while Redis is down."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp
from proxy_parts import RunningProxy, breaker_env, eventually, send


async def hammer(
    session: aiohttp.ClientSession,
    proxy: RunningProxy,
    seconds: float,
    admitted_at: list[float] | None = None,
) -> Counter[int]:
    """Requests back to back from 16 clients for ``seconds`` (an offered load far above the
    limits tested, even on a loaded machine): the answers' statuses; ``admitted_at`` gets the
    time of each 200."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            status, headers, body = await send(session, proxy)
            statuses[status] += 1
            if status == 200 and admitted_at is not None:
                admitted_at.append(time.monotonic())
            if status == 429:
                assert headers["X-Sidecar-Error"] == "rate_limited"
                assert int(headers["Retry-After"]) >= 1
                assert json.loads(body)["error"] == "rate_limited"

    await asyncio.gather(*(client() for _ in range(16)))
    return statuses


def rate_env(upstream: Any, rate: str, **settings: str) -> dict[str, str]:
    return breaker_env(upstream, rate_limit=rate, rate_limit_burst="10", **settings)


async def test_the_admitted_count_follows_the_rate(upstreams: Any, proxies: Any) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", rate_env(upstream, "100/s"))
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        statuses = await hammer(session, proxy, 3.0)
        elapsed = time.monotonic() - started
    assert set(statuses) == {200, 429}
    expected = 10 + 100 * elapsed  # the burst, then the rate
    print(f"admitted {statuses[200]} of {sum(statuses.values())}, expected {expected:.0f}")
    assert abs(statuses[200] - expected) <= 0.03 * expected + 2
    assert upstream.hits == statuses[200]
    assert await proxy.metric("sidecar_rate_limited_total") == statuses[429]
    assert proxy.events("rate_limit_rejections_started")


async def test_two_replicas_share_one_limit_through_redis(
    upstreams: Any, proxies: Any, redis_server: Any
) -> None:
    upstream = await upstreams()
    env = rate_env(upstream, "50/s", rate_limit_redis_url=redis_server.url)
    first = await proxies("breaker", env)
    second = await proxies("breaker", env)
    admitted_at: list[float] = []
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        both = await asyncio.gather(
            hammer(session, first, 5.0, admitted_at), hammer(session, second, 5.0, admitted_at)
        )
    # The steady rate, past the burst and the first connections: seconds 1 to 4.
    admitted = sum(1 for at in admitted_at if started + 1.0 <= at < started + 4.0)
    print(f"two replicas admitted {admitted} in 3 s, expected 150")
    assert abs(admitted - 150) <= 0.05 * 150
    assert all(statuses[200] > 0 and statuses[429] > 0 for statuses in both)
    for proxy in (first, second):
        assert await proxy.metric("sidecar_rate_limit_fallback_total") == 0
        (route,) = (await proxy.status())["routes"].values()
        assert route["rate_limit"]["shared"]["replicas"] == 2


async def test_traffic_goes_on_on_the_local_fallback_while_redis_is_down(
    upstreams: Any, proxies: Any, redis_server: Any
) -> None:
    upstream = await upstreams()
    env = rate_env(upstream, "50/s", rate_limit_redis_url=redis_server.url)
    proxy = await proxies("breaker", env)
    fallback = "sidecar_rate_limit_fallback_total"
    async with aiohttp.ClientSession() as session:
        assert (await send(session, proxy))[0] == 200
        redis_server.stop()
        statuses = await hammer(session, proxy, 1.5)
        assert statuses[200] > 0 and statuses[429] > 0  # still limited, locally
        decided = await proxy.metric(fallback)
        print(f"while Redis was down: {dict(statuses)}, {decided:.0f} decided locally")
        assert decided >= statuses[200]
        redis_server.start()

        async def recovered() -> bool:
            await send(session, proxy)
            return bool(proxy.events("rate_limit_redis_recovered"))

        await eventually(recovered, "Redis asked again")
        after = await proxy.metric(fallback)
        assert (await send(session, proxy))[0] in (200, 429)
        assert await proxy.metric(fallback) == after  # decided in Redis again
    assert len(proxy.events("rate_limit_redis_unavailable")) == 1
    assert decided > 0
