"""Issue 4 through the real ``sidecars ambassador`` process: an https upstream behind a
private CA, and a table of routes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import trustme
from proxy_parts import Proxies, Upstreams, ambassador_env, send
from support import LOOPBACK, free_port


async def test_an_https_upstream_verified_with_a_private_ca(
    upstreams: Upstreams, proxies: Proxies, private_ca: tuple[trustme.CA, Path]
) -> None:
    ca, ca_file = private_ca
    upstream = await upstreams("secure", ca=ca)
    assert upstream.url.startswith("https://")
    trusting = await proxies("ambassador", ambassador_env(upstream, upstream_ca_file=str(ca_file)))
    doubting = await proxies("ambassador", ambassador_env(upstream, breaker="off"))
    async with aiohttp.ClientSession() as session:
        status, _, body = await send(session, trusting)
        assert (status, body) == (200, b"ok from secure")
        status, headers, _ = await send(session, doubting)
        assert (status, headers["X-Sidecar-Error"]) == (502, "upstream_unavailable")
    assert upstream.hits == 1  # the unverified handshake never carried a request
    assert await doubting.metric("sidecar_upstream_errors_total", kind="tls") >= 1


async def test_a_route_table_with_overrides_and_its_own_metrics(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    payments, search = await upstreams("payments"), await upstreams("search")
    payments.script = ["503", "ok"]
    search.script = ["503", "ok"]
    pay_port, search_port = free_port(), free_port()
    proxy = await proxies(
        "ambassador",
        {
            "AMBASSADOR_ROUTES": "pay,search",
            "AMBASSADOR_BACKOFF_BASE": "1ms",
            "AMBASSADOR_BACKOFF_MAX": "5ms",
            "AMBASSADOR_ROUTE_PAY_UPSTREAM": payments.url,
            "AMBASSADOR_ROUTE_PAY_LISTEN": f"{LOOPBACK}:{pay_port}",
            "AMBASSADOR_ROUTE_SEARCH_UPSTREAM": search.url,
            "AMBASSADOR_ROUTE_SEARCH_LISTEN": f"{LOOPBACK}:{search_port}",
            "AMBASSADOR_ROUTE_SEARCH_MAX_ATTEMPTS": "1",
        },
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{LOOPBACK}:{pay_port}/") as response:
            assert (response.status, await response.text()) == (200, "ok from payments")
            assert response.headers["X-Sidecar-Attempts"] == "2"
        async with session.get(f"http://{LOOPBACK}:{search_port}/") as response:
            assert (response.status, await response.text()) == (503, "503 from search")
            assert response.headers["X-Sidecar-Attempts"] == "1"
    assert (payments.hits, search.hits) == (2, 1)
    requests = "sidecar_requests_total"
    assert await proxy.metric(requests, upstream="pay", code="200") == 1
    assert await proxy.metric(requests, upstream="search", code="503") == 1
    assert await proxy.metric("sidecar_retries_total", upstream="pay") == 1
    assert await proxy.metric("sidecar_retries_total", upstream="search") == 0
