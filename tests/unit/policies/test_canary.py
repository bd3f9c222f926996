"""The canary rollout judge on a fake clock: steps, promotion, every breach, the operator's
actions, shared adoption, and the latency sketch."""

from __future__ import annotations

import dataclasses

import pytest
from support import FakeClock

from sidecars.policies.canary import (
    LATENCY_FLOOR,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    STATIC,
    LatencySketch,
    Rollout,
)
from sidecars.settings import CanarySettings, upstream_cluster

BASE = CanarySettings(
    upstream=upstream_cluster("http://canary:8080"),
    weight=0,
    steps=(5, 25, 50, 100),
    interval=60.0,
    min_requests=100,
    max_failure_ratio=0.05,
    header=None,
)


def traffic(
    rollout: Rollout,
    *,
    canary: int = 100,
    canary_failures: int = 0,
    canary_latency: float = 0.010,
    stable: int = 100,
    stable_failures: int = 0,
    stable_latency: float = 0.010,
) -> None:
    for index in range(stable):
        rollout.record(False, index < stable_failures, stable_latency)
    for index in range(canary):
        rollout.record(True, index < canary_failures, canary_latency)


def test_healthy_intervals_step_up_to_promotion(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    assert (rollout.state, rollout.weight) == (PROGRESSING, 5)
    seen = []
    for _ in range(3):
        traffic(rollout)
        assert rollout.tick() is None  # the interval is not over
        clock.advance(60)
        transition = rollout.tick()
        assert transition is not None
        seen.append((transition.state, transition.weight, transition.reason))
    assert seen == [
        (PROGRESSING, 25, "healthy"),
        (PROGRESSING, 50, "healthy"),
        (PROMOTED, 100, "healthy"),
    ]
    assert (rollout.state, rollout.weight) == (PROMOTED, 100)
    traffic(rollout)
    clock.advance(60)
    assert rollout.tick() is None  # promoted stays promoted


def test_too_few_canary_requests_stretch_the_interval(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary=99)
    clock.advance(600)
    assert rollout.tick() is None
    rollout.record(True, False, 0.01)
    transition = rollout.tick()
    assert transition is not None and transition.weight == 25
    assert transition.figures["canary"]["requests"] == 100
    assert transition.figures["interval_seconds"] == 600


def test_a_failure_ratio_above_the_maximum_rolls_back_at_once(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary=100, canary_failures=20)
    clock.advance(1)  # long before the interval ends
    transition = rollout.tick()
    assert transition is not None
    assert (transition.state, transition.weight, transition.reason) == (
        ROLLED_BACK,
        0,
        "failure_ratio",
    )
    assert transition.figures["canary"]["failure_ratio"] == 0.2
    assert transition.figures["from_weight"] == 5
    traffic(rollout)
    clock.advance(600)
    assert rollout.tick() is None  # kept at 0 until an operator acts
    assert (rollout.state, rollout.weight) == (ROLLED_BACK, 0)


def test_exactly_the_maximum_passes(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary=100, canary_failures=5, stable_failures=5)
    clock.advance(60)
    transition = rollout.tick()
    assert transition is not None and transition.state == PROGRESSING


def test_worse_than_stable_by_the_margin_rolls_back(clock: FakeClock) -> None:
    rollout = Rollout(dataclasses.replace(BASE, max_failure_ratio=0.5), clock=clock)
    traffic(rollout, canary=100, canary_failures=10, stable=100, stable_failures=2)
    transition = rollout.tick()
    assert transition is not None and transition.reason == "worse_than_stable"


def test_as_bad_as_stable_is_not_worse(clock: FakeClock) -> None:
    rollout = Rollout(dataclasses.replace(BASE, max_failure_ratio=0.5), clock=clock)
    traffic(rollout, canary=100, canary_failures=10, stable=100, stable_failures=10)
    clock.advance(60)
    transition = rollout.tick()
    assert transition is not None and transition.state == PROGRESSING


def test_slow_canary_p99_rolls_back_at_the_end_of_the_interval(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary_latency=0.200, stable_latency=0.020)
    assert rollout.tick() is None
    clock.advance(60)
    transition = rollout.tick()
    assert transition is not None
    assert (transition.state, transition.reason) == (ROLLED_BACK, "latency")
    assert transition.figures["canary"]["latency_p99"] > 0.19


def test_a_slower_canary_under_the_floor_is_no_regression(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary_latency=0.003, stable_latency=0.001)  # 3x, but 2 ms
    clock.advance(60)
    transition = rollout.tick()
    assert transition is not None and transition.state == PROGRESSING
    assert LATENCY_FLOOR > 0.002


def test_latency_is_not_compared_without_enough_stable_requests(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary_latency=0.5, stable=10, stable_latency=0.001)
    clock.advance(60)
    transition = rollout.tick()
    assert transition is not None and transition.state == PROGRESSING


def test_the_operator_promotes_pauses_resumes_and_sets_the_weight(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    paused = rollout.pause()
    assert (paused.state, paused.weight, paused.reason) == (PAUSED, 5, "operator")
    traffic(rollout)
    clock.advance(60)
    assert rollout.tick() is None  # paused: not judged
    assert rollout.set_weight(40).weight == 40 and rollout.state == PAUSED
    resumed = rollout.resume()
    assert (resumed.state, resumed.weight) == (PROGRESSING, 50)  # the next step at or above
    assert rollout.rollback().state == ROLLED_BACK
    resumed = rollout.resume()
    assert (resumed.state, resumed.weight) == (PROGRESSING, 5)  # a fresh start after a rollback
    promoted = rollout.promote()
    assert (promoted.state, promoted.weight) == (PROMOTED, 100)


def test_without_steps_the_weight_is_fixed_and_not_judged(clock: FakeClock) -> None:
    rollout = Rollout(dataclasses.replace(BASE, steps=(), weight=10), clock=clock)
    assert (rollout.state, rollout.weight) == (STATIC, 10)
    traffic(rollout, canary_failures=100)
    clock.advance(600)
    assert rollout.tick() is None
    assert rollout.set_weight(30).state == STATIC
    assert rollout.resume().state == STATIC


def test_another_replicas_state_is_adopted_with_a_fresh_window(clock: FakeClock) -> None:
    rollout = Rollout(BASE, clock=clock)
    traffic(rollout, canary=50)
    adopted = rollout.adopt(PROGRESSING, 25)
    assert (adopted.state, adopted.weight, adopted.reason) == (PROGRESSING, 25, "shared")
    assert adopted.figures["canary"]["requests"] == 50
    assert rollout.canary.requests == 0


@pytest.mark.parametrize("seconds", [0.00005, 0.001, 0.0123, 0.5, 3.0, 80.0])
def test_the_sketch_quantile_is_within_ten_percent(seconds: float) -> None:
    sketch = LatencySketch()
    for _ in range(99):
        sketch.add(seconds / 100)
    sketch.add(seconds)
    assert seconds * 0.9 <= max(sketch.quantile(1.0), 1e-4) <= max(seconds * 1.1, 1e-4)
    assert sketch.quantile(0.5) <= max(seconds / 100 * 1.1, 1e-4)


def test_an_empty_sketch_reads_zero() -> None:
    assert LatencySketch().quantile(0.99) == 0.0
