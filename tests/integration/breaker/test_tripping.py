"""Issue 3 through the real ``sidecars breaker`` process: what trips the circuit, and the
answer while it is open."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from proxy_parts import (
    Proxies,
    Upstreams,
    assert_circuit_open,
    breaker_env,
    send,
)


async def test_failing_upstream_opens_the_circuit_and_is_left_alone(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams(mode="500")
    proxy = await proxies("breaker", breaker_env(upstream))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            status, _, body = await send(session, proxy)
            assert (status, body) == (500, b"500 from app")  # the upstream's own answer
        for _ in range(10):
            assert_circuit_open(await send(session, proxy), open_seconds=30)
    assert upstream.hits == 3
    assert await proxy.metric("sidecar_circuit_rejected_total") == 10
    assert await proxy.metric("sidecar_circuit_state", state="open") == 1
    assert await proxy.metric("sidecar_circuit_state", state="closed") == 0
    transitions = "sidecar_circuit_transitions_total"
    assert await proxy.metric(transitions, **{"from": "closed", "to": "open"}) == 1
    assert await proxy.metric("sidecar_upstream_attempts_total", outcome="failure") == 3
    assert await proxy.metric("sidecar_upstream_attempts_total", outcome="rejected") == 10
    assert await proxy.metric("sidecar_requests_total", code="503") == 10
    snapshot = await proxy.breaker()
    assert snapshot["state"] == "open"
    assert 0 < snapshot["seconds_until_half_open"] <= 30
    assert proxy.transitions() == [("closed", "open", "failure_threshold")]


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("hang", 504, "upstream_timeout"),
        ("reset", 502, "upstream_unavailable"),
        ("close", 502, "upstream_unavailable"),
        ("refuse", 502, "upstream_unavailable"),
    ],
)
async def test_every_kind_of_upstream_failure_trips(
    upstreams: Upstreams, proxies: Proxies, behaviour: str, status: int, code: str
) -> None:
    upstream = await upstreams(mode="ok" if behaviour == "refuse" else behaviour)
    proxy = await proxies("breaker", breaker_env(upstream, failure_threshold="2", timeout="300ms"))
    if behaviour == "refuse":
        await upstream.stop()
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            answer, headers, body = await send(session, proxy)
            assert (answer, headers["X-Sidecar-Error"]) == (status, code)
            assert json.loads(body)["error"] == code
        assert_circuit_open(await send(session, proxy), open_seconds=30)
    assert upstream.hits == (0 if behaviour == "refuse" else 2)


async def test_client_errors_are_not_the_upstreams_fault(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams(mode="404")
    proxy = await proxies("breaker", breaker_env(upstream, failure_threshold="2"))
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            assert (await send(session, proxy))[0] == 404
    assert upstream.hits == 6
    assert (await proxy.breaker())["state"] == "closed"


async def test_a_slow_call_counts_as_a_failure(upstreams: Upstreams, proxies: Proxies) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)  # the behaviour under test, not a wait for readiness
        return web.Response(text="slow but fine")

    upstream = await upstreams(mode=slow)
    proxy = await proxies(
        "breaker", breaker_env(upstream, failure_threshold="2", slow_call="100ms")
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            status, _, body = await send(session, proxy)
            assert (status, body) == (200, b"slow but fine")
        assert_circuit_open(await send(session, proxy), open_seconds=30)
    assert (await proxy.breaker())["last_failure"] == "slow"


async def test_the_failure_ratio_trips_over_the_window(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    upstream.script = ["ok", "500"] * 5
    proxy = await proxies(
        "breaker",
        breaker_env(upstream, failure_threshold="100", failure_ratio="0.5", min_requests="10"),
    )
    async with aiohttp.ClientSession() as session:
        statuses = [(await send(session, proxy))[0] for _ in range(10)]
        assert statuses == [200, 500] * 5
        assert_circuit_open(await send(session, proxy), open_seconds=30)
    assert proxy.transitions() == [("closed", "open", "failure_ratio")]


async def test_a_name_that_does_not_resolve_is_a_502_saying_so(proxies: Proxies) -> None:
    """``.invalid`` never resolves (RFC 6761); the deadlines leave the system resolver time to
    say so even when no DNS server answers."""
    proxy = await proxies(
        "breaker",
        breaker_env("http://payments.invalid:8080", connect_timeout="20s", timeout="25s"),
    )
    async with aiohttp.ClientSession() as session:
        status, headers, body = await send(session, proxy)
    assert (status, headers["X-Sidecar-Error"]) == (502, "upstream_unavailable")
    assert json.loads(body)["detail"] == "the upstream's name did not resolve"
    assert await proxy.metric("sidecar_upstream_errors_total", kind="dns") == 1
    (failed,) = proxy.events("upstream_attempt_failed")
    assert failed["kind"] == "dns"
