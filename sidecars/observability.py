"""Structured JSON logging and every Prometheus metric of the toolkit, defined once."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def _rename_warning(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if event.get("level") == "warning":
        event["level"] = "warn"
    return event


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (stdout by default; the log adapter passes stderr)."""
    out = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _rename_warning,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (redis, pybreaker, aiohttp) end up as
    # JSON lines on the same stream instead of bare text.
    handler = logging.StreamHandler(out)
    handler.setFormatter(_StdlibJSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _StdlibJSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "event": record.getMessage(),
            "level": "warn" if record.levelname == "WARNING" else record.levelname.lower(),
            "logger": record.name,
            "timestamp": self.formatTime(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            event["error"] = f"{type(error).__name__}: {error}"
        return orjson.dumps(event).decode()


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


# No `*_created` series: a timestamp per counter and label set doubles every scrape and no
# dashboard reads it (Envoy and HAProxy exporters have none either).
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

_PROXY = ("sidecar", "upstream")

REQUESTS = Counter(
    "sidecar_requests_total", "Client requests answered.", [*_PROXY, "code"], registry=REGISTRY
)
REQUEST_DURATION = Histogram(
    "sidecar_request_duration_seconds",
    "Time from request head to the end of the response.",
    _PROXY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
UPSTREAM_ATTEMPTS = Counter(
    "sidecar_upstream_attempts_total",
    "Attempts towards the upstream by outcome: success, failure, rejected.",
    [*_PROXY, "outcome"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "sidecar_retries_total", "Retries made, by reason.", [*_PROXY, "reason"], registry=REGISTRY
)
RETRY_BUDGET_EXHAUSTED = Counter(
    "sidecar_retry_budget_exhausted_total",
    "Retries not made because the retry budget was spent.",
    _PROXY,
    registry=REGISTRY,
)
RETRIES_SKIPPED = Counter(
    "sidecar_retries_skipped_total",
    "Retries not made for safety: non-idempotent, body too large to replay, deadline.",
    [*_PROXY, "reason"],
    registry=REGISTRY,
)
CIRCUIT_STATE = Gauge(
    "sidecar_circuit_state",
    "1 for the current circuit state.",
    [*_PROXY, "state"],
    registry=REGISTRY,
)
CIRCUIT_TRANSITIONS = Counter(
    "sidecar_circuit_transitions_total",
    "Circuit state changes.",
    [*_PROXY, "from", "to"],
    registry=REGISTRY,
)
CIRCUIT_REJECTED = Counter(
    "sidecar_circuit_rejected_total",
    "Requests answered at once because the circuit was open.",
    _PROXY,
    registry=REGISTRY,
)
CIRCUIT_SHARED_STATE_ERRORS = Counter(
    "sidecar_circuit_shared_state_errors_total",
    "Failed exchanges with the shared breaker state store (Redis); local state kept serving.",
    _PROXY,
    registry=REGISTRY,
)
FALLBACK_REQUESTS = Counter(
    "sidecar_fallback_requests_total",
    "Requests sent to the fallback upstream while the circuit was open.",
    _PROXY,
    registry=REGISTRY,
)
BAD_REQUESTS = Counter(
    "sidecar_bad_requests_total",
    "Client input refused before reaching the upstream, by reason.",
    [*_PROXY, "reason"],
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "sidecar_upstream_errors_total",
    "Upstream misbehaviour by kind: connect, reset, timeout, bad_response, tls.",
    [*_PROXY, "kind"],
    registry=REGISTRY,
)
CONNECTIONS = Counter(
    "sidecar_connections_total",
    "Client connections accepted (TCP mode: relayed connections).",
    _PROXY,
    registry=REGISTRY,
)
ACTIVE_CONNECTIONS = Gauge(
    "sidecar_active_connections",
    "Client connections open now.",
    _PROXY,
    registry=REGISTRY,
)
TUNNELS_IDLE_CLOSED = Counter(
    "sidecar_tunnels_idle_closed_total",
    "WebSocket/upgrade tunnels closed after the idle timeout with no bytes either way.",
    _PROXY,
    registry=REGISTRY,
)
UPSTREAM_CONNECTIONS_OPENED = Counter(
    "sidecar_upstream_connections_opened_total",
    "New upstream connections (a low rate means the pool is reusing connections).",
    _PROXY,
    registry=REGISTRY,
)

_LOG = ("output",)
LOG_RECORDS_IN = Counter(
    "logadapter_records_in_total", "Records received, by input.", ["input"], registry=REGISTRY
)
LOG_RECORDS_OUT = Counter(
    "logadapter_records_out_total", "Records delivered, by output.", _LOG, registry=REGISTRY
)
LOG_RECORDS_FORMAT = Counter(
    "logadapter_records_format_total",
    "Records parsed, by detected format.",
    ["format"],
    registry=REGISTRY,
)
LOG_RECORDS_DROPPED = Counter(
    "logadapter_records_dropped_total",
    "Records dropped, by reason (only where a protocol cannot push back).",
    ["reason"],
    registry=REGISTRY,
)
LOG_OUTPUT_ERRORS = Counter(
    "logadapter_output_errors_total", "Failed deliveries, by output.", _LOG, registry=REGISTRY
)
LOG_BUFFER_RECORDS = Gauge(
    "logadapter_buffer_records", "Records waiting in the buffer.", registry=REGISTRY
)
LOG_BUFFER_BYTES = Gauge(
    "logadapter_buffer_bytes", "Bytes waiting in the buffer.", registry=REGISTRY
)
LOG_REDACTIONS = Counter(
    "logadapter_redactions_total", "Secrets masked, by rule.", ["rule"], registry=REGISTRY
)
LOG_TRUNCATED = Counter(
    "logadapter_records_truncated_total",
    "Lines or joined groups cut at a size limit (the cut is marked in the record).",
    ["reason"],
    registry=REGISTRY,
)
LOG_INPUT_ERRORS = Counter(
    "logadapter_input_errors_total",
    "Bad input by input and kind (corrupt msgpack, bad frame, invalid UTF-8...).",
    ["input", "kind"],
    registry=REGISTRY,
)
LOG_RECORDS_BY_LEVEL = Counter(
    "logadapter_log_records_total",
    "Records by service and level (at most 100 services; the rest are counted as other).",
    ["service", "level"],
    registry=REGISTRY,
)
LOG_HTTP_RESPONSES = Counter(
    "logadapter_http_responses_total",
    "Access-log records by service and status class (1xx-5xx, other).",
    ["service", "status_class"],
    registry=REGISTRY,
)
LOG_CLOUDWATCH_RESTAMPED = Counter(
    "logadapter_cloudwatch_events_restamped_total",
    "CloudWatch events sent with the time of sending: their own was too old or too far ahead.",
    ["reason"],
    registry=REGISTRY,
)
LOG_MULTILINE_GROUPS = Counter(
    "logadapter_multiline_groups_total",
    "Multi-line groups joined into one record (stack traces, continuations).",
    registry=REGISTRY,
)
