"""A request parked while the shared rate limit asks a real Redis, ending before the answer
comes: the answer then decides nothing, even once the connection's Exchange carries the next
request. (No real client can reach that today: every way a parked request ends also closes
its connection. So the reuse is played here with the real Exchange, as ``client.on_url``
does: reset, then the rate limit asked for the next request.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis_parts import RedisServer, redis_server_fixture

from sidecars.proxy.exchange import DONE, WAITING
from sidecars.proxy.filters import PARK
from sidecars.proxy.shared_rate import SharedRateLimit

GET = b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from redis_server_fixture()


async def test_a_decision_for_a_request_that_ended_decides_nothing(
    wire: Any, redis_server: RedisServer
) -> None:
    w = wire(rate_limit="1000/s", rate_limit_redis_url=redis_server.url)
    limit = w.route.rate_limit
    shared = limit.shared = SharedRateLimit(
        redis_server.url, "sidecars:test:parked", limit.rate, 10, clock=time.monotonic
    )
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)  # Redis takes the call and answers nothing: it stays parked
    try:
        await w.send(GET)
        exchange = w.client.active
        assert exchange is not None and exchange.state == WAITING
        w.client.connection_lost(None)  # the client goes while its request is parked
        assert exchange.state == DONE
        exchange.reset()  # the exchange of the connection's next request
        assert limit.on_request(exchange) is PARK  # which is parked in its turn
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while limit._decisions:  # both answers (or both timeouts) came back
        assert time.monotonic() < deadline, "the decisions never came back"
        await asyncio.sleep(0.01)  # polling interval
    # Two answers, one request that still waited for one: only its decision counted.
    assert shared.decided + shared.errors == 2
    assert limit.admitted == 1
    assert not limit._parked  # nothing kept for the ended request
    await shared.close()
