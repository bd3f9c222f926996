"""The fault filter on a real Route over fake transports, with seeded dice: the share of
requests faulted, and the other filters judging an injected attempt as the endpoint's."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

from sidecars.proxy.cluster import Member
from sidecars.proxy.pool import Target

GET = b"GET /orders HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def status_of(received: bytes) -> int:
    return int(received.split(b" ", 2)[1])


async def test_the_share_of_requests_aborted_follows_the_percentage(wire: Any) -> None:
    w = wire(breaker="off", fault_abort="503@25%", randrange=random.Random(7).randrange)
    statuses = []
    for _ in range(800):
        await w.send(GET)
        if w.upstreams and w.sent_upstream():
            await w.answer(OK)
        statuses.append(status_of(w.received()))
    aborted = statuses.count(503)
    assert statuses.count(200) + aborted == 800
    # 800 x 25% = 200, sigma ~12.2: within 4 sigma.
    assert abs(aborted - 200) < 49


async def test_outlier_detection_ejects_an_endpoint_for_injected_aborts(wire: Any) -> None:
    w = wire(
        breaker="off",
        max_attempts="1",
        fault_abort="503@100%",
        outlier_consecutive_failures="2",
        lb="round-robin",
    )
    port = w.route.settings.upstream.port
    w.route.cluster.update(
        [
            Member(Target(socket.AF_INET, address, port, None), b"backend.internal")
            for address in ("192.0.2.10", "192.0.2.11")
        ]
    )
    for _ in range(6):
        await w.send(GET)
        assert status_of(w.received()) == 503
    states = [e["state"] for e in w.route.cluster.snapshot()["endpoints"]]
    assert states.count("ejected") == 1  # at most 50% of two
    assert w.dialer.opened == 0  # nothing reached an upstream


async def test_a_request_scoped_fault_is_drawn_once_per_request(wire: Any) -> None:
    draws: list[int] = []

    def counting(limit: int) -> int:
        draws.append(limit)
        return 0  # every draw hits

    w = wire("ambassador", fault_delay="1ms@50%", fault_scope="request", randrange=counting)
    await w.send(GET)
    for _ in range(1000):  # the held request goes on after its 1 ms (the loop's timer)
        if w.upstreams and w.upstream_transport().data:
            break
        await asyncio.sleep(0.001)
    await w.answer(OK)
    assert status_of(w.received()) == 200
    assert len(draws) == 1
