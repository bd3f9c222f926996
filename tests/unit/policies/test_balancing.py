"""Balancers and the outlier-ejection arithmetic, with the dice and the clock chosen by the
test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from sidecars.policies.balancer import (
    LeastCost,
    LeastRequest,
    PeakEwma,
    RandomChoice,
    RoundRobin,
    balancer,
)
from sidecars.policies.outlier import OutlierDetector, OutlierRecord, OutlierSettings


class Node:
    def __init__(self, name: str, in_flight: int = 0, latency: float = 0.0) -> None:
        self.name = name
        self.in_flight = in_flight
        self.latency = latency

    def cost(self) -> float:
        return self.latency * (self.in_flight + 1)


def scripted(*rolls: int) -> Callable[[int], int]:
    """randrange(n) answering the given rolls in turn."""
    source: Iterator[int] = iter(rolls)
    return lambda n: next(source) % n


def test_round_robin_takes_each_in_turn() -> None:
    nodes = [Node("a"), Node("b"), Node("c")]
    rr = RoundRobin()
    assert [rr.choose(nodes).name for _ in range(7)] == list("abcabca")


def test_random_uses_the_injected_dice() -> None:
    nodes = [Node("a"), Node("b"), Node("c")]
    choice = RandomChoice(scripted(2, 0, 1))
    assert [choice.choose(nodes).name for _ in range(3)] == ["c", "a", "b"]


def test_least_request_draws_two_distinct_and_keeps_the_less_busy() -> None:
    nodes = [Node("a", 5), Node("b", 1), Node("c", 3)]
    # draws: first index 0 (a); second 0 of the two others -> b (index 1): b is less busy.
    assert LeastRequest(scripted(0, 0)).choose(nodes).name == "b"
    # first 2 (c), second 1 of [a, b] skipping c -> b.
    assert LeastRequest(scripted(2, 1)).choose(nodes).name == "b"
    # first 0 (a), second 1 -> c (index 2): c is less busy than a.
    assert LeastRequest(scripted(0, 1)).choose(nodes).name == "c"
    # a tie goes to the first drawn
    tie = [Node("x", 2), Node("y", 2)]
    assert LeastRequest(scripted(1, 0)).choose(tie).name == "y"


def test_least_request_never_picks_the_busiest_of_three() -> None:
    import random  # noqa: PLC0415

    rng = random.Random(7)
    nodes = [Node("a", 0), Node("b", 1), Node("c", 9)]
    picks = Counter(LeastRequest(rng.randrange).choose(nodes).name for _ in range(300))
    assert picks["c"] == 0 and picks["a"] > picks["b"] > 0


def test_ewma_prefers_the_cheaper_endpoint() -> None:
    nodes = [Node("fast", 0, 0.010), Node("slow", 0, 0.500)]
    assert LeastCost(scripted(1, 0)).choose(nodes).name == "fast"
    assert LeastCost(scripted(0, 0)).choose(nodes).name == "fast"


def test_balancer_names() -> None:
    assert isinstance(balancer("least-request"), LeastRequest)
    assert isinstance(balancer("round-robin"), RoundRobin)
    assert isinstance(balancer("random"), RandomChoice)
    assert isinstance(balancer("ewma"), LeastCost)
    with pytest.raises(ValueError):
        balancer("fastest")


def test_peak_ewma_jumps_to_a_peak_and_decays_with_time() -> None:
    now = [0.0]
    ewma = PeakEwma(lambda: now[0], decay=10.0)
    assert ewma.cost(0) == 0.0 and ewma.cost(2) == 2.0  # unmeasured: a penalty per request
    ewma.observe(0.1)
    assert ewma.value == 0.1
    ewma.observe(1.0)
    assert ewma.value == 1.0  # a peak is taken at once
    ewma.observe(0.1)
    assert ewma.value == 1.0  # no time passed: the peak holds
    now[0] = 10.0
    ewma.observe(0.1)
    assert ewma.value == pytest.approx(1.0 * 0.36788 + 0.1 * 0.63212, rel=1e-4)
    assert ewma.cost(3) == pytest.approx(ewma.value * 4)


def outlier(**overrides: float) -> OutlierDetector:
    values = {
        "consecutive_failures": 3,
        "base_ejection": 30.0,
        "max_ejection": 100.0,
        "max_ejected_percent": 50,
    }
    values.update(overrides)
    return OutlierDetector(OutlierSettings(**values))  # type: ignore[arg-type]


def test_consecutive_failures_reach_the_threshold_and_a_success_resets_them() -> None:
    detector = outlier()
    record = OutlierRecord()
    assert not detector.failed(record) and not detector.failed(record)
    detector.succeeded(record)
    assert not detector.failed(record) and not detector.failed(record)
    assert detector.failed(record)


def test_ejections_last_base_times_the_count_capped() -> None:
    detector = outlier()
    record = OutlierRecord()
    assert detector.eject(record, 1000.0) == 1030.0
    assert not detector.due_back(record, 1029.9) and detector.due_back(record, 1030.0)
    detector.returned(record)
    assert detector.eject(record, 2000.0) == 2060.0
    detector.returned(record)
    assert detector.eject(record, 3000.0) == 3090.0
    detector.returned(record)
    assert detector.eject(record, 4000.0) == 4100.0  # 4 x 30 = 120, capped at 100
    assert record.times_ejected == 4


@pytest.mark.parametrize(
    ("endpoints", "percent", "allowed"),
    [(1, 50, 0), (2, 50, 1), (3, 50, 1), (4, 50, 2), (10, 50, 5), (3, 100, 3), (5, 0, 0)],
)
def test_never_more_than_the_percent_ejected(endpoints: int, percent: int, allowed: int) -> None:
    detector = outlier(max_ejected_percent=percent)
    assert detector.max_ejected(endpoints) == allowed
    if allowed:
        assert detector.may_eject(endpoints, allowed - 1)
    assert not detector.may_eject(endpoints, allowed)


def test_zero_consecutive_failures_turns_detection_off() -> None:
    detector = outlier(consecutive_failures=0)
    record = OutlierRecord()
    assert not any(detector.failed(record) for _ in range(100))
