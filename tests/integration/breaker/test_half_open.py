"""Issue 3 through the real ``sidecars breaker`` process: half-open trials and recovery."""

from __future__ import annotations

import asyncio

import aiohttp
from proxy_parts import (
    Proxies,
    Upstreams,
    assert_circuit_open,
    breaker_env,
    eventually,
    send,
)


async def test_recovery_through_half_open(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams(mode="500")
    proxy = await proxies("breaker", breaker_env(upstream, open_seconds="1"))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await send(session, proxy)
        assert (await send(session, proxy))[0] == 503
        upstream.mode = "ok"
        await proxy.wait_breaker("half_open")
        assert (await send(session, proxy))[0] == 200  # the trial
        assert (await proxy.breaker())["state"] == "closed"
        assert [(await send(session, proxy))[0] for _ in range(5)] == [200] * 5
    transitions = "sidecar_circuit_transitions_total"
    for old, new in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]:
        assert await proxy.metric(transitions, **{"from": old, "to": new}) == 1
    assert await proxy.metric("sidecar_circuit_state", state="closed") == 1
    assert [reason for _, _, reason in proxy.transitions()] == [
        "failure_threshold",
        "open_timeout",
        "trials_succeeded",
    ]


async def test_a_failed_trial_opens_for_a_fresh_period(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams(mode="500")
    proxy = await proxies("breaker", breaker_env(upstream, open_seconds="1"))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await send(session, proxy)
        await proxy.wait_breaker("half_open")
        assert (await send(session, proxy))[0] == 500  # the trial fails
        snapshot = await proxy.breaker()
        assert snapshot["state"] == "open"
        assert snapshot["seconds_until_half_open"] > 0
        assert_circuit_open(await send(session, proxy), open_seconds=1)
    assert upstream.hits == 4
    transitions = "sidecar_circuit_transitions_total"
    assert await proxy.metric(transitions, **{"from": "half_open", "to": "open"}) == 1


async def test_a_half_open_stampede_lets_exactly_the_trials_through(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams(mode="500")
    proxy = await proxies(
        "breaker",
        breaker_env(upstream, failure_threshold="2", open_seconds="1", half_open_requests="3"),
    )
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(2):
            await send(session, proxy)
        assert upstream.hits == 2
        upstream.mode = "hang"  # trials wait at the upstream until the gate opens
        await proxy.wait_breaker("half_open")
        calls = [asyncio.create_task(send(session, proxy)) for _ in range(100)]
        await upstream.wait_hits(5)
        await eventually(lambda: sum(call.done() for call in calls) == 97, "97 rejections")
        assert upstream.hits == 5  # 2 before, exactly 3 trials now
        rejected = [call.result() for call in calls if call.done()]
        for answer in rejected:
            assert_circuit_open(answer, open_seconds=1)
        snapshot = await proxy.breaker()
        assert snapshot["state"] == "half_open"
        assert snapshot["half_open"]["permits_out"] == 3
        upstream.gate.set()
        trials = await asyncio.gather(*calls)
    assert sorted(answer[0] for answer in trials) == [200] * 3 + [503] * 97
    assert (await proxy.breaker())["state"] == "closed"
    assert await proxy.metric("sidecar_circuit_rejected_total") == 97
