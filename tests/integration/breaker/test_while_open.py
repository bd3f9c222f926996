"""Issue 3 through the real ``sidecars breaker`` process: the fallback upstream and the
operator's forced states."""

from __future__ import annotations

import aiohttp
from proxy_parts import (
    Proxies,
    Upstreams,
    assert_circuit_open,
    breaker_env,
    send,
)


async def test_the_fallback_upstream_serves_while_open(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    primary = await upstreams("primary", mode="503")
    fallback = await upstreams("fallback")
    proxy = await proxies("breaker", breaker_env(primary, fallback_upstream=fallback.url))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert (await send(session, proxy))[0] == 503
        for _ in range(5):
            status, headers, body = await send(session, proxy)
            assert (status, body) == (200, b"ok from fallback")
            assert "X-Sidecar-Error" not in headers
    assert primary.hits == 3
    assert fallback.hits == 5
    assert await proxy.metric("sidecar_fallback_requests_total") == 5
    assert (await proxy.breaker())["state"] == "open"


async def test_an_operator_forces_the_circuit_with_the_token(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", {**breaker_env(upstream), "SIDECAR_ADMIN_TOKEN": "s3cret"})
    admin = proxy.sidecar.admin_url
    good = {"Authorization": "Bearer s3cret"}
    async with aiohttp.ClientSession() as session:
        async with session.post(admin + "/breaker/open") as response:
            assert response.status == 401
        bad = {"Authorization": "Bearer wrong"}
        async with session.post(admin + "/breaker/open", headers=bad) as response:
            assert response.status == 401
        assert (await send(session, proxy))[0] == 200
        async with session.post(admin + "/breaker/open", headers=good) as response:
            assert response.status == 200
        for _ in range(3):
            assert_circuit_open(await send(session, proxy), open_seconds=30)
        snapshot = await proxy.breaker()
        assert (snapshot["state"], snapshot["forced"]) == ("open", True)
        async with session.post(admin + "/breaker/close", headers=good) as response:
            assert response.status == 200
        assert (await send(session, proxy))[0] == 200
    assert upstream.hits == 2
    assert (await proxy.breaker())["forced"] is False
    assert proxy.transitions() == [("closed", "open", "forced"), ("open", "closed", "forced")]


async def test_without_a_token_the_circuit_cannot_be_forced(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", breaker_env(upstream))
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer anything"}
        async with session.post(proxy.sidecar.admin_url + "/breaker/open", headers=headers) as r:
            assert r.status == 403
        assert (await send(session, proxy))[0] == 200
    assert (await proxy.breaker())["state"] == "closed"
