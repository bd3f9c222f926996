"""SharedCircuitState against a real redis-server: replicas in one process, real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest
import redis
from structlog.testing import capture_logs
from support import free_port

from sidecars.observability import PROXY_METRICS
from sidecars.policies.breaker import CircuitBreaker
from sidecars.proxy.shared_state import SharedCircuitState
from sidecars.settings import BreakerSettings

SETTINGS = BreakerSettings(
    enabled=True,
    failure_threshold=4,
    failure_ratio=None,
    window=10.0,
    min_requests=20,
    open_seconds=30.0,
    half_open_requests=1,
    failure_statuses=frozenset(range(500, 600)),
    slow_call=None,
    state_redis_url=None,
)
_names = itertools.count()


class Replica:
    """A breaker and its shared state, as one sidecar replica holds them for a route."""

    def __init__(self, url: str, key: str, upstream: str, **changes: Any) -> None:
        self.transitions: list[tuple[str, str, str]] = []
        self.breaker = CircuitBreaker(
            dataclasses.replace(SETTINGS, **changes),
            on_transition=lambda old, new, why: self.transitions.append((old, new, why)),
        )
        self.shared = SharedCircuitState(self.breaker, url, key, "breaker", upstream)

    def fail(self, times: int) -> None:
        for _ in range(times):
            permit = self.breaker.acquire()
            assert permit is not None
            self.breaker.record_failure(permit, "connect", 0.01)


@pytest.fixture
async def replicas(redis_server: Any) -> AsyncIterator[Callable[..., Replica]]:
    made: list[Replica] = []
    key = f"route{next(_names)}"

    def make(url: str | None = None, upstream: str = "payments", **changes: Any) -> Replica:
        replica = Replica(url or redis_server.url, key, upstream, **changes)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.shared.close()


def errors_counted(upstream: str) -> float:
    value = PROXY_METRICS.get_sample_value(
        "sidecar_circuit_shared_state_errors_total", {"sidecar": "breaker", "upstream": upstream}
    )
    return value or 0.0


async def test_a_trip_on_one_replica_opens_the_other(replicas: Callable[..., Replica]) -> None:
    first, second = replicas(), replicas()
    assert await first.shared.sync_once() and await second.shared.sync_once()
    first.fail(4)
    assert first.breaker.state == "open"
    await first.shared.sync_once()
    await second.shared.sync_once()
    assert second.breaker.state == "open"
    assert second.transitions == [("closed", "open", "shared")]
    assert second.breaker.acquire() is None
    assert second.breaker.retry_after() > 25.0
    # What the second replica adopted is not published back as news of its own.
    await second.shared.sync_once()
    await first.shared.sync_once()
    assert first.transitions == [("closed", "open", "failure_threshold")]


async def test_failures_are_counted_across_replicas(replicas: Callable[..., Replica]) -> None:
    first, second = replicas(), replicas()
    first.fail(2)
    second.fail(2)
    await first.shared.sync_once()
    assert first.breaker.state == "closed"  # 2 of 4 so far
    await second.shared.sync_once()
    assert second.transitions == [("closed", "open", "shared")]
    await second.shared.sync_once()  # publishes its trip
    await first.shared.sync_once()
    assert first.breaker.state == "open"


async def test_a_success_anywhere_breaks_the_shared_chain(
    replicas: Callable[..., Replica],
) -> None:
    first, second = replicas(), replicas()
    first.fail(3)
    await first.shared.sync_once()
    permit = second.breaker.acquire()
    assert permit is not None
    second.breaker.record_success(permit, 0.01)
    second.fail(1)
    await second.shared.sync_once()
    await first.shared.sync_once()
    assert first.breaker.state == second.breaker.state == "closed"


async def test_closing_is_shared_too(replicas: Callable[..., Replica]) -> None:
    first, second = replicas(), replicas()
    first.fail(4)
    await first.shared.sync_once()
    await second.shared.sync_once()
    assert second.breaker.state == "open"
    first.breaker.force_close()
    await first.shared.sync_once()
    await second.shared.sync_once()
    assert second.breaker.state == "closed"
    assert second.transitions[-1] == ("open", "closed", "shared")


async def test_an_adopted_open_period_keeps_its_age(
    replicas: Callable[..., Replica], redis_server: Any
) -> None:
    replica = replicas()
    client = redis.Redis.from_url(redis_server.url)
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=replica.shared.key
    )
    storage.opened_at = datetime.now(UTC) - timedelta(seconds=20)
    storage.state = pybreaker.STATE_OPEN
    client.close()
    await replica.shared.sync_once()
    assert replica.breaker.state == "open"
    # 30 s open, opened 20 s ago. Redis keeps whole seconds (20 to 21 s ago) and the replica
    # takes the end of that second, so it stays open for another 10 to 11 s.
    assert 9.5 <= replica.breaker.retry_after() <= 11.0


async def test_unreachable_redis_keeps_local_state_serving(
    replicas: Callable[..., Replica],
) -> None:
    upstream = f"down{next(_names)}"
    replica = replicas(url=f"redis://127.0.0.1:{free_port()}/0", upstream=upstream)
    with capture_logs() as logs:
        await replica.shared.start()  # must not raise
        for _ in range(3):
            assert not await replica.shared.sync_once()
    assert errors_counted(upstream) >= 3
    warnings = [entry for entry in logs if entry["event"] == "shared_state_unavailable"]
    assert len(warnings) == 1  # once per outage, not per exchange
    snapshot = replica.shared.snapshot()
    assert snapshot["connected"] is False
    assert "Error" in snapshot["last_error"]
    assert snapshot["last_sync_age"] is None
    replica.fail(4)
    assert replica.breaker.state == "open"
    assert replica.breaker.acquire() is None


async def test_an_outage_and_a_recovery(
    replicas: Callable[..., Replica], redis_server: Any
) -> None:
    upstream = f"flaky{next(_names)}"
    first, second = replicas(upstream=upstream), replicas(upstream=upstream)
    assert await first.shared.sync_once() and await second.shared.sync_once()
    redis_server.stop()
    with capture_logs() as logs:
        assert not await first.shared.sync_once()
        first.fail(4)  # trips while the store is away
        assert not await first.shared.sync_once()
        assert first.breaker.state == "open"
        redis_server.start()  # empty: a restarted cache
        assert await first.shared.sync_once()
        assert await second.shared.sync_once()
    events = [entry["event"] for entry in logs]
    assert events.count("shared_state_unavailable") == 1
    assert events.count("shared_state_recovered") == 1
    assert errors_counted(upstream) == 2
    assert second.breaker.state == "open"  # the trip made during the outage was kept
    assert first.shared.snapshot()["connected"] is True


async def test_after_an_outage_an_open_state_is_said_again(
    replicas: Callable[..., Replica], redis_server: Any
) -> None:
    first, second = replicas(), replicas()
    first.fail(4)
    await first.shared.sync_once()
    await second.shared.sync_once()
    redis_server.stop()
    assert not await second.shared.sync_once()
    redis_server.start()  # lost everything: it would read as closed
    await second.shared.sync_once()
    assert second.breaker.state == "open"
    newcomer = replicas()
    await newcomer.shared.sync_once()
    assert newcomer.breaker.state == "open"


async def test_garbage_in_redis_is_an_error_not_a_state(
    replicas: Callable[..., Replica], redis_server: Any
) -> None:
    upstream = f"garbage{next(_names)}"
    replica = replicas(upstream=upstream)
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"{replica.shared.key}:pybreaker:state", "exploded")
    client.close()
    assert not await replica.shared.sync_once()
    assert errors_counted(upstream) == 1
    assert replica.breaker.state == "closed"
    assert "exploded" in replica.shared.snapshot()["last_error"]


async def test_the_background_task_syncs_on_its_own(replicas: Callable[..., Replica]) -> None:
    first, second = replicas(), replicas()
    await first.shared.start()
    await second.shared.start()
    first.fail(4)
    for _ in range(200):  # up to 10 s, normally 0.1-0.2 s
        if second.breaker.state == "open":
            break
        await asyncio.sleep(0.05)  # polling interval
    assert second.breaker.state == "open"
    assert second.shared.snapshot()["last_sync_age"] is not None
