"""Load balancers: which endpoint of a cluster takes the next request (sans-IO).

Each balancer chooses among the candidates it is given (the cluster has already left out
ejected, unhealthy, draining and already-tried endpoints) and reads only what a candidate
exposes: ``in_flight`` (requests under way) and ``cost()`` (peak-EWMA latency weighted by
load). Randomness is injected, so tests choose the dice.
"""

from __future__ import annotations

import math
import random as random_module
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from sidecars.policies.window import Clock

BALANCERS = ("least-request", "round-robin", "random", "ewma")
# Peak-EWMA's decay time (Linkerd's default) and the cost of an endpoint with no latency
# measured yet while it has requests under way (so new endpoints get traffic, but not all).
EWMA_DECAY_SECONDS = 10.0
_UNMEASURED_PENALTY = 1.0  # seconds


class Candidate(Protocol):
    @property
    def in_flight(self) -> int: ...

    def cost(self) -> float: ...


C = TypeVar("C", bound=Candidate)
Random = Callable[[int], int]  # randrange(n): 0 <= r < n


class Balancer:
    def choose(self, candidates: Sequence[C]) -> C:
        raise NotImplementedError


class RoundRobin(Balancer):
    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[C]) -> C:
        index = self._next % len(candidates)
        self._next = index + 1
        return candidates[index]


class RandomChoice(Balancer):
    def __init__(self, randrange: Random = random_module.randrange) -> None:
        self._randrange = randrange

    def choose(self, candidates: Sequence[C]) -> C:
        return candidates[self._randrange(len(candidates))]


class LeastRequest(Balancer):
    """Power of two random choices (Mitzenmacher; Envoy's default): two distinct candidates
    at random, the one with fewer requests in flight; ties go to the first drawn."""

    def __init__(self, randrange: Random = random_module.randrange) -> None:
        self._randrange = randrange

    def choose(self, candidates: Sequence[C]) -> C:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self._randrange(count)
        second = self._randrange(count - 1)
        if second >= first:
            second += 1
        a = candidates[first]
        b = candidates[second]
        return b if b.in_flight < a.in_flight else a


class LeastCost(Balancer):
    """Power of two choices on ``cost()``: peak-EWMA latency times load (Linkerd's)."""

    def __init__(self, randrange: Random = random_module.randrange) -> None:
        self._randrange = randrange

    def choose(self, candidates: Sequence[C]) -> C:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self._randrange(count)
        second = self._randrange(count - 1)
        if second >= first:
            second += 1
        a = candidates[first]
        b = candidates[second]
        return b if b.cost() < a.cost() else a


def balancer(name: str, randrange: Random = random_module.randrange) -> Balancer:
    if name == "round-robin":
        return RoundRobin()
    if name == "random":
        return RandomChoice(randrange)
    if name == "ewma":
        return LeastCost(randrange)
    if name == "least-request":
        return LeastRequest(randrange)
    raise ValueError(f"unknown balancer {name!r}")


class PeakEwma:
    """Latency estimate that jumps up to a slow sample at once and decays towards faster
    ones over ``decay`` seconds (Finagle's and Linkerd's peak EWMA)."""

    __slots__ = ("_clock", "_decay", "_stamp", "value")

    def __init__(self, clock: Clock, decay: float = EWMA_DECAY_SECONDS) -> None:
        self._clock = clock
        self._decay = decay
        self._stamp = clock()
        self.value = 0.0  # seconds; 0: nothing measured yet

    def observe(self, seconds: float) -> None:
        now = self._clock()
        if seconds > self.value:
            self.value = seconds
        else:
            weight = math.exp(-max(0.0, now - self._stamp) / self._decay)
            self.value = self.value * weight + seconds * (1.0 - weight)
        self._stamp = now

    def cost(self, in_flight: int) -> float:
        if self.value == 0.0:
            return _UNMEASURED_PENALTY * in_flight
        return self.value * (in_flight + 1)
