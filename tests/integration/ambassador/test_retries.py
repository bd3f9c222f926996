"""Issue 4 through the real ``sidecars ambassador`` process: which failures are retried."""

from __future__ import annotations

import json

import aiohttp
import pytest
from proxy_parts import Proxies, Upstreams, ambassador_env, send
from support import LOOPBACK, free_port


async def test_a_flaky_upstream_is_retried_until_it_answers(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["503", "503", "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy, path="/orders?id=7")
    assert (status, body) == (200, b"ok from app")
    assert headers["X-Sidecar-Attempts"] == "3"
    assert [seen.headers["X-Sidecar-Attempt"] for seen in upstream.seen] == ["1", "2", "3"]
    assert {seen.path for seen in upstream.seen} == {"/orders?id=7"}
    assert len({seen.headers["X-Request-Id"] for seen in upstream.seen}) == 1
    assert await proxy.metric("sidecar_retries_total", reason="503") == 2
    assert await proxy.metric("sidecar_requests_total", code="200") == 1
    failed = proxy.events("upstream_attempt_failed")
    assert [(e["attempt"], e["kind"], e["status"], e["retry"]) for e in failed] == [
        (1, "status", 503, True),
        (2, "status", 503, True),
    ]
    assert all(0 <= event["backoff"] <= 0.005 for event in failed)  # full jitter, max 5ms
    assert "_created" not in proxy.sidecar.metrics()  # no timestamp series per counter


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("reset", "reset"), ("hang", "timeout"), ("502", "502"), ("504", "504")],
)
async def test_each_retryable_failure_is_retried(
    upstreams: Upstreams, proxies: Proxies, behaviour: str, reason: str
) -> None:
    upstream = await upstreams()
    upstream.script = [behaviour, "ok"]
    proxy = await proxies("ambassador", ambassador_env(upstream, per_try_timeout="300ms"))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Attempts"]) == (200, "2")
    assert await proxy.metric("sidecar_retries_total", reason=reason) == 1


async def test_a_refused_upstream_is_retried_then_reported(proxies: Proxies) -> None:
    proxy = await proxies(
        "ambassador", ambassador_env(f"http://{LOOPBACK}:{free_port()}", breaker="off")
    )
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy, "POST", data=b"never sent")
    assert (status, headers["X-Sidecar-Error"]) == (502, "upstream_unavailable")
    assert headers["X-Sidecar-Attempts"] == "3"  # never sent: even a POST may be retried
    assert json.loads(body)["error"] == "upstream_unavailable"
    assert await proxy.metric("sidecar_retries_total", reason="connect-failure") == 2


async def test_a_client_error_is_not_retried(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams(mode="404")
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Attempts"], upstream.hits) == (404, "1", 1)
