"""Per-route metric children, bound once: ``.labels()`` is a locked dict lookup with label
validation, far too slow to call per request.

The per-request counts (answers by status, their durations, successful attempts) are kept in
plain lists and integers and added to Prometheus once per event loop iteration: a
prometheus_client ``inc()`` costs about 1 us and ``observe()`` about 3 us here, a third of the
proxy's own per-request time if done per request. Per request only two appends remain; the
iteration counts statuses with ``list.count`` and puts durations in buckets by sorting them
and bisecting once per bucket bound.

Durations are kept by status class (``status_class="2xx"``...), so that success latency reads
alone, not mixed with the sub-millisecond answers of an open circuit; a class rather than
the status keeps a histogram's 16 series per class, not per status.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from itertools import compress
from typing import Any

from sidecars import observability as obs
from sidecars.policies.breaker import STATES
from sidecars.proxy.batch import EndOfIteration


def status_class(status: int) -> str:
    """The ``status_class`` label of the duration histogram: ``2xx`` for 200-299..."""
    return f"{status // 100}xx"


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
        "_bounds",
        "_durations",
        "_end_of_iteration",
        "_rejections",
        "_statuses",
        "_successes",
        "_tallied",
        "active_connections",
        "answered_total",
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
        "traceparent_replaced",
        "transitions",
        "tunnels_idle_closed",
        "upstream_connections_opened",
        "upstream_errors",
    )

    def __init__(self, sidecar: str, upstream: str, end_of_iteration: EndOfIteration) -> None:
        base = (sidecar, upstream)
        self.requests = _Family(obs.REQUESTS, base)
        self.duration = _Family(obs.REQUEST_DURATION, base)
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
        self.tunnels_idle_closed = obs.TUNNELS_IDLE_CLOSED.labels(*base)
        self.traceparent_replaced = obs.TRACEPARENT_REPLACED.labels(*base)
        self.upstream_connections_opened = obs.UPSTREAM_CONNECTIONS_OPENED.labels(*base)
        self._end_of_iteration = end_of_iteration
        self._tallied = False
        self._statuses: list[int] = []  # of the answers this iteration
        self._durations: list[float] = []
        self.answered_total = 0  # client requests answered, as published
        self._successes = 0
        self._rejections = 0
        self._bounds: tuple[float, ...] = tuple(obs.REQUEST_DURATION._upper_bounds)

    def answered(self, status: int, duration: float) -> None:
        """A client request answered (sidecar_requests_total, the duration histogram)."""
        if not self._tallied:
            self._tallied = True
            self._end_of_iteration.defer(self.publish)
        self._statuses.append(status)
        self._durations.append(duration)

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
        statuses = self._statuses
        if statuses:
            durations = self._durations
            self._statuses = []
            self._durations = []
            answered = len(statuses)
            first = statuses[0]
            if statuses.count(first) == answered:  # the usual iteration: one status
                add_to_counter(self.requests[first], answered)
                self._observe(status_class(first), durations)
            else:
                for status, count in Counter(statuses).items():
                    add_to_counter(self.requests[status], count)
                by_class: dict[str, list[float]] = {}
                for status, duration in zip(statuses, durations, strict=True):
                    by_class.setdefault(status_class(status), []).append(duration)
                for name, class_durations in by_class.items():
                    self._observe(name, class_durations)
            self.answered_total += answered
        if self._successes:
            add_to_counter(self.attempt_success, self._successes)
            self._successes = 0
        if self._rejections:
            add_to_counter(self.attempt_rejected, self._rejections)
            add_to_counter(self.circuit_rejected_total, self._rejections)
            self._rejections = 0

    def _observe(self, name: str, durations: list[float]) -> None:
        counts = bucket_counts(self._bounds, durations)
        add_observations(self.duration[name], counts, sum(durations))

    def show_state(self, state: str) -> None:
        for name, gauge in self.circuit_state.items():
            gauge.set(1 if name == state else 0)


def bucket_counts(bounds: tuple[float, ...], values: list[float]) -> list[int]:
    """How many of ``values`` fall in each histogram bucket (not cumulative): a value belongs
    to the first bucket whose bound it does not pass, as with ``observe()``. Sorts ``values``
    and bisects once per bound up to the largest value, not once per value."""
    values.sort()
    counts = [0] * len(bounds)
    counted = 0
    for index, bound in enumerate(bounds):
        upto = bisect_right(values, bound)
        counts[index] = upto - counted
        counted = upto
        if counted == len(values):
            break
    return counts


def add_observations(histogram: Any, bucket_counts: list[int], total: float) -> None:
    """``observe()`` for many values at once, given how many fell in each bucket (not
    cumulative) and their sum. prometheus_client has no public batch call, so this adds to
    the child's bucket and sum values as observe() does; the unit tests check that the
    exposition matches observe() value by value, so a change of those internals shows there."""
    histogram._sum.inc(total)
    buckets = histogram._buckets
    for index in compress(range(len(bucket_counts)), bucket_counts):  # the buckets hit only
        buckets[index].inc(bucket_counts[index])


def add_to_counter(counter: Any, amount: int) -> None:
    """``counter.inc(amount)`` without its per-call checks (a child of a labelled counter, a
    positive amount: both known here); the same internals as add_observations."""
    counter._value.inc(amount)


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
