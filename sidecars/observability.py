"""Structured JSON logging and every Prometheus metric of the toolkit, defined once."""

from __future__ import annotations

import datetime
import importlib.util
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any, Generic, Protocol, TextIO, TypeVar, cast

import orjson
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

import sidecars

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


ROOT_LOGGER = "sidecars"
"""The ``logger`` of an event logged without a name."""


class _Envelope:
    """Every event starts ``timestamp, level, sidecar, logger, event``, in that order, then
    its own fields: the order of the proxies' access lines too, so that one reader (the log
    adapter's, a jq filter) fits every line a sidecar writes."""

    def __init__(self, sidecar: str) -> None:
        self.sidecar = sidecar

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        level = event.pop("level")
        ordered = {
            "timestamp": event.pop("timestamp"),
            "level": "warn" if level == "warning" else level,
            "sidecar": event.pop("sidecar", self.sidecar),
            "logger": event.pop("logger_name", ROOT_LOGGER),
            "event": event.pop("event"),
        }
        ordered.update(event)
        return ordered


class TextSink(Protocol):
    """What log lines are written to: a text file, or the proxies' one stdout writer
    (``ProcessLogStream``)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def configure_logging(sidecar: str, level: str, stream: TextSink | None = None) -> None:
    """JSON lines on ``stream`` (stdout by default; the log adapter passes stderr, the
    proxies their stdout writer), each naming the ``sidecar`` that wrote it and its logger."""
    out = cast(TextIO, stream or sys.stdout)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            _Envelope(sidecar),
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line (PrintLogger writes the line and its newline apart: a line from
        # another thread could land between them).
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (redis, pybreaker, aiohttp) end up as
    # JSON lines on the same stream instead of bare text.
    handler = logging.StreamHandler(out)
    handler.setFormatter(_StdlibJSONFormatter(sidecar))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _StdlibJSONFormatter(logging.Formatter):
    """A standard library record as the same JSON event as structlog's (``_Envelope``)."""

    def __init__(self, sidecar: str) -> None:
        super().__init__()
        self.sidecar = sidecar

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        event: dict[str, Any] = {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": "warn" if record.levelname == "WARNING" else record.levelname.lower(),
            "sidecar": self.sidecar,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            event["error"] = f"{type(error).__name__}: {error}"
        return orjson.dumps(event).decode()


class ProcessLogStream:
    """The text stream structlog's and the standard library's log lines are written to in a
    proxy: each whole line goes to ``put``, the process's one stdout writer
    (``accesslog.StdoutWriter``, which the access lines go to), never waiting on a reader. A
    line ``put`` refuses (stdout full) is dropped, counted in
    ``sidecar_access_log_dropped_total{reason="process_log"}`` and reported by a
    ``log_lines_dropped`` line once stdout takes lines again. Not compiled: structlog keeps
    a weak reference to the stream it writes to."""

    def __init__(self, put: Callable[[bytes], bool], sidecar: str) -> None:
        self._put = put
        self._sidecar = sidecar
        self._lock = threading.Lock()  # the standard library may log from other threads
        self._partial = ""  # print() writes a line and its newline apart
        self._dropped = 0  # lines dropped since the last log_lines_dropped line
        self._dropped_total = ACCESS_LOG_DROPPED.labels(sidecar, "process_log")

    def write(self, text: str) -> int:
        with self._lock:
            if "\n" not in text:
                self._partial += text
                return len(text)
            lines, _, self._partial = (self._partial + text).rpartition("\n")
            data = (lines + "\n").encode("utf-8", "replace")
            report = self._dropped_report() if self._dropped else b""
            if self._put(report + data):
                self._dropped = 0
            else:
                count = data.count(b"\n")
                self._dropped += count
                self._dropped_total.inc(count)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: whole lines are handed over at once (the writer flushes)."""

    def _dropped_report(self) -> bytes:
        event = {
            "timestamp": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%S.%fZ}",
            "level": "warn",
            "sidecar": self._sidecar,
            "logger": "sidecars.proxy.stdout",
            "event": "log_lines_dropped",
            "lines": self._dropped,
            "reason": "stdout_full",
        }
        return orjson.dumps(event) + b"\n"


def get_logger(name: str) -> Any:
    """A structlog logger whose events carry ``logger=name`` (bound as ``logger_name``:
    structlog's own ``get_logger`` takes a ``logger`` argument; ``_Envelope`` renames it)."""
    return structlog.get_logger(logger_name=name)


class LogThrottle:
    """At most one log line per ``interval`` seconds for an event that can repeat in a flood
    (a failed accept, a timed-out admin connection); the metric counts every occurrence."""

    __slots__ = ("_clock", "_interval", "_next", "held_back")

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._interval = interval
        self._next = -math.inf
        self.held_back = 0

    def due(self) -> int | None:
        """None while the line is held back; else how many were held back since the last."""
        now = self._clock()
        if now < self._next:
            self.held_back += 1
            return None
        self._next = now + self._interval
        held, self.held_back = self.held_back, 0
        return held


# No `*_created` series: a timestamp per counter and label set doubles every scrape and no
# dashboard reads it (Envoy and HAProxy exporters have none either).
disable_created_metrics()  # type: ignore[no-untyped-call]

PROXY_METRICS = CollectorRegistry(auto_describe=True)
"""The ``sidecar_*`` families: what the breaker and the ambassador export."""
LOG_ADAPTER_METRICS = CollectorRegistry(auto_describe=True)
"""The ``logadapter_*`` families: what the log adapter exports."""
REGISTRY = CollectorRegistry(auto_describe=True)
"""What the admin server's /metrics serves: filled once per process by ``expose``."""


COMPILED_GROUP_PROBES = {
    "sidecars_logs": "sidecars.logs.processor",
    "sidecars_proxy": "sidecars.proxy.exchange",
}
"""A module of each of ``setup.py``'s ``COMPILED_GROUPS``: where it loads from says whether
that group is the compiled build."""


def build_kinds() -> dict[str, str]:
    """``compiled`` or ``pure Python`` for each compiled group (``COMPILED_GROUP_PROBES``),
    from where its module would load (``find_spec``: nothing of the group is imported, so
    the log adapter does not pay for the proxy's modules, nor the proxies for the logs')."""
    compiled = tuple(EXTENSION_SUFFIXES)
    kinds: dict[str, str] = {}
    for group, module in COMPILED_GROUP_PROBES.items():
        spec = importlib.util.find_spec(module)
        origin = (spec.origin if spec is not None else None) or ""
        kinds[group] = "compiled" if origin.endswith(compiled) else "pure Python"
    return kinds


class _BuildInfo(Collector):
    """``sidecars_build_info{version,build,sidecars_logs,sidecars_proxy} 1``: ``build`` is the
    log processing's build (its meaning since before the proxy was compiled), one label per
    compiled group says that group's. Looked up at the first scrape, not at start-up."""

    def __init__(self) -> None:
        self._labels: list[str] | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        if self._labels is None:
            kinds = build_kinds()
            self._labels = [sidecars.__version__, kinds["sidecars_logs"], *kinds.values()]
        family = self._family()
        family.add_metric(self._labels, 1)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sidecars_build_info",
            "The running package's version and build (compiled or pure Python): ``build`` "
            "of the log processing, then one label per compiled group.",
            labels=["version", "build", *COMPILED_GROUP_PROBES],
        )


def expose(families: CollectorRegistry) -> None:
    """Serve one sidecar's families, with the process collector (``process_*``: CPU, memory,
    open files) and ``sidecars_build_info``, on /metrics. Once per process."""
    REGISTRY.register(families)
    ProcessCollector(registry=REGISTRY)
    REGISTRY.register(_BuildInfo())


_PROXY = ("sidecar", "upstream")

REQUEST_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
)
"""Bounds of ``sidecar_request_duration_seconds`` (and +Inf)."""


