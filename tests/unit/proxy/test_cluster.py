"""A route over a cluster of three endpoints, on fake transports, with the clock and the dice
driven by the test: balancing, retries to another endpoint, ejection and return, panic mode,
membership changes and discovery."""

from __future__ import annotations

import socket
from typing import Any

from sidecars.proxy.cluster import Member
from sidecars.proxy.discovery import Discovery
from sidecars.proxy.pool import Target
from sidecars.proxy.resolver import NO_TTL
from sidecars.settings import upstream_cluster

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FAIL = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"


def member(last: int) -> Member:
    return Member(Target(socket.AF_INET, f"192.0.2.{last}", 8080, None), b"backend:8080")


def three(w: Any) -> None:
    w.route.cluster.update([member(1), member(2), member(3)])


def names(w: Any) -> list[str]:
    """The endpoints dialled, in order."""
    return [target.host for target in w.dialer.targets]


async def answer_busy(w: Any, answers: dict[str, bytes]) -> None:
    """Answer on the upstream connection serving a request, by its endpoint's address."""
    (index,) = [i for i, conn in enumerate(w.upstreams) if conn.exchange is not None]
    await w.answer(answers.get(w.upstreams[index].pool.target.host, OK), index)


async def test_round_robin_spreads_over_every_endpoint(wire: Any) -> None:
    w = wire(lb="round-robin")
    three(w)
    for _ in range(3):
        await w.send(GET)
        await w.answer(OK)
    assert sorted(names(w)) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    status = w.route.status()
    assert [e["requests"] for e in status["endpoints"]] == [1, 1, 1]


async def test_a_retry_goes_to_another_endpoint(wire: Any) -> None:
    w = wire("ambassador", lb="random", randrange=lambda n: 0, backoff_base="0")
    three(w)
    await w.send(GET)
    await w.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    await w.answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    await w.answer(OK)
    # random with dice always 0 picks the first candidate: each retry leaves out the tried ones
    assert names(w) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert w.received().endswith(b"ok")


async def test_consecutive_failures_eject_and_the_endpoint_returns_after_the_ejection(
    wire: Any,
) -> None:
    now = [100.0]
    w = wire(
        lb="round-robin",
        clock=lambda: now[0],
        outlier_consecutive_failures="2",
        outlier_base_ejection="10s",
        breaker="off",
    )
    three(w)
    cluster = w.route.cluster
    sick = cluster.endpoints[member(1).target]
    for _ in range(6):  # round robin: endpoint 1 gets requests 1 and 4
        await w.send(GET)
        await answer_busy(w, {"192.0.2.1": FAIL})
    assert sick.state == "ejected" and sick.outlier.times_ejected == 1
    assert cluster.state_counts() == {"healthy": 2, "ejected": 1, "unhealthy": 0, "draining": 0}
    picked = {cluster.pick(None).name for _ in range(10)}  # type: ignore[union-attr]
    assert "192.0.2.1:8080" not in picked
    now[0] = 110.0
    picked = {cluster.pick(None).name for _ in range(10)}  # type: ignore[union-attr]
    assert "192.0.2.1:8080" in picked and sick.state == "healthy"


async def test_at_most_the_percent_of_endpoints_is_ejected(wire: Any) -> None:
    w = wire(lb="round-robin", outlier_consecutive_failures="1", breaker="off")
    three(w)
    for _ in range(9):
        await w.send(GET)
        await answer_busy(w, {"192.0.2.1": FAIL, "192.0.2.2": FAIL, "192.0.2.3": FAIL})
    assert w.route.cluster.ejected_count == 1  # 50% of three is one
    assert w.route.outlier is not None and w.route.outlier.skipped > 0


