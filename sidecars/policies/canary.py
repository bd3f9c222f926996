"""The canary rollout, sans-IO: the weight, its progression through ``P_CANARY_STEPS``, and
the judge deciding each step from what the canary and the stable cluster did in the same
interval (Flagger's and Argo Rollouts' analysis, on the sidecar's own counts).

The judge, after each ``P_CANARY_INTERVAL`` with at least ``P_CANARY_MIN_REQUESTS`` canary
attempts:

- failure ratio: the canary's at most ``max_failure_ratio`` (absolute), and at most the
  stable cluster's plus ``FAILURE_MARGIN``;
- latency: the canary's ``LATENCY_QUANTILE`` (p99, from a log-bucket sketch) at most
  ``LATENCY_FACTOR`` times the stable cluster's, unless the difference is under
  ``LATENCY_FLOOR`` (sub-millisecond noise is no regression).

A healthy interval moves to the next step (the last one, 100, is promotion); a breach rolls
back to 0 at once, and the failure ratio is checked as soon as the minimum is reached, not
only at the end of the interval. A rolled-back or promoted rollout stays there until an
operator acts. The stable side is compared only when it had at least the minimum too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecars.policies.window import Clock
    from sidecars.settings import CanarySettings

FAILURE_MARGIN = 0.02
LATENCY_QUANTILE = 0.99
LATENCY_FACTOR = 1.5
LATENCY_FLOOR = 0.025  # seconds

PROGRESSING, PAUSED, ROLLED_BACK, PROMOTED, STATIC = (
    "progressing",
    "paused",
    "rolled_back",
    "promoted",
    "static",
)

# Latency sketch buckets: 100 us to about 100 s, 10% apart (relative error <= 5%).
_SKETCH_BASE = 1e-4
_SKETCH_GROWTH = 1.1
_SKETCH_BUCKETS = 146
_LOG_GROWTH = math.log(_SKETCH_GROWTH)


class LatencySketch:
    """Counts of durations in logarithmic buckets; quantiles to within 5%."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * _SKETCH_BUCKETS
        self.total = 0

    def add(self, seconds: float) -> None:
        if seconds <= _SKETCH_BASE:
            index = 0
        else:
            index = min(
                _SKETCH_BUCKETS - 1, 1 + int(math.log(seconds / _SKETCH_BASE) / _LOG_GROWTH)
            )
        self.counts[index] += 1
        self.total += 1

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (0.0 when empty)."""
        if not self.total:
            return 0.0
        rank = math.ceil(q * self.total)
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return _SKETCH_BASE * _SKETCH_GROWTH**index
        return _SKETCH_BASE * _SKETCH_GROWTH ** (_SKETCH_BUCKETS - 1)


@dataclass(slots=True)
class VersionWindow:
    """One version's attempts in the current interval."""

    requests: int = 0
    failures: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "failure_ratio": round(self.failure_ratio, 4),
            "latency_p99": round(self.latency.quantile(LATENCY_QUANTILE), 4),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of the rollout: its new state and weight, why, and the figures that decided."""

    state: str
    weight: int
    reason: str
    figures: dict[str, Any]


class Rollout:
    """One route's canary rollout. ``record()`` is on the request path; ``tick()`` runs on a
    timer; the operator's actions and ``adopt()`` (shared state) return the transition."""

    def __init__(self, settings: CanarySettings, *, clock: Clock = time.monotonic) -> None:
        self.steps = settings.steps
        self.interval = settings.interval
        self.min_requests = settings.min_requests
        self.max_failure_ratio = settings.max_failure_ratio
        self._clock = clock
        if self.steps:
            self.state = PROGRESSING
            self.weight = self.steps[0]
        else:
            self.state = STATIC
            self.weight = settings.weight
        self.canary = VersionWindow()
        self.stable = VersionWindow()
        self.interval_started = clock()

    @property
    def judging(self) -> bool:
        return self.state == PROGRESSING

    def record(self, canary: bool, failed: bool, elapsed: float) -> None:
        window = self.canary if canary else self.stable
        window.requests += 1
        if failed:
            window.failures += 1
        window.latency.add(elapsed)

    def tick(self) -> Transition | None:
        """The judge: a step, a promotion or a rollback when one is due."""
        if self.state != PROGRESSING:
            return None
        canary, stable = self.canary, self.stable
        if canary.requests < self.min_requests:
            return None  # the interval stretches until the canary has been asked enough
        breach = self._failure_breach()
        if breach is not None:
            return self._move(ROLLED_BACK, 0, breach)
        if self._clock() - self.interval_started < self.interval:
            return None
        if stable.requests >= self.min_requests:
            canary_p, stable_p = (
                canary.latency.quantile(LATENCY_QUANTILE),
                stable.latency.quantile(LATENCY_QUANTILE),
            )
            if canary_p > stable_p * LATENCY_FACTOR and canary_p - stable_p > LATENCY_FLOOR:
                return self._move(ROLLED_BACK, 0, "latency")
        later = [step for step in self.steps if step > self.weight]
        if not later or later[0] >= 100:
            return self._move(PROMOTED, 100, "healthy")
        return self._move(PROGRESSING, later[0], "healthy")

    def _failure_breach(self) -> str | None:
        ratio = self.canary.failure_ratio
        if ratio > self.max_failure_ratio:
            return "failure_ratio"
        if (
            self.stable.requests >= self.min_requests
            and ratio > self.stable.failure_ratio + FAILURE_MARGIN
        ):
            return "worse_than_stable"
        return None

    # -- the operator -----------------------------------------------------------------------

    def promote(self) -> Transition:
        return self._move(PROMOTED, 100, "operator")

    def rollback(self) -> Transition:
        return self._move(ROLLED_BACK, 0, "operator")

    def pause(self) -> Transition:
        return self._move(PAUSED, self.weight, "operator")

    def resume(self) -> Transition:
        """Judging again from the current weight (the first step after a rollback); a
        rollout without steps goes back to its fixed weight."""
        if not self.steps:
            return self._move(STATIC, self.weight, "operator")
        weight = self.weight if self.weight in self.steps else self._step_at_or_after(self.weight)
        return self._move(PROGRESSING, weight, "operator")

    def set_weight(self, weight: int) -> Transition:
        """An operator's weight, held (paused) until resumed when there are steps."""
        state = PAUSED if self.steps else STATIC
        return self._move(state, weight, "operator")

    def _step_at_or_after(self, weight: int) -> int:
        later = [step for step in self.steps if step >= weight and step > 0]
        return later[0] if later else self.steps[-1]

    # -- sharing ----------------------------------------------------------------------------

    def adopt(self, state: str, weight: int) -> Transition:
        """Another replica's rollout state (shared through Redis)."""
        return self._move(state, weight, "shared")

    def _move(self, state: str, weight: int, reason: str) -> Transition:
        figures = {
            "from_weight": self.weight,
            "from_state": self.state,
            "interval_seconds": round(self._clock() - self.interval_started, 3),
            "canary": self.canary.figures(),
            "stable": self.stable.figures(),
        }
        self.state = state
        self.weight = weight
        self.canary = VersionWindow()
        self.stable = VersionWindow()
        self.interval_started = self._clock()
        return Transition(state, weight, reason, figures)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "weight": self.weight,
            "steps": list(self.steps),
            "interval_seconds": round(self._clock() - self.interval_started, 3),
            "canary": self.canary.figures(),
            "stable": self.stable.figures(),
        }