class RouteRequestsCollector:
    """The per-request families, read at scrape time from the routes' plain counts
    (``proxy.metrics``): ``source`` yields, per (sidecar, upstream), the answers by status,
    the duration buckets (not cumulative, +Inf last) and sum by status class, and the
    attempts by outcome. ``families`` picks what this collector yields, so that each family
    keeps its place in the exposition."""

    def __init__(self, families: tuple[str, ...]) -> None:
        self.families = families
        self.source: Callable[[], Iterable[RequestSample]] | None = None

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "sidecar_requests_total", "Client requests answered.", labels=[*_PROXY, "code"]
        )
        duration = HistogramMetricFamily(
            "sidecar_request_duration_seconds",
            "Time from request head to the end of the response, by status class (2xx...).",
            labels=[*_PROXY, "status_class"],
        )
        attempts = CounterMetricFamily(
            "sidecar_upstream_attempts_total",
            "Attempts towards the upstream by outcome: success, failure, rejected.",
            labels=[*_PROXY, "outcome"],
        )
        rejected = CounterMetricFamily(
            "sidecar_circuit_rejected_total",
            "Requests answered at once because the circuit was open.",
            labels=list(_PROXY),
        )
        bounds = [
            floatToGoString(bound)  # type: ignore[no-untyped-call]
            for bound in (*REQUEST_DURATION_BUCKETS, math.inf)
        ]
        for sidecar, upstream, by_status, histograms, outcomes in (
            self.source() if self.source is not None else ()
        ):
            for status, count in by_status.items():
                requests.add_metric([sidecar, upstream, str(status)], count)
            for name, (buckets, total) in histograms.items():
                cumulative = list(zip(bounds, itertools.accumulate(buckets), strict=True))
                duration.add_metric([sidecar, upstream, name], cumulative, total)
            for outcome, count in outcomes.items():
                attempts.add_metric([sidecar, upstream, outcome], count)
            rejected.add_metric([sidecar, upstream], outcomes["rejected"])
        chosen = {"requests": requests, "duration": duration, "attempts": attempts}
        chosen["rejected"] = rejected
        yield from (chosen[name] for name in self.families)


