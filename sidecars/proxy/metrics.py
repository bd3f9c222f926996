"""Per-route metric children, bound once: ``.labels()`` is a locked dict lookup with label
validation, far too slow to call per request.

The per-request counts (answers by status, their durations, successful attempts) are tallied
in plain integers and added to Prometheus once per event loop iteration: a prometheus_client
``inc()`` costs about 1 us and ``observe()`` about 3 us here, a third of the proxy's own
per-request time if done per request.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from sidecars import observability as obs
from sidecars.policies.breaker import STATES
from sidecars.proxy.batch import EndOfIteration


class _Family:
    """Children of one labelled metric for a route, by the value of its last label."""

    __slots__ = ("_base", "_children", "_metric")

    def __init__(self, metric: Any, base: tuple[str, ...]) -> None:
        self._metric = metric
        self._base = base
        self._children: dict[object, Any] = {}

    def __getitem__(self, key: object) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*self._base, str(key))
        return child


class RouteMetrics:
    __slots__ = (
        "_answers",
        "_bounds",
        "_duration_buckets",
        "_duration_sum",
        "_end_of_iteration",
        "_rejections",
        "_successes",
        "_tallied",
        "active_connections",
        "attempt_failure",
        "attempt_rejected",
        "attempt_success",
        "bad_requests",
        "circuit_rejected_total",
        "circuit_state",
        "connections",
        "duration",
        "fallback_requests",
        "requests",
        "retries",
        "retries_skipped",
        "retry_budget_exhausted",
        "transitions",
        "upstream_connections_opened",
        "upstream_errors",
    )

    def __init__(self, sidecar: str, upstream: str, end_of_iteration: EndOfIteration) -> None:
        base = (sidecar, upstream)
        self.requests = _Family(obs.REQUESTS, base)
        self.duration = obs.REQUEST_DURATION.labels(*base)
        attempts = _Family(obs.UPSTREAM_ATTEMPTS, base)
        self.attempt_success = attempts["success"]
        self.attempt_failure = attempts["failure"]
        self.attempt_rejected = attempts["rejected"]
        self.retries = _Family(obs.RETRIES, base)
        self.retries_skipped = _Family(obs.RETRIES_SKIPPED, base)
        self.retry_budget_exhausted = obs.RETRY_BUDGET_EXHAUSTED.labels(*base)
        self.circuit_state = {state: obs.CIRCUIT_STATE.labels(*base, state) for state in STATES}
        self.transitions = _TransitionFamily(base)
        self.circuit_rejected_total = obs.CIRCUIT_REJECTED.labels(*base)
        self.fallback_requests = obs.FALLBACK_REQUESTS.labels(*base)
        self.bad_requests = _Family(obs.BAD_REQUESTS, base)
        self.upstream_errors = _Family(obs.UPSTREAM_ERRORS, base)
        self.connections = obs.CONNECTIONS.labels(*base)
        self.active_connections = obs.ACTIVE_CONNECTIONS.labels(*base)
        self.upstream_connections_opened = obs.UPSTREAM_CONNECTIONS_OPENED.labels(*base)
        self._end_of_iteration = end_of_iteration
        self._tallied = False
        self._answers: dict[int, int] = {}
        self._successes = 0
        self._rejections = 0
        self._bounds: tuple[float, ...] = tuple(self.duration._upper_bounds)
        self._duration_buckets = [0] * len(self._bounds)
        self._duration_sum = 0.0

    def answered(self, status: int, duration: float) -> None:
        """A client request answered (sidecar_requests_total, the duration histogram)."""
        if not self._tallied:
            self._tallied = True
            self._end_of_iteration.defer(self.publish)
        self._answers[status] = self._answers.get(status, 0) + 1
        self._duration_buckets[bisect_left(self._bounds, duration)] += 1
        self._duration_sum += duration

    def attempt_succeeded(self) -> None:
        if not self._tallied:
            self._tallied = True
            self._end_of_iteration.defer(self.publish)
        self._successes += 1

    def circuit_rejected(self) -> None:
        """An attempt the open circuit refused (attempts{rejected} and circuit_rejected)."""
        if not self._tallied:
            self._tallied = True
            self._end_of_iteration.defer(self.publish)
        self._rejections += 1

    def publish(self) -> None:
        """Add the tallies to the Prometheus children."""
        self._tallied = False
        for status, count in self._answers.items():
            self.requests[status].inc(count)
        self._answers.clear()
        if self._successes:
            self.attempt_success.inc(self._successes)
            self._successes = 0
        if self._rejections:
            self.attempt_rejected.inc(self._rejections)
            self.circuit_rejected_total.inc(self._rejections)
            self._rejections = 0
        add_observations(self.duration, self._duration_buckets, self._duration_sum)
        self._duration_buckets = [0] * len(self._bounds)
        self._duration_sum = 0.0

    def show_state(self, state: str) -> None:
        for name, gauge in self.circuit_state.items():
            gauge.set(1 if name == state else 0)


def add_observations(histogram: Any, bucket_counts: list[int], total: float) -> None:
    """``observe()`` for many values at once, given how many fell in each bucket (not
    cumulative) and their sum. prometheus_client has no public batch call, so this adds to
    the child's bucket and sum values as observe() does; the unit tests check that the
    exposition matches observe() value by value, so a change of those internals shows there."""
    if total or any(bucket_counts):
        histogram._sum.inc(total)
        for bucket, count in zip(histogram._buckets, bucket_counts, strict=True):
            if count:
                bucket.inc(count)


class _TransitionFamily:
    __slots__ = ("_base", "_children")

    def __init__(self, base: tuple[str, ...]) -> None:
        self._base = base
        self._children: dict[tuple[str, str], Any] = {}

    def __getitem__(self, key: tuple[str, str]) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = obs.CIRCUIT_TRANSITIONS.labels(*self._base, *key)
        return child
