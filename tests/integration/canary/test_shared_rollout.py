"""One rollout for the service: two real ``sidecars breaker`` replicas sharing it through one
real redis-server move through the steps together."""

from __future__ import annotations

from typing import Any

import aiohttp
import redis
from proxy_parts import Proxies, RunningProxy, Upstreams, eventually, send

TOKEN = "canary-token"


def replica_env(stable: str, canary: str, redis_url: str) -> dict[str, str]:
    return {
        "BREAKER_UPSTREAM": stable,
        "BREAKER_BREAKER": "off",
        "BREAKER_CANARY_UPSTREAM": canary,
        "BREAKER_CANARY_STEPS": "10,50,100",
        "BREAKER_CANARY_INTERVAL": "300ms",
        "BREAKER_CANARY_MIN_REQUESTS": "20",
        "BREAKER_STATE_REDIS_URL": redis_url,
        "SIDECAR_ADMIN_TOKEN": TOKEN,
    }


async def rollout(proxy: RunningProxy) -> dict[str, Any]:
    (route,) = (await proxy.status())["routes"].values()
    return dict(route["canary"])


async def test_two_replicas_move_through_the_steps_together(
    upstreams: Upstreams, proxies: Proxies, redis_server: Any
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    first = await proxies("breaker", replica_env(stable.url, canary.url, redis_server.url))
    second = await proxies("breaker", replica_env(stable.url, canary.url, redis_server.url))
    async with aiohttp.ClientSession() as session:
        # Only the first replica gets traffic: it judges, the second follows its steps.
        async def first_at(weight: int) -> bool:
            for _ in range(50):
                await send(session, first)
            return bool((await rollout(first))["weight"] >= weight)

        try:
            await eventually(lambda: first_at(50), "the first replica at step 50")
        except AssertionError:  # seen once in a CI dry run: what the leader did, for the record
            print("leader:", first.events("canary_transition"), await rollout(first))
            raise

        async def second_follows() -> bool:
            return bool((await rollout(second))["weight"] >= 50)

        await eventually(second_follows, "the second replica at step 50")
        await eventually(lambda: first_at(100), "the first replica promoted")

        async def both_promoted() -> bool:
            states = [(await rollout(p))["state"] for p in (first, second)]
            return states == ["promoted", "promoted"]

        await eventually(both_promoted, "both replicas promoted")
        # An operator's rollback on the second replica reaches the first.
        async with session.post(
            second.sidecar.admin_url + "/canary/rollback",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            assert response.status == 200

        async def first_rolled_back() -> bool:
            state = await rollout(first)
            return bool((state["state"], state["weight"]) == ("rolled_back", 0))

        await eventually(first_rolled_back, "the rollback shared")
    follower = [(e["to"], e["weight"], e["reason"]) for e in second.events("canary_transition")]
    assert follower[:2] == [("progressing", 50, "shared"), ("promoted", 100, "shared")]
    assert follower[-1] == ("rolled_back", 0, "operator")
    leader = [(e["to"], e["reason"]) for e in first.events("canary_transition")]
    assert leader == [
        ("progressing", "healthy"),
        ("promoted", "healthy"),
        ("rolled_back", "shared"),
    ]
    (route,) = (await second.status())["routes"].values()
    assert route["canary_shared_state"]["connected"] is True
    assert await second.metric("sidecar_canary_shared_state_errors_total") == 0


async def test_redis_going_away_keeps_the_local_rollout(
    upstreams: Upstreams, proxies: Proxies, redis_server: Any
) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies("breaker", replica_env(stable.url, canary.url, redis_server.url))
    await eventually(lambda: bool(proxy.events("shared_state_connected")), "connected")
    redis_server.stop()

    async def errors_counted() -> bool:
        return await proxy.metric("sidecar_canary_shared_state_errors_total") >= 2

    await eventually(errors_counted, "shared rollout errors counted")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            proxy.sidecar.admin_url + "/canary/weight",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"weight": 100},
        ) as response:
            assert response.status == 200
        for _ in range(10):
            assert (await send(session, proxy))[2] == b"ok from canary"
        redis_server.start()
        await eventually(lambda: bool(proxy.events("shared_state_recovered")), "recovery")
    # The operator's weight, kept while Redis was away, is what the store holds now.
    await eventually(lambda: redis_server_weight(redis_server) == b"100", "weight published")
    assert len(proxy.events("shared_state_unavailable")) == 1


def redis_server_weight(redis_server: Any) -> bytes | None:
    """The shared weight as the store holds it (the route is named after its host)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        return client.hget("sidecars:breaker:127.0.0.1:canary", "weight")  # type: ignore[return-value]
    finally:
        client.close()