# sidecar, upstream, answers by status, by status class (buckets, sum), attempts by outcome
RequestSample = tuple[
    str, str, dict[int, int], dict[str, tuple[list[int], float]], dict[str, int]
]
ROUTE_REQUESTS = RouteRequestsCollector(("requests", "duration", "attempts"))
PROXY_METRICS.register(ROUTE_REQUESTS)
RETRIES = Counter(
    "sidecar_retries_total", "Retries made, by reason.", [*_PROXY, "reason"], registry=PROXY_METRICS
)
RETRY_BUDGET_EXHAUSTED = Counter(
    "sidecar_retry_budget_exhausted_total",
    "Retries not made because the retry budget was spent.",
    _PROXY,
    registry=PROXY_METRICS,
)
RETRIES_SKIPPED = Counter(
    "sidecar_retries_skipped_total",
    "Retries not made for safety: non-idempotent, body too large to replay, deadline.",
    [*_PROXY, "reason"],
    registry=PROXY_METRICS,
)
CIRCUIT_STATE = Gauge(
    "sidecar_circuit_state",
    "1 for the current circuit state.",
    [*_PROXY, "state"],
    registry=PROXY_METRICS,
)
CIRCUIT_TRANSITIONS = Counter(
    "sidecar_circuit_transitions_total",
    "Circuit state changes.",
    [*_PROXY, "from", "to"],
    registry=PROXY_METRICS,
)
CIRCUIT_REJECTED = RouteRequestsCollector(("rejected",))
PROXY_METRICS.register(CIRCUIT_REJECTED)
CIRCUIT_SHARED_STATE_ERRORS = Counter(
    "sidecar_circuit_shared_state_errors_total",
    "Failed exchanges with the shared breaker state store (Redis); local state kept serving.",
    _PROXY,
    registry=PROXY_METRICS,
)
FALLBACK_REQUESTS = Counter(
    "sidecar_fallback_requests_total",
    "Requests sent to the fallback upstream while the circuit was open.",
    _PROXY,
    registry=PROXY_METRICS,
)
BAD_REQUESTS = Counter(
    "sidecar_bad_requests_total",
    "Client input refused before reaching the upstream, by reason.",
    [*_PROXY, "reason"],
    registry=PROXY_METRICS,
)
UPSTREAM_ERRORS = Counter(
    "sidecar_upstream_errors_total",
    "Upstream misbehaviour by kind: connect, dns, reset, timeout, bad_response, tls.",
    [*_PROXY, "kind"],
    registry=PROXY_METRICS,
)
CONNECTIONS = Counter(
    "sidecar_connections_total",
    "Client connections accepted (TCP mode: relayed connections).",
    _PROXY,
    registry=PROXY_METRICS,
)
ACTIVE_CONNECTIONS = Gauge(
    "sidecar_active_connections",
    "Client connections open now.",
    _PROXY,
    registry=PROXY_METRICS,
)
TRACEPARENT_REPLACED = Counter(
    "sidecar_traceparent_replaced_total",
    "Requests whose traceparent was not valid W3C Trace Context: a new trace was begun.",
    _PROXY,
    registry=PROXY_METRICS,
)
TUNNELS_IDLE_CLOSED = Counter(
    "sidecar_tunnels_idle_closed_total",
    "WebSocket/upgrade tunnels and TCP-mode relays closed after the idle timeout with no bytes "
    "either way.",
    _PROXY,
    registry=PROXY_METRICS,
)
UPSTREAM_CONNECTIONS_OPENED = Counter(
    "sidecar_upstream_connections_opened_total",
    "New upstream connections (a low rate means the pool is reusing connections).",
    _PROXY,
    registry=PROXY_METRICS,
)
ACCEPT_ERRORS = Counter(
    "sidecar_accept_errors_total",
    "Failed accept() calls on a data port, by errno name (EMFILE: out of descriptors).",
    [*_PROXY, "reason"],
    registry=PROXY_METRICS,
)
ACCEPT_PAUSES = Counter(
    "sidecar_accept_paused_total",
    "Times a data port stopped accepting for want of descriptors (reserve reached, accept failed).",
    _PROXY,
    registry=PROXY_METRICS,
)
ACCESS_LOG_DROPPED = Counter(
    "sidecar_access_log_dropped_total",
    "Stdout lines lost, by reason: stdout_full (access lines: stdout took nothing while the "
    "pending lines reached their bound), process_log (process log lines, the same way), "
    "write_error (stdout closed).",
    ["sidecar", "reason"],
    registry=PROXY_METRICS,
)
ADMIN_CONNECTIONS_CLOSED = Counter(
    "sidecars_admin_connections_closed_total",
    "Admin connections closed by the admin server: request_timeout, too_many.",
    ["reason"],
    registry=REGISTRY,
)