async def test_with_every_endpoint_unhealthy_the_cluster_balances_over_all(wire: Any) -> None:
    w = wire(lb="round-robin")
    three(w)
    cluster = w.route.cluster
    for endpoint in list(cluster.endpoints.values())[:2]:
        cluster.set_healthy(endpoint, False)
    # one of three healthy is below the panic threshold: every endpoint takes traffic
    picked = {cluster.pick(None).name for _ in range(6)}  # type: ignore[union-attr]
    assert len(picked) == 3


async def test_a_removed_endpoint_finishes_its_request_and_closes_its_pool(wire: Any) -> None:
    w = wire(lb="round-robin")
    cluster = w.route.cluster
    await w.send(GET)  # the wire's one endpoint, 192.0.2.10
    cluster.update([member(2)])
    assert cluster.state_counts()["draining"] == 1
    await w.answer(OK)
    assert w.received().endswith(b"ok")
    assert cluster.state_counts()["draining"] == 0
    assert w.upstream_transport().closed  # not pooled: its endpoint left
    await w.send(GET)
    assert names(w)[-1] == "192.0.2.2"


class FakeResolver:
    def __init__(self) -> None:
        self.addresses_of: dict[str, list[str]] = {}
        self.services_of: dict[str, list[tuple[str, int]]] = {}
        self.ttl = 30.0

    async def addresses(self, host: str) -> tuple[list[tuple[int, str]], float]:
        if host not in self.addresses_of:
            raise OSError(f"no address for {host}")
        return [(socket.AF_INET, ip) for ip in self.addresses_of[host]], self.ttl

    async def services(self, name: str) -> tuple[list[tuple[str, int]], float]:
        if name not in self.services_of:
            raise OSError(f"no SRV record for {name}")
        return self.services_of[name], NO_TTL


async def test_discovery_follows_the_records_and_keeps_them_through_a_failed_lookup(
    wire: Any,
) -> None:
    w = wire()
    resolver = FakeResolver()
    resolver.addresses_of["api.local"] = ["10.0.0.1", "10.0.0.2"]
    discovery = Discovery(
        w.route.cluster, upstream_cluster("http://api.local:8080"), resolver, ttl=5.0
    )
    resolver.ttl = 2.0
    assert await discovery.refresh() == 2.0  # the record's TTL, shorter than P_DNS_TTL
    assert sorted(e.name for e in w.route.cluster.endpoints.values()) == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
    ]
    resolver.addresses_of["api.local"] = ["10.0.0.2", "10.0.0.3"]
    resolver.ttl = 60.0
    assert await discovery.refresh() == 5.0  # P_DNS_TTL caps a long TTL
    assert sorted(e.name for e in w.route.cluster.endpoints.values()) == [
        "10.0.0.2:8080",
        "10.0.0.3:8080",
    ]
    del resolver.addresses_of["api.local"]
    await discovery.refresh()
    assert len(w.route.cluster.endpoints) == 2  # a failed lookup keeps the last answer
    assert discovery.failures == 1


async def test_srv_records_give_host_and_port_of_each_endpoint(wire: Any) -> None:
    w = wire()
    resolver = FakeResolver()
    resolver.services_of["_api._tcp.svc.local"] = [("a.svc.local", 9001), ("10.0.0.9", 9002)]
    resolver.addresses_of["a.svc.local"] = ["10.0.0.8"]
    url = upstream_cluster("http://_api._tcp.svc.local")
    assert url.srv
    discovery = Discovery(w.route.cluster, url, resolver, ttl=5.0)
    await discovery.refresh()
    members = sorted(
        (e.name, e.member.authority) for e in w.route.cluster.endpoints.values()
    )
    assert members == [("10.0.0.8:9001", b"a.svc.local:9001"), ("10.0.0.9:9002", b"10.0.0.9:9002")]


def test_a_comma_list_is_one_cluster_of_one_scheme() -> None:
    url = upstream_cluster("http://10.0.1.5:8080, http://10.0.1.6:8080")
    assert [u.host for u in url.urls] == ["10.0.1.5", "10.0.1.6"]
    assert str(url) == "http://10.0.1.5:8080,http://10.0.1.6:8080"
