"""Issue 4 through the real ``sidecars ambassador`` process: Retry-After, the deadline and
the retry budget."""

from __future__ import annotations

import aiohttp
from proxy_parts import Proxies, Upstreams, ambassador_env, send


async def test_retry_after_is_waited_instead_of_the_backoff(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503 retry-after=1", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Attempts"]) == (200, "2")
    # The backoff is at most 5 ms here; only the upstream's Retry-After explains a wait of a
    # second. (A lower bound: a slow machine cannot make this fail.)
    assert upstream.seen[1].at - upstream.seen[0].at >= 0.9
    assert await proxy.metric("sidecar_retries_total", reason="503") == 1


async def test_retry_after_beyond_the_deadline_returns_the_answer_at_once(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503 retry-after=30", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream, timeout="2s"))
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy)
    assert (status, body) == (503, b"503 from app")
    assert headers["Retry-After"] == "30"  # passed on to the client, who may wait
    assert headers["X-Sidecar-Attempts"] == "1"
    assert upstream.hits == 1
    skipped = "sidecar_retries_skipped_total"
    assert await proxy.metric(skipped, reason="retry_after_exceeds_deadline") == 1


async def test_a_deadline_shorter_than_the_backoff_returns_the_answer(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503", "ok"]
    # Full jitter over a day against half a second left: a retry here has odds of 1 in 170000.
    env = {**ambassador_env(upstream, timeout="500ms"), "AMBASSADOR_BACKOFF_BASE": "24h"}
    env["AMBASSADOR_BACKOFF_MAX"] = "24h"
    proxy = await proxies("ambassador", env)
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Attempts"], upstream.hits) == (503, "1", 1)
    assert await proxy.metric("sidecar_retries_skipped_total", reason="deadline") == 1


async def test_the_budget_holds_amplification_in_a_total_outage(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams(mode="503")
    proxy = await proxies(
        "ambassador",
        ambassador_env(
            upstream,
            breaker="off",
            max_attempts="3",
            retry_budget_ratio="0.2",
            retry_budget_min_per_second="0",
        ),
    )
    clients = 100
    async with aiohttp.ClientSession() as session:
        for _ in range(clients):
            assert (await send(session, proxy))[0] == 503
    # Without a budget: 300 attempts. With it: one retry per five requests.
    assert clients < upstream.hits <= clients * 1.2
    retries = await proxy.metric("sidecar_retries_total")
    assert retries == upstream.hits - clients
    assert await proxy.metric("sidecar_retry_budget_exhausted_total") >= clients - retries