OUTLIER_EJECTIONS = Counter(
    "sidecar_outlier_ejections_total",
    "Endpoints ejected by outlier detection, by reason (consecutive_failures, slow_calls).",
    [*_PROXY, "reason"],
    registry=PROXY_METRICS,
)

FAULTS_INJECTED = Counter(
    "sidecar_faults_injected_total",
    "Faults injected (P_FAULT_*, admin drills, fault headers), by kind: abort, delay, reset.",
    [*_PROXY, "kind"],
    registry=PROXY_METRICS,
)
CANARY_WEIGHT = Gauge(
    "sidecar_canary_weight",
    "Percent of requests the canary rollout sends to the canary cluster.",
    _PROXY,
    registry=PROXY_METRICS,
)
CANARY_SHARED_STATE_ERRORS = Counter(
    "sidecar_canary_shared_state_errors_total",
    "Failed exchanges with the shared canary rollout store (Redis); local rollout kept.",
    _PROXY,
    registry=PROXY_METRICS,
)
CANARY_TRANSITIONS = Counter(
    "sidecar_canary_transitions_total",
    "Canary rollout changes, by new state and reason.",
    [*_PROXY, "to", "reason"],
    registry=PROXY_METRICS,
)


# -- overload protection (issue 14) ---------------------------------------------------------
OVERLOAD_REJECTED = Counter(
    "sidecar_overload_rejected_total",
    "Requests answered 503 overloaded (or TCP connections closed), by reason: max_requests, "
    "queue_full, queue_timeout, max_retries, max_connections.",
    [*_PROXY, "reason"],
    registry=PROXY_METRICS,
)
RATE_LIMITED = Counter(
    "sidecar_rate_limited_total",
    "Requests answered 429 rate_limited.",
    _PROXY,
    registry=PROXY_METRICS,
)
RATE_LIMIT_FALLBACK = Counter(
    "sidecar_rate_limit_fallback_total",
    "Requests decided by the local fallback bucket because the shared rate limit's Redis was "
    "unreachable.",
    _PROXY,
    registry=PROXY_METRICS,
)
IN_FLIGHT = Gauge(
    "sidecar_in_flight",
    "Requests holding a concurrency slot (P_MAX_REQUESTS) now.",
    _PROXY,
    registry=PROXY_METRICS,
)
QUEUE_DEPTH = Gauge(
    "sidecar_queue_depth",
    "Requests waiting for a concurrency slot now (P_MAX_PENDING).",
    _PROXY,
    registry=PROXY_METRICS,
)
CONCURRENCY_LIMIT = Gauge(
    "sidecar_concurrency_limit",
    "The concurrency limit in force: P_MAX_REQUESTS, or the adaptive limit as it moves.",
    _PROXY,
    registry=PROXY_METRICS,
)
# -- end of overload protection -------------------------------------------------------------


