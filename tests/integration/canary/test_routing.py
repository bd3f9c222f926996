"""Canary routing through a real ``sidecars`` process and real upstreams: the weighted split,
the forcing and sticky header, and a failed canary attempt retried on the stable cluster."""

from __future__ import annotations

import asyncio

import aiohttp
from proxy_parts import Proxies, RunningProxy, Upstreams, eventually, send

REQUESTS = 3000


async def spread(proxy: RunningProxy, count: int, workers: int = 10, **kwargs: object) -> None:
    """``count`` GETs through ``proxy`` from ``workers`` concurrent clients, all answered 200."""
    async with aiohttp.ClientSession() as session:

        async def worker(share: int) -> None:
            for _ in range(share):
                status, _, _ = await send(session, proxy, **kwargs)  # type: ignore[arg-type]
                assert status == 200

        await asyncio.gather(*(worker(count // workers) for _ in range(workers)))


async def test_weighted_split_within_a_few_percent(upstreams: Upstreams, proxies: Proxies) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_UPSTREAM": stable.url,
            "BREAKER_CANARY_UPSTREAM": canary.url,
            "BREAKER_CANARY_WEIGHT": "20",
        },
    )
    await spread(proxy, REQUESTS)
    assert stable.hits + canary.hits == REQUESTS
    assert abs(canary.hits - REQUESTS * 0.20) < REQUESTS * 0.03, canary.hits
    assert await proxy.metric("sidecar_canary_weight") == 20
    counted = await proxy.metric("sidecar_canary_requests_total", version="canary", code="200")
    assert counted == canary.hits
    assert (
        await proxy.metric("sidecar_canary_requests_total", version="stable", code="200")
        == stable.hits
    )
    (route,) = (await proxy.status())["routes"].values()
    canary_status = route["canary"]
    assert canary_status["state"] == "static"
    assert canary_status["weight"] == 20
    assert canary_status["canary_serving"] is True


async def test_weight_zero_sends_nothing_to_the_canary(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies(
        "breaker", {"BREAKER_UPSTREAM": stable.url, "BREAKER_CANARY_UPSTREAM": canary.url}
    )
    await spread(proxy, 200)
    assert (stable.hits, canary.hits) == (200, 0)


async def test_header_forces_a_version_and_sticks_a_user(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_UPSTREAM": stable.url,
            "BREAKER_CANARY_UPSTREAM": canary.url,
            "BREAKER_CANARY_WEIGHT": "50",
            "BREAKER_CANARY_HEADER": "X-Version",
        },
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            status, _, body = await send(session, proxy, headers={"X-Version": "Canary"})
            assert (status, body) == (200, b"ok from canary")
            status, _, body = await send(session, proxy, headers={"x-version": "stable"})
            assert (status, body) == (200, b"ok from stable")
        # Sticky: every user sees one version on every request; at 50% both sides get users.
        sides: dict[str, set[bytes]] = {}
        for user in range(40):
            for _ in range(5):
                _, _, body = await send(session, proxy, headers={"X-Version": f"user-{user}"})
                sides.setdefault(f"user-{user}", set()).add(body)
    assert all(len(seen) == 1 for seen in sides.values())
    chosen = {next(iter(seen)) for seen in sides.values()}
    assert chosen == {b"ok from canary", b"ok from stable"}


async def test_a_failed_canary_attempt_is_retried_on_stable(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary", mode="503")
    proxy = await proxies(
        "ambassador",
        {
            "AMBASSADOR_UPSTREAM": stable.url,
            "AMBASSADOR_BACKOFF_BASE": "1ms",
            "AMBASSADOR_BACKOFF_MAX": "5ms",
            "AMBASSADOR_CANARY_UPSTREAM": canary.url,
            "AMBASSADOR_CANARY_WEIGHT": "100",
        },
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            status, _, body = await send(session, proxy)
            assert (status, body) == (200, b"ok from stable")
    assert (canary.hits, stable.hits) == (10, 10)
    assert await proxy.metric("sidecar_canary_requests_total", version="canary", code="503") == 10
    assert await proxy.metric("sidecar_canary_requests_total", version="stable", code="200") == 10


async def test_a_canary_gets_weight_only_once_its_health_checks_pass(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    canary.health = 503
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_UPSTREAM": stable.url,
            "BREAKER_CANARY_UPSTREAM": canary.url,
            "BREAKER_CANARY_WEIGHT": "50",
            "BREAKER_HEALTH_CHECK_PATH": "/healthz",
            "BREAKER_HEALTH_CHECK_INTERVAL": "50ms",
            "BREAKER_HEALTHY_THRESHOLD": "1",
        },
    )
    await spread(proxy, 200)
    assert (stable.hits, canary.hits) == (200, 0)
    (route,) = (await proxy.status())["routes"].values()
    assert route["canary"]["canary_serving"] is False
    canary.health = 200

    async def canary_serving() -> bool:
        (route,) = (await proxy.status())["routes"].values()
        return bool(route["canary"]["canary_serving"])

    await eventually(canary_serving, "the canary passing its health checks")
    await spread(proxy, 200)
    assert canary.hits > 50


async def test_canary_failures_do_not_open_the_stable_circuit(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary", mode="500")
    proxy = await proxies(
        "breaker",
        {
            "BREAKER_UPSTREAM": stable.url,
            "BREAKER_FAILURE_THRESHOLD": "3",
            "BREAKER_CANARY_UPSTREAM": canary.url,
            "BREAKER_CANARY_HEADER": "X-Version",
        },
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            status, _, _ = await send(session, proxy, headers={"X-Version": "canary"})
            assert status == 500
        assert (await send(session, proxy))[2] == b"ok from stable"
    assert (await proxy.breaker())["state"] == "closed"
    assert await proxy.metric("sidecar_canary_requests_total", version="canary", code="500") == 10
