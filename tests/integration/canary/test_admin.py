"""POST /canary/* on a real ``sidecars breaker``: the token, every action, the weight body."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from proxy_parts import Proxies, RunningProxy, Upstreams, send

TOKEN = "canary-token"


async def post(
    proxy: RunningProxy, path: str, token: str | None = TOKEN, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.sidecar.admin_url + path, headers=headers, **kwargs) as response,
    ):
        return response.status, json.loads(await response.read())


def env(stable: str, canary: str, **extra: str) -> dict[str, str]:
    return {
        "BREAKER_UPSTREAM": stable,
        "BREAKER_CANARY_UPSTREAM": canary,
        "BREAKER_CANARY_STEPS": "10,50,100",
        "BREAKER_CANARY_INTERVAL": "1h",
        **extra,
    }


async def test_actions_need_the_token(upstreams: Upstreams, proxies: Proxies) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    untokened = await proxies("breaker", env(stable.url, canary.url))
    status, body = await post(untokened, "/canary/promote")
    assert (status, body["error"]) == (403, "forbidden")
    proxy = await proxies("breaker", env(stable.url, canary.url, SIDECAR_ADMIN_TOKEN=TOKEN))
    for token in (None, "wrong"):
        status, body = await post(proxy, "/canary/promote", token=token)
        assert (status, body["error"]) == (401, "unauthorized")
    (route,) = (await proxy.status())["routes"].values()
    assert (route["canary"]["state"], route["canary"]["weight"]) == ("progressing", 10)
    assert not proxy.events("canary_transition")


async def test_every_action_moves_the_rollout(upstreams: Upstreams, proxies: Proxies) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies("breaker", env(stable.url, canary.url, SIDECAR_ADMIN_TOKEN=TOKEN))

    async def act(path: str, **kwargs: Any) -> tuple[str, int]:
        status, body = await post(proxy, path, **kwargs)
        assert status == 200, body
        (view,) = body["routes"].values()
        return view["state"], view["weight"]

    assert await act("/canary/pause") == ("paused", 10)
    assert await act("/canary/weight", json={"weight": 0}) == ("paused", 0)
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            assert (await send(session, proxy))[2] == b"ok from stable"
    assert await act("/canary/resume") == ("progressing", 10)
    assert await act("/canary/rollback") == ("rolled_back", 0)
    assert await act("/canary/promote") == ("promoted", 100)
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            assert (await send(session, proxy))[2] == b"ok from canary"
    assert await proxy.metric("sidecar_canary_weight") == 100
    assert (
        await proxy.metric("sidecar_canary_transitions_total", to="paused", reason="operator")
        == 2
    )
    moves = [(e["to"], e["weight"], e["reason"]) for e in proxy.events("canary_transition")]
    assert moves == [
        ("paused", 10, "operator"),
        ("paused", 0, "operator"),
        ("progressing", 10, "operator"),
        ("rolled_back", 0, "operator"),
        ("promoted", 100, "operator"),
    ]


async def test_bad_requests_change_nothing(upstreams: Upstreams, proxies: Proxies) -> None:
    stable, canary = await upstreams("stable"), await upstreams("canary")
    proxy = await proxies("breaker", env(stable.url, canary.url, SIDECAR_ADMIN_TOKEN=TOKEN))
    for body in (b"", b"{}", b'{"weight": 101}', b'{"weight": "5"}', b"[1]"):
        status, answer = await post(proxy, "/canary/weight", data=body)
        assert (status, answer["error"]) == (400, "bad_request"), body
    status, answer = await post(proxy, "/canary/nudge")
    assert status == 404
    status, answer = await post(proxy, "/canary/pause?route=elsewhere")
    assert status == 404
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            proxy.sidecar.admin_url + "/canary/pause",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 405
    (route,) = (await proxy.status())["routes"].values()
    assert (route["canary"]["state"], route["canary"]["weight"]) == ("progressing", 10)