class EndpointCollector:
    """Per-endpoint series read at scrape time from the clusters' plain counters (a
    prometheus_client ``inc()`` per request would cost a microsecond on the data path).
    ``source`` yields, per cluster: sidecar, upstream, endpoints by state, and per endpoint
    its address, attempts sent, failures and requests in flight."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[EndpointSample]] | None = None

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "sidecar_endpoints",
            "Endpoints of the upstream cluster, by state (healthy, ejected, unhealthy, "
            "draining).",
            labels=[*_PROXY, "state"],
        )
        requests = CounterMetricFamily(
            "sidecar_endpoint_requests",
            "Attempts sent to each endpoint.",
            labels=[*_PROXY, "endpoint"],
        )
        failures = CounterMetricFamily(
            "sidecar_endpoint_failures",
            "Attempts to each endpoint that failed.",
            labels=[*_PROXY, "endpoint"],
        )
        in_flight = GaugeMetricFamily(
            "sidecar_endpoint_in_flight",
            "Attempts under way at each endpoint.",
            labels=[*_PROXY, "endpoint"],
        )
        if self.source is not None:
            for sidecar, upstream, counts, endpoints in self.source():
                for state, count in counts.items():
                    states.add_metric([sidecar, upstream, state], count)
                for name, sent, failed, busy in endpoints:
                    requests.add_metric([sidecar, upstream, name], sent)
                    failures.add_metric([sidecar, upstream, name], failed)
                    in_flight.add_metric([sidecar, upstream, name], busy)
        yield from (states, requests, failures, in_flight)


EndpointSample = tuple[str, str, dict[str, int], list[tuple[str, int, int, int]]]
ENDPOINTS = EndpointCollector()

_Owner = TypeVar("_Owner")


class WeakHandle(Generic[_Owner]):
    """What a process-wide registry (a WeakSet read at scrape time) holds for an object of a
    class mypyc compiles, as compiled classes take no weak references: the owner keeps its
    handle, so the handle goes when the owner is collected."""

    __slots__ = ("__weakref__", "owner")

    def __init__(self, owner: _Owner) -> None:
        self.owner = owner

PROXY_METRICS.register(ENDPOINTS)


class CanaryRequestsCollector:
    """``sidecar_canary_requests_total`` read at scrape time from the canary filters' plain
    counts; ``source`` yields sidecar, upstream and the counts by (version, code)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[CanarySample]] | None = None

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "sidecar_canary_requests",
            "Attempts by version (stable, canary) and status code (or failure kind without one).",
            labels=[*_PROXY, "version", "code"],
        )
        if self.source is not None:
            for sidecar, upstream, counts in self.source():
                for (version, code), count in counts.items():
                    requests.add_metric([sidecar, upstream, version, str(code)], count)
        yield requests


