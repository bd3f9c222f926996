"""Clusters end to end: real sidecar processes, three replicas on 127.0.0.2/.3/.4 behind one
name served by a real dnsmasq, balancing, ejection, retries elsewhere, DNS changes, health
checks and the circuit of the whole cluster."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
from cluster_parts import DnsFactory, Replicas
from proxy_parts import (
    Proxies,
    ambassador_env,
    breaker_env,
    eventually,
    send,
)


async def load(
    session: aiohttp.ClientSession, proxy: Any, workers: int, each: int
) -> Counter[int]:
    """``workers`` clients at once, each sending ``each`` requests one after the other; the
    statuses answered."""
    statuses: Counter[int] = Counter()

    async def client() -> None:
        for _ in range(each):
            statuses[(await send(session, proxy))[0]] += 1

    await asyncio.gather(*(client() for _ in range(workers)))
    return statuses


def endpoints(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (route,) = status["routes"].values()
    return {e["address"]: e for e in route["endpoints"]}


async def test_a_name_is_a_cluster_of_every_address_and_traffic_spreads(
    replicas: Replicas, dnsmasq: DnsFactory, proxies: Proxies
) -> None:
    group = await replicas("ok", "ok", "ok")
    dns = await dnsmasq({"api.test": [r.host for r in group]})
    proxy = await proxies(
        "breaker",
        breaker_env(f"http://api.test:{group[0].port}", dns_servers=dns.server, lb="round-robin"),
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            assert (await send(session, proxy))[0] == 200
    assert [r.hits for r in group] == [10, 10, 10]
    status = await proxy.status()
    assert sorted(endpoints(status)) == [f"{r.host}:{r.port}" for r in group]
    assert await proxy.metric(
        "sidecar_endpoints", sidecar="breaker", upstream="api.test", state="healthy"
    ) == 3
    assert await proxy.metric(
        "sidecar_endpoint_requests_total",
        sidecar="breaker",
        upstream="api.test",
        endpoint=f"{group[1].host}:{group[1].port}",
    ) == 10
    added = {e["endpoint"] for e in proxy.events("endpoint_added")}
    assert added == {f"{r.host}:{r.port}" for r in group}


async def slow_handler(request: Any) -> Any:
    from aiohttp import web  # noqa: PLC0415

    await asyncio.sleep(0.3)
    return web.Response(text="slow")


async def test_least_request_and_ewma_send_less_to_a_slowed_endpoint(
    replicas: Replicas, proxies: Proxies
) -> None:
    group = await replicas(slow_handler, "ok", "ok")
    urls = ",".join(r.url for r in group)
    for lb in ("least-request", "ewma"):
        for r in group:
            r.seen.clear()
        proxy = await proxies("breaker", breaker_env(urls, lb=lb))
        async with aiohttp.ClientSession() as session:
            assert (await load(session, proxy, workers=6, each=15)) == {200: 90}
        slow, *fast = (r.hits for r in group)
        assert slow * 2 < min(fast), (lb, slow, fast)


async def test_a_failing_endpoint_is_ejected_with_no_client_errors_and_returns(
    replicas: Replicas, proxies: Proxies
) -> None:
    group = await replicas("500", "ok", "ok")
    sick = group[0]
    proxy = await proxies(
        "ambassador",
        ambassador_env(
            ",".join(r.url for r in group),
            lb="round-robin",
            retry_on="5xx",
            outlier_consecutive_failures="3",
            outlier_base_ejection="1s",
        ),
    )
    address = f"{sick.host}:{sick.port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            assert (await send(session, proxy))[0] == 200  # retried on another endpoint
        assert sick.hits == 3  # then ejected: no more requests
        assert endpoints(await proxy.status())[address]["state"] == "ejected"
        (event,) = proxy.events("endpoint_ejected")
        assert event["endpoint"] == address and event["reason"] == "consecutive_failures"
        assert await proxy.metric(
            "sidecar_outlier_ejections_total",
            sidecar="ambassador",
            upstream="127.0.0.2",
            reason="consecutive_failures",
        ) == 1
        sick.mode = "ok"  # recovered: after the ejection it takes traffic again

        async def back() -> bool:
            await send(session, proxy)
            return sick.hits > 3

        await eventually(back, "the ejected endpoint back in rotation")
    assert proxy.events("endpoint_returned")[0]["endpoint"] == address


async def test_a_hung_endpoint_with_a_per_try_timeout_is_retried_elsewhere(
    replicas: Replicas, proxies: Proxies
) -> None:
    group = await replicas("hang", "ok")
    proxy = await proxies(
        "ambassador",
        ambassador_env(
            ",".join(r.url for r in group), lb="round-robin", per_try_timeout="200ms"
        ),
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            status, _, body = await send(session, proxy)
            assert (status, body) == (200, b"ok from replica3")
    assert group[0].hits >= 1
    failures = proxy.events("upstream_attempt_failed")
    assert failures and {f["kind"] for f in failures} == {"timeout"}
    assert {f["endpoint"] for f in failures} == {f"{group[0].host}:{group[0].port}"}


async def test_records_changed_in_dns_move_the_traffic(
    replicas: Replicas, dnsmasq: DnsFactory, proxies: Proxies
) -> None:
    group = await replicas("ok", "ok", "ok")
    first, second, third = group
    dns = await dnsmasq({"api.test": [first.host, second.host]})
    proxy = await proxies(
        "breaker",
        breaker_env(
            f"http://api.test:{first.port}",
            dns_servers=dns.server,
            dns_ttl="1s",
            lb="round-robin",
        ),
    )
    await dns.set({"api.test": [second.host, third.host]})
    async with aiohttp.ClientSession() as session:

        async def moved() -> bool:
            assert (await send(session, proxy))[0] == 200
            return set(endpoints(await proxy.status())) == {
                f"{second.host}:{second.port}",
                f"{third.host}:{third.port}",
            }

        await eventually(moved, "the cluster to follow DNS")
        before = first.hits
        for _ in range(10):
            assert (await send(session, proxy))[0] == 200
    assert first.hits == before  # removed: no new requests
    assert third.hits >= 5
    assert {e["endpoint"] for e in proxy.events("endpoint_removed")} == {
        f"{first.host}:{first.port}"
    }


async def test_srv_records_name_the_endpoints_host_and_port(
    replicas: Replicas, dnsmasq: DnsFactory, proxies: Proxies
) -> None:
    group = await replicas("ok", "ok")
    dns = await dnsmasq(
        {"a.svc.test": [group[0].host], "b.svc.test": [group[1].host]},
        srv=[
            f"_api._tcp.svc.test,a.svc.test,{group[0].port}",
            f"_api._tcp.svc.test,b.svc.test,{group[1].port}",
        ],
    )
    proxy = await proxies(
        "breaker", breaker_env("http://_api._tcp.svc.test", dns_servers=dns.server)
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            assert (await send(session, proxy))[0] == 200
    assert all(r.hits > 0 for r in group)
    hosts = {seen.headers["Host"] for r in group for seen in r.seen}
    assert hosts == {f"a.svc.test:{group[0].port}", f"b.svc.test:{group[1].port}"}


async def test_health_checks_keep_a_never_healthy_endpoint_out(
    replicas: Replicas, proxies: Proxies
) -> None:
    group = await replicas("ok", "ok", "ok")
    group[2].health = 503
    proxy = await proxies(
        "breaker",
        breaker_env(
            ",".join(r.url for r in group),
            lb="round-robin",
            health_check_path="/healthz",
            health_check_interval="100ms",
        ),
    )

    async def checked() -> bool:
        states = {e["state"] for e in endpoints(await proxy.status()).values()}
        return states == {"healthy", "unhealthy"}

    await eventually(checked, "two endpoints healthy after a first check")
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            assert (await send(session, proxy))[0] == 200
    assert group[2].health_checks >= 1
    assert group[2].hits == 0
    assert group[0].hits + group[1].hits == 20


async def test_every_endpoint_failing_opens_the_circuit(
    replicas: Replicas, proxies: Proxies
) -> None:
    group = await replicas("503", "503", "503")
    proxy = await proxies(
        "breaker", breaker_env(",".join(r.url for r in group), failure_threshold="6")
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            await send(session, proxy)
        status, headers, _ = await send(session, proxy)
    assert (status, headers["X-Sidecar-Error"]) == (503, "circuit_open")
    # one ejected (at most half of three), the circuit opened over the whole cluster
    assert [t[:2] for t in proxy.transitions()] == [("closed", "open")]


async def test_the_fallback_is_a_cluster_too(replicas: Replicas, proxies: Proxies) -> None:
    primary, *fallbacks = await replicas("503", "ok", "ok")
    proxy = await proxies(
        "breaker",
        breaker_env(
            primary.url,
            failure_threshold="2",
            fallback_upstream=",".join(r.url for r in fallbacks),
            lb="round-robin",
        ),
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            assert (await send(session, proxy))[0] == 503  # the primary's own answers
        for _ in range(6):
            status, _, body = await send(session, proxy)
            assert status == 200 and body.startswith(b"ok from replica")
    assert [r.hits for r in fallbacks] == [3, 3]
    status = await proxy.status()
    (route,) = status["routes"].values()
    assert sorted(e["address"] for e in route["fallback_endpoints"]) == sorted(
        f"{r.host}:{r.port}" for r in fallbacks
    )
