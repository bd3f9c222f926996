"""What a real proxy process exports on /metrics: the ``sidecar_*`` families only, the process
collector, the build info, and request durations by status class."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from metrics_support import assert_process_and_build_info, families
from proxy_parts import RunningProxy, ScriptedUpstream, breaker_env, eventually
from support import metric_value

Proxies = Callable[[str, dict[str, str]], Awaitable[RunningProxy]]
Upstreams = Callable[..., Awaitable[ScriptedUpstream]]


async def test_a_proxy_exports_its_families_and_latency_by_status_class(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams("payments", "ok")
    upstream.script = ["503", "503"]
    proxy = await proxies("breaker", breaker_env(upstream, name="payments"))
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(proxy.url + "/charge") as response:
                await response.read()
    scraped: list[str] = []

    async def all_published() -> bool:  # at the end of a loop iteration, not at once
        scraped.append(await asyncio.to_thread(proxy.sidecar.metrics))
        return metric_value(scraped[-1], "sidecar_requests_total") >= 5

    await eventually(all_published, "five answers in /metrics")
    text = scraped[-1]
    assert not {name for name in families(text) if name.startswith("logadapter_")}
    assert_process_and_build_info(text)
    count = "sidecar_request_duration_seconds_count"
    labels = {"sidecar": "breaker", "upstream": "payments"}
    assert metric_value(text, count, status_class="2xx", **labels) == 3
    assert metric_value(text, count, status_class="5xx", **labels) == 2
    assert metric_value(text, count, **labels) == 5
