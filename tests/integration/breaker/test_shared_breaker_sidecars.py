"""Breaker state shared through a real Redis by two real ``sidecars breaker`` processes."""

from __future__ import annotations

from typing import Any

import aiohttp
from proxy_parts import Proxies, RunningProxy, ScriptedUpstream, Upstreams, eventually


def shared_env(upstream: ScriptedUpstream, redis_url: str) -> dict[str, str]:
    return {
        "BREAKER_UPSTREAM": upstream.url,
        "BREAKER_FAILURE_THRESHOLD": "3",
        "BREAKER_OPEN_SECONDS": "30",
        "BREAKER_STATE_REDIS_URL": redis_url,
    }


async def status_of(session: aiohttp.ClientSession, proxy: RunningProxy) -> int:
    async with session.get(proxy.url + "/") as response:
        await response.read()
        return response.status


async def test_one_replica_trips_and_the_other_rejects_without_a_failure(
    upstreams: Upstreams, proxies: Proxies, redis_server: Any
) -> None:
    upstream = await upstreams(mode="500")
    first = await proxies("breaker", shared_env(upstream, redis_server.url))
    second = await proxies("breaker", shared_env(upstream, redis_server.url))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert await status_of(session, first) == 500
        await second.wait_breaker("open")
        for _ in range(5):
            async with session.get(second.url + "/") as response:
                assert response.status == 503
                assert response.headers["X-Sidecar-Error"] == "circuit_open"
    assert upstream.hits == 3
    assert await second.metric("sidecar_upstream_attempts_total", outcome="failure") == 0
    assert await second.metric("sidecar_circuit_rejected_total") == 5
    assert second.transitions() == [("closed", "open", "shared")]
    assert await second.metric("sidecar_circuit_shared_state_errors_total") == 0


async def test_redis_going_away_never_stops_traffic(
    upstreams: Upstreams, proxies: Proxies, redis_server: Any
) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", shared_env(upstream, redis_server.url))
    errors = "sidecar_circuit_shared_state_errors_total"
    async with aiohttp.ClientSession() as session:
        assert await status_of(session, proxy) == 200
        await eventually(lambda: bool(proxy.events("shared_state_connected")), "connected")
        redis_server.stop()
        for _ in range(20):
            assert await status_of(session, proxy) == 200

        async def errors_counted() -> bool:
            return await proxy.metric(errors) >= 3

        await eventually(errors_counted, "shared state errors counted")
        assert await status_of(session, proxy) == 200
        redis_server.start()
        await eventually(lambda: bool(proxy.events("shared_state_recovered")), "recovery")
        assert await status_of(session, proxy) == 200
    assert len(proxy.events("shared_state_unavailable")) == 1  # once per outage
    assert (await proxy.breaker())["state"] == "closed"
    assert upstream.hits == 23
