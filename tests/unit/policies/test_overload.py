"""The overload policies on a fake clock: the adaptive concurrency limit and the token bucket."""

from __future__ import annotations

import pytest
from support import FakeClock

from sidecars.policies.concurrency import AdaptiveLimit, AdaptiveSettings
from sidecars.policies.ratelimit import TokenBucket

SERVICE = 0.05  # the upstream's service time


def queueing_rtt(limit: int, capacity: int) -> float:
    """A closed loop of ``limit`` requests in flight at an upstream serving ``capacity`` at
    once: past its capacity the excess waits there (Little's law)."""
    return SERVICE * max(1.0, limit / capacity)


def drive(controller: AdaptiveLimit, clock: FakeClock, capacity: int, seconds: float) -> list[int]:
    """Feed answers at 1 ms steps, each with the latency the current limit causes."""
    limits = []
    for _ in range(int(seconds * 1000)):
        clock.advance(0.001)
        controller.sample(queueing_rtt(controller.limit, capacity))
        limits.append(controller.limit)
    return limits


def controller(clock: FakeClock, **settings: float) -> AdaptiveLimit:
    return AdaptiveLimit(AdaptiveSettings(**settings), clock=clock, random=lambda: 0.5)  # type: ignore[arg-type]


def test_the_limit_is_pinned_low_until_the_idle_latency_is_measured() -> None:
    clock = FakeClock()
    limit = controller(clock, min_limit=3, min_rtt_samples=25)
    for _ in range(24):
        limit.sample(SERVICE)
    assert limit.measuring and limit.limit == 3 and limit.min_rtt is None
    limit.sample(SERVICE)
    assert not limit.measuring and limit.min_rtt == SERVICE


@pytest.mark.parametrize("capacity", [10, 20, 50])
def test_the_limit_settles_just_above_the_upstream_capacity(capacity: int) -> None:
    clock = FakeClock()
    limit = controller(clock)
    settled = drive(limit, clock, capacity, 20.0)[-5000:]
    assert capacity <= min(settled) and max(settled) <= 1.3 * capacity


def test_the_limit_rises_again_when_the_upstream_gains_capacity() -> None:
    clock = FakeClock()
    limit = controller(clock)
    drive(limit, clock, 10, 10.0)
    assert limit.limit <= 13
    settled = drive(limit, clock, 40, 10.0)[-3000:]
    assert min(settled) >= 40 and max(settled) <= 52


def test_the_limit_stays_within_its_bounds() -> None:
    clock = FakeClock()
    limit = controller(clock, min_limit=5, max_limit=30)
    assert max(drive(limit, clock, 1000, 10.0)) == 30
    assert min(drive(limit, clock, 1, 10.0)[-1000:]) == 5


def test_the_idle_latency_is_measured_again_after_its_interval_with_jitter() -> None:
    clock = FakeClock()
    limit = controller(clock, min_rtt_interval=10.0, min_rtt_jitter=0.2)
    drive(limit, clock, 20, 1.0)
    assert not limit.measuring
    drive(limit, clock, 20, 9.5)
    assert not limit.measuring  # due at 10 s plus the jitter (20% x 0.5): 11 s
    for _ in range(1000):
        clock.advance(0.001)
        limit.sample(SERVICE)
        if limit.measuring:
            break
    assert limit.measuring and limit.limit == 3
    assert 11.0 <= clock.now - 1000.0 <= 11.2


def test_a_faster_upstream_lowers_the_minimum_at_once() -> None:
    clock = FakeClock()
    limit = controller(clock)
    drive(limit, clock, 20, 2.0)
    for _ in range(200):
        clock.advance(0.001)
        limit.sample(SERVICE / 2)
    assert limit.min_rtt == SERVICE / 2


def test_the_bucket_admits_its_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    wait = bucket.take()
    assert wait == pytest.approx(0.1)
    admitted = 0
    for _ in range(1000):  # 10 s at 10 ms steps
        clock.advance(0.01)
        admitted += bucket.take() == 0.0
    assert 99 <= admitted <= 100  # float steps: the last token may be a hair short


def test_the_bucket_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 3, clock=clock)
    clock.advance(60.0)
    assert bucket.tokens == 3.0
