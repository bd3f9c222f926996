"""Header-triggered faults (P_FAULT_HEADERS=on) through the real ``sidecars`` process."""

from __future__ import annotations

import aiohttp
from proxy_parts import Proxies, Upstreams, ambassador_env, send

ABORT = {"X-Sidecar-Fault-Abort": "503", "X-Sidecar-Fault-Percent": "100"}


async def test_a_header_abort_is_injected_and_retried(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", ambassador_env(upstream, fault_headers="on", breaker="off"))
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy, headers=ABORT)
        assert (status, headers["X-Sidecar-Fault"], headers["X-Sidecar-Attempts"]) == (
            503,
            "abort",
            "3",
        )
        # The request's own fault: the next request, without the headers, goes through.
        status, _, body = await send(session, proxy)
    assert (status, body) == (200, b"ok from app")
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 3


async def test_fault_headers_never_reach_the_upstream(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", ambassador_env(upstream, fault_headers="on"))
    async with aiohttp.ClientSession() as session:
        status, _, _ = await send(
            session,
            proxy,
            headers={"X-Sidecar-Fault-Delay": "10ms", "X-Other": "kept"},
        )
        # A share of 0%: no fault, and the headers are still taken out.
        await send(session, proxy, headers={**ABORT, "X-Sidecar-Fault-Percent": "0"})
    assert status == 200
    assert await proxy.metric("sidecar_faults_injected_total", kind="delay") == 1
    assert upstream.hits == 2
    for seen in upstream.seen:
        assert not [name for name in seen.headers if name.lower().startswith("x-sidecar-fault")]
    assert upstream.seen[0].headers["X-Other"] == "kept"


async def test_fault_headers_are_ignored_unless_turned_on(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", ambassador_env(upstream))
    async with aiohttp.ClientSession() as session:
        status, _, body = await send(session, proxy, headers=ABORT)
    assert (status, body) == (200, b"ok from app")
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 0
    # Not the sidecar's to interpret when off: relayed like any other header.
    assert upstream.seen[0].headers["X-Sidecar-Fault-Abort"] == "503"
