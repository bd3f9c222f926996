"""The progressive rollout in a real ``sidecars breaker``: a healthy canary stepped up to
promotion on a short interval, a canary failing 20% rolled back at its first judgement and
kept at 0."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from proxy_parts import Proxies, RunningProxy, Upstreams, eventually, send


def progressive_env(stable: str, canary: str, **extra: str) -> dict[str, str]:
    return {
        "BREAKER_UPSTREAM": stable,
        "BREAKER_BREAKER": "off",
        "BREAKER_CANARY_UPSTREAM": canary,
        "BREAKER_CANARY_STEPS": "10,50,100",
        "BREAKER_CANARY_INTERVAL": "300ms",
        "BREAKER_CANARY_MIN_REQUESTS": "20",
        **{f"BREAKER_CANARY_{key.upper()}": value for key, value in extra.items()},
    }


async def rollout(proxy: RunningProxy) -> dict[str, Any]:
    (route,) = (await proxy.status())["routes"].values()
    return dict(route["canary"])


async def drive_until(proxy: RunningProxy, state: str) -> dict[str, Any]:
    """Send requests until the rollout reaches ``state``; its last snapshot."""
    seen: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:

        async def reached() -> bool:
            for _ in range(50):
                await send(session, proxy)
            seen.append(await rollout(proxy))
            return bool(seen[-1]["state"] == state)

        await eventually(reached, f"rollout {state}")
    return seen[-1]


async def test_a_healthy_canary_is_stepped_up_to_promotion(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies("breaker", progressive_env(stable.url, canary.url))
    assert (await rollout(proxy))["weight"] == 10
    promoted = await drive_until(proxy, "promoted")
    assert promoted["weight"] == 100
    moves = [(e["to"], e["weight"], e["reason"]) for e in proxy.events("canary_transition")]
    assert moves == [
        ("progressing", 50, "healthy"),
        ("promoted", 100, "healthy"),
    ]
    step = proxy.events("canary_transition")[0]
    assert step["canary"]["requests"] >= 20 and step["canary"]["failures"] == 0
    assert step["stable"]["requests"] > 0
    assert await proxy.metric("sidecar_canary_weight") == 100
    assert (
        await proxy.metric("sidecar_canary_transitions_total", to="promoted", reason="healthy") == 1
    )
    hits = stable.hits
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            assert (await send(session, proxy))[2] == b"ok from canary"
    assert stable.hits == hits


async def test_a_canary_failing_a_fifth_is_rolled_back_and_kept_at_zero(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    calls = 0

    async def one_in_five_fails(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=500 if calls % 5 == 0 else 200, text="canary")

    stable, canary = await upstreams("stable"), await upstreams("canary", one_in_five_fails)
    proxy = await proxies("breaker", progressive_env(stable.url, canary.url))
    rolled_back = await drive_until(proxy, "rolled_back")
    assert rolled_back["weight"] == 0
    (event,) = proxy.events("canary_transition")  # no step up before it
    assert (event["to"], event["reason"], event["from_weight"]) == (
        "rolled_back",
        "failure_ratio",
        10,
    )
    assert 0.15 <= event["canary"]["failure_ratio"] <= 0.25
    assert event["level"] == "warn"
    assert (
        await proxy.metric(
            "sidecar_canary_transitions_total", to="rolled_back", reason="failure_ratio"
        )
        == 1
    )
    hits = canary.hits
    async with aiohttp.ClientSession() as session:

        async def three_intervals_at_zero() -> bool:
            for _ in range(50):
                assert (await send(session, proxy))[2] == b"ok from stable"
            state = await rollout(proxy)
            assert (state["state"], state["weight"]) == ("rolled_back", 0)
            return bool(state["interval_seconds"] >= 0.9)

        await eventually(three_intervals_at_zero, "three intervals after the rollback")
    assert canary.hits == hits
    assert await proxy.metric("sidecar_canary_weight") == 0