CanarySample = tuple[str, str, dict[tuple[str, int | str], int]]
CANARY_REQUESTS = CanaryRequestsCollector()
PROXY_METRICS.register(CANARY_REQUESTS)

_LOG = ("output",)
LOG_RECORDS_IN = Counter(
    "logadapter_records_in_total",
    "Records received, by input.",
    ["input"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_RECORDS_OUT = Counter(
    "logadapter_records_out_total",
    "Records delivered, by output.",
    _LOG,
    registry=LOG_ADAPTER_METRICS,
)
LOG_RECORDS_FORMAT = Counter(
    "logadapter_records_format_total",
    "Records parsed, by detected format.",
    ["format"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_RECORDS_DROPPED = Counter(
    "logadapter_records_dropped_total",
    "Records dropped, by reason (only where a protocol cannot push back).",
    ["reason"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_OUTPUT_ERRORS = Counter(
    "logadapter_output_errors_total",
    "Failed deliveries, by output.",
    _LOG,
    registry=LOG_ADAPTER_METRICS,
)
LOG_BUFFER_RECORDS = Gauge(
    "logadapter_buffer_records", "Records waiting in the buffer.", registry=LOG_ADAPTER_METRICS
)
LOG_BUFFER_BYTES = Gauge(
    "logadapter_buffer_bytes", "Bytes waiting in the buffer.", registry=LOG_ADAPTER_METRICS
)
LOG_REDACTIONS = Counter(
    "logadapter_redactions_total",
    "Secrets masked, by rule.",
    ["rule"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_TRUNCATED = Counter(
    "logadapter_records_truncated_total",
    "Lines or joined groups cut at a size limit (the cut is marked in the record).",
    ["reason"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_INPUT_ERRORS = Counter(
    "logadapter_input_errors_total",
    "Bad input by input and kind (corrupt msgpack, bad frame, invalid UTF-8...).",
    ["input", "kind"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_RECORDS_BY_LEVEL = Counter(
    "logadapter_log_records_total",
    "Records by service and level (at most 100 services; the rest are counted as other).",
    ["service", "level"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_HTTP_RESPONSES = Counter(
    "logadapter_http_responses_total",
    "Access-log records by service and status class (1xx-5xx, other).",
    ["service", "status_class"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_CLOUDWATCH_RESTAMPED = Counter(
    "logadapter_cloudwatch_events_restamped_total",
    "CloudWatch events sent with the time of sending: their own was too old or too far ahead.",
    ["reason"],
    registry=LOG_ADAPTER_METRICS,
)
LOG_MULTILINE_GROUPS = Counter(
    "logadapter_multiline_groups_total",
    "Multi-line groups joined into one record (stack traces, continuations).",
    registry=LOG_ADAPTER_METRICS,
)
