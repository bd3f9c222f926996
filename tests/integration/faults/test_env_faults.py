"""Fault injection from the environment through the real ``sidecars`` process: where a fault
acts (the attempt, seen by the retries, or the request, seen by the client) and what it does."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from proxy_parts import Proxies, Upstreams, ambassador_env, breaker_env, send
from support import LOOPBACK


async def test_an_attempt_scoped_abort_is_retried_by_the_ambassador(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    # 100%: every attempt aborted would fail the request; the retries see each abort.
    proxy = await proxies(
        "ambassador", ambassador_env(upstream, fault_abort="503@100%", breaker="off")
    )
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy)
    assert status == 503
    assert headers["X-Sidecar-Fault"] == "abort"
    assert headers["X-Sidecar-Attempts"] == "3"  # retried like an upstream's 503
    assert json.loads(body)["error"] == "fault_injected"
    assert upstream.hits == 0  # injected in the upstream's place
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 3
    assert await proxy.metric("sidecar_retries_total", reason="503") == 2


async def test_retries_absorb_a_partial_attempt_abort(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies(
        "ambassador",
        ambassador_env(
            upstream,
            fault_abort="503@30%",
            breaker="off",
            retry_budget_min_per_second="1000",
            max_attempts="10",
        ),
    )
    async with aiohttp.ClientSession() as session:
        answers = [await send(session, proxy) for _ in range(60)]
    # 0.3**10 per request: the client sees successes only (a failure: 60 in 170,000 runs).
    assert {status for status, _, _ in answers} == {200}
    injected = await proxy.metric("sidecar_faults_injected_total", kind="abort")
    assert injected > 0
    assert await proxy.metric("sidecar_retries_total", reason="503") == injected
    assert upstream.hits == 60


async def test_a_request_scoped_abort_reaches_the_client_without_a_retry(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies(
        "ambassador", ambassador_env(upstream, fault_abort="503@100%", fault_scope="request")
    )
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Error"]) == (503, "fault_injected")
    assert headers["X-Sidecar-Attempts"] == "0"
    assert await proxy.metric("sidecar_retries_total", reason="503") == 0
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 1
    assert upstream.hits == 0


async def test_an_attempt_scoped_reset_is_retried_and_counted_by_the_breaker(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", breaker_env(upstream, fault_reset="100%"))
    async with aiohttp.ClientSession() as session:
        answers = [await send(session, proxy) for _ in range(4)]
    assert [status for status, _, _ in answers] == [502, 502, 502, 503]  # then open
    assert answers[0][1]["X-Sidecar-Error"] == "upstream_unavailable"
    assert answers[3][1]["X-Sidecar-Error"] == "circuit_open"
    assert await proxy.metric("sidecar_faults_injected_total", kind="reset") == 3
    assert await proxy.metric("sidecar_upstream_errors_total", kind="reset") == 3
    assert upstream.hits == 0


async def test_a_request_scoped_reset_cuts_the_client_connection(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies(
        "ambassador", ambassador_env(upstream, fault_reset="100%", fault_scope="request")
    )
    reader, writer = await asyncio.open_connection(LOOPBACK, proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = await reader.read()
    except ConnectionResetError:
        answer = b""
    writer.close()
    assert answer == b""  # no response at all
    assert await proxy.metric("sidecar_requests_total", code="444") == 1
    assert upstream.hits == 0


async def test_an_attempt_delay_past_the_per_try_timeout_is_a_timeout_retried(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies(
        "ambassador",
        ambassador_env(upstream, fault_delay="10s@100%", per_try_timeout="50ms", timeout="1s"),
    )
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Error"]) == (504, "upstream_timeout")
    assert await proxy.metric("sidecar_retries_total", reason="timeout") >= 1
    assert await proxy.metric("sidecar_faults_injected_total", kind="delay") >= 2
    assert upstream.hits == 0


async def test_a_short_delay_lets_the_request_through(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", ambassador_env(upstream, fault_delay="20ms@100%"))
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy)
    assert (status, body, headers["X-Sidecar-Attempts"]) == (200, b"ok from app", "1")
    assert await proxy.metric("sidecar_faults_injected_total", kind="delay") == 1
    assert upstream.hits == 1
