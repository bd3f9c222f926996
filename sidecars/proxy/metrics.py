"""Per-route metrics: plain counts on the request path, Prometheus families at scrape time.

A prometheus_client ``inc()`` costs about 1 us and ``observe()`` about 3 us here, a third of
the proxy's own per-request time if done per request, and publishing them once per loop
iteration still cost 7 us (30 us p99) per iteration, ahead of the iteration's socket writes.
So the request path only adds to plain ints: the answers by status, each status class's
duration buckets (one bucket found per request, so memory stays bounded whatever the scrape
interval), the attempts by outcome. ``sidecar_requests_total``,
``sidecar_request_duration_seconds``, ``sidecar_upstream_attempts_total`` and
``sidecar_circuit_rejected_total`` are built from them when /metrics is scraped
(``observability.RouteRequestsCollector``), with the names, labels and values the
prometheus_client families had.

Scrapes are served by the admin server on the event loop's thread, the thread that adds to
the counts, so a scrape reads them between two callbacks: never half an update.

Counts are kept per (sidecar, upstream) for the life of the process, as prometheus_client's
children were: two routes of one name (tests build many) add to the same counts, and a
counter never goes down.

Other per-route families change rarely (retries, transitions, connections) and stay
prometheus_client children, bound once here: ``.labels()`` is a locked dict lookup with label
validation, too slow to call per request.

Durations are kept by status class (``status_class="2xx"``...), so that success latency reads
alone, not mixed with the sub-millisecond answers of an open circuit; a class rather than
the status keeps a histogram's 16 series per class, not per status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from sidecars import observability as obs
from sidecars.policies.breaker import STATES


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


class Durations:
    """One status class's histogram: how many durations fell in each bucket (not
    cumulative; the last bucket is +Inf) and their sum, as ``observe()`` keeps them."""

    __slots__ = ("buckets", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.total = 0.0


class Count:
    """A plain counter with prometheus_client's ``inc()``, read at scrape time."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class StatusAnswers:
    """How many answers had one status, and its status class's durations: one dict lookup
    per answer finds both."""

    __slots__ = ("count", "durations")

    def __init__(self, durations: Durations) -> None:
        self.count = 0
        self.durations = durations


class RequestCounts:
    """What the scrape-time families read for one (sidecar, upstream)."""

    __slots__ = ("by_status", "durations", "failures", "rejections", "successes")

    def __init__(self) -> None:
        self.by_status: dict[int, StatusAnswers] = {}
        self.durations: dict[int, Durations] = {}  # by status // 100
        self.successes = Count()
        self.failures = Count()
        self.rejections = Count()


# Every (sidecar, upstream)'s counts, for the scrape (observability.RouteRequestsCollector).
_COUNTS: dict[tuple[str, str], RequestCounts] = {}
_BOUNDS: Final[tuple[float, ...]] = (*obs.REQUEST_DURATION_BUCKETS, float("inf"))


def counts_for(sidecar: str, upstream: str) -> RequestCounts:
    counts = _COUNTS.get((sidecar, upstream))
    if counts is None:
        counts = _COUNTS[sidecar, upstream] = RequestCounts()
    return counts


class RouteMetrics:
    __slots__ = (
        "_by_status",
        "_counts",
        "_durations",
        "active_connections",
        "answered_total",
        "attempt_failure",
        "bad_requests",
        "circuit_state",
        "connections",
        "fallback_requests",
        "retries",
        "retries_skipped",
        "retry_budget_exhausted",
        "traceparent_replaced",
        "transitions",
        "tunnels_idle_closed",
        "upstream_connections_opened",
        "upstream_errors",
    )

    def __init__(self, sidecar: str, upstream: str) -> None:
        base = (sidecar, upstream)
        counts = self._counts = counts_for(sidecar, upstream)
        self._by_status = counts.by_status
        self._durations = counts.durations
        self.attempt_failure = counts.failures
        self.retries = _Family(obs.RETRIES, base)
        self.retries_skipped = _Family(obs.RETRIES_SKIPPED, base)
        self.retry_budget_exhausted = obs.RETRY_BUDGET_EXHAUSTED.labels(*base)
        self.circuit_state = {state: obs.CIRCUIT_STATE.labels(*base, state) for state in STATES}
        self.transitions = _TransitionFamily(base)
        self.fallback_requests = obs.FALLBACK_REQUESTS.labels(*base)
        self.bad_requests = _Family(obs.BAD_REQUESTS, base)
        self.upstream_errors = _Family(obs.UPSTREAM_ERRORS, base)
        self.connections = obs.CONNECTIONS.labels(*base)
        self.active_connections = obs.ACTIVE_CONNECTIONS.labels(*base)
        self.tunnels_idle_closed = obs.TUNNELS_IDLE_CLOSED.labels(*base)
        self.traceparent_replaced = obs.TRACEPARENT_REPLACED.labels(*base)
        self.upstream_connections_opened = obs.UPSTREAM_CONNECTIONS_OPENED.labels(*base)
        self.answered_total = 0  # client requests this route answered (/status)

    def answered(self, status: int, duration: float) -> None:
        """A client request answered (sidecar_requests_total, the duration histogram)."""
        answers = self._by_status.get(status)
        if answers is None:
            answers = self._first_answer(status)
        answers.count += 1
        durations = answers.durations
        # The first bucket whose bound the duration does not pass, as observe() counts: a
        # native loop, as most answers fall in the first buckets.
        bucket = 0
        for bound in _BOUNDS:
            if duration <= bound:
                break
            bucket += 1
        else:
            bucket = len(_BOUNDS) - 1  # NaN passes no bound: counted in the last bucket
        durations.buckets[bucket] += 1
        durations.total += duration
        self.answered_total += 1

    def _first_answer(self, status: int) -> StatusAnswers:
        durations = self._durations.get(status // 100)
        if durations is None:
            durations = self._durations[status // 100] = Durations(len(_BOUNDS))
        answers = self._by_status[status] = StatusAnswers(durations)
        return answers

    def attempt_succeeded(self) -> None:
        self._counts.successes.value += 1

    def circuit_rejected(self) -> None:
        """An attempt the open circuit refused (attempts{rejected} and circuit_rejected)."""
        self._counts.rejections.value += 1

    def show_state(self, state: str) -> None:
        for name, gauge in self.circuit_state.items():
            gauge.set(1 if name == state else 0)


def _samples() -> Iterator[obs.RequestSample]:
    for (sidecar, upstream), counts in _COUNTS.items():
        histograms = {
            status_class(group * 100): (list(durations.buckets), durations.total)
            for group, durations in counts.durations.items()
        }
        yield (
            sidecar,
            upstream,
            {status: answers.count for status, answers in counts.by_status.items()},
            histograms,
            {
                "success": counts.successes.value,
                "failure": counts.failures.value,
                "rejected": counts.rejections.value,
            },
        )


obs.ROUTE_REQUESTS.source = obs.CIRCUIT_REJECTED.source = _samples


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
