"""Our log record -> the OpenTelemetry log data model, once, for both OTLP encodings.

- ``timestamp`` -> ``timeUnixNano``; the time the output sent it -> ``observedTimeUnixNano``.
- ``level`` -> ``severityNumber`` (the first number of each OTel range: TRACE 1, DEBUG 5,
  INFO 9, WARN 13, ERROR 17, FATAL 21) and ``severityText`` (the range's name).
- ``message`` -> ``body`` (a string).
- ``trace_id`` (32 hex digits) / ``span_id`` (16) -> ``traceId`` / ``spanId``; other shapes
  stay attributes.
- Resource: ``service`` -> ``service.name``, ``container_id`` -> ``container.id``,
  ``container_name`` -> ``container.name``, the ``ecs`` fields -> ``cloud.provider=aws``,
  ``cloud.platform=aws_ecs``, ``aws.ecs.cluster.arn``, ``aws.ecs.task.arn``,
  ``aws.ecs.task.family``, ``aws.ecs.task.revision``.
- Scope: ``logger`` (the instrumentation scope's name; ``sidecars.log-adapter`` without one).
- Attributes (semantic conventions where one fits): ``stream`` -> ``log.iostream``;
  ``error`` -> ``exception.type`` / ``exception.message`` / ``exception.stacktrace``; ``http``
  -> ``http.request.method``, ``url.path``, ``http.response.status_code``,
  ``http.response.body.size``, ``client.address``, ``user_agent.original``; every key of
  ``attributes`` as it is; any other field under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SEVERITY: dict[str, tuple[int, str]] = {
    "trace": (1, "TRACE"),
    "debug": (5, "DEBUG"),
    "info": (9, "INFO"),
    "warn": (13, "WARN"),
    "error": (17, "ERROR"),
    "fatal": (21, "FATAL"),
}
DEFAULT_SCOPE = "sidecars.log-adapter"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdefABCDEF")
_ERROR_KEYS = {"type": "exception.type", "message": "exception.message",
               "stack_trace": "exception.stacktrace"}
_HTTP_KEYS = {
    "method": "http.request.method",
    "path": "url.path",
    "status": "http.response.status_code",
    "bytes": "http.response.body.size",
    "remote_addr": "client.address",
    "user_agent": "user_agent.original",
}
_ECS_KEYS = {
    "cluster": "aws.ecs.cluster.arn",
    "task_arn": "aws.ecs.task.arn",
    "task_family": "aws.ecs.task.family",
    "task_revision": "aws.ecs.task.revision",
}
_MAPPED = frozenset(
    {"timestamp", "level", "message", "service", "container_id", "container_name", "ecs",
     "logger", "stream", "error", "http", "trace_id", "span_id", "attributes"}
)
"""Fields with a place of their own in the OTel model (or handled below); others are
attributes under their own names."""

Resource = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class OtelLog:
    """One record in the OTel model, encoding-neutral."""

    time_unix_nano: int
    severity_number: int
    severity_text: str
    body: str
    attributes: list[tuple[str, Any]]
    trace_id: str | None
    span_id: str | None


_SECONDS: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM:SS`` -> epoch seconds: a batch's records share a few seconds."""


def time_unix_nano(timestamp: Any, fallback: int) -> int:
    """The schema's ``2026-11-26T10:00:00.123456Z`` (any RFC 3339 time) in ns since the epoch."""
    if not isinstance(timestamp, str):
        return fallback
    if len(timestamp) == 27 and timestamp[19] == "." and timestamp[26] == "Z":
        seconds = _SECONDS.get(timestamp[:19])
        fraction = timestamp[20:26]
        if seconds is not None and fraction.isdigit():
            return seconds * 1_000_000_000 + int(fraction) * 1000
    try:
        delta = datetime.fromisoformat(timestamp) - _EPOCH
    except (ValueError, TypeError):
        return fallback
    nanoseconds = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if len(timestamp) == 27 and timestamp[26] == "Z":
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[timestamp[:19]] = delta.days * 86400 + delta.seconds
    return nanoseconds


def _hex_id(value: Any, digits: int) -> str | None:
    if isinstance(value, str) and len(value) == digits and _HEX.issuperset(value):
        lowered = value.lower()
        return None if lowered == "0" * digits else lowered  # all zeros is "no id" in OTel
    return None


def resource_of(record: dict[str, Any]) -> Resource:
    pairs: list[tuple[str, str]] = [("service.name", str(record.get("service", "unknown")))]
    for field, key in (("container_id", "container.id"), ("container_name", "container.name")):
        value = record.get(field)
        if value is not None:
            pairs.append((key, str(value)))
    ecs = record.get("ecs")
    if isinstance(ecs, dict):
        pairs += (("cloud.provider", "aws"), ("cloud.platform", "aws_ecs"))
        pairs += ((key, str(ecs[field])) for field, key in _ECS_KEYS.items() if field in ecs)
    return tuple(pairs)


def scope_of(record: dict[str, Any]) -> str:
    logger = record.get("logger")
    return logger if isinstance(logger, str) and logger else DEFAULT_SCOPE


def to_otel(record: dict[str, Any], observed: int) -> OtelLog:
    number, text = SEVERITY.get(record.get("level", "info"), (9, "INFO"))
    attributes: list[tuple[str, Any]] = []
    trace_id = span_id = None
    for key, value in record.items():
        if key not in _MAPPED:
            attributes.append((key, value))
        elif key == "attributes":
            if isinstance(value, dict):
                attributes += value.items()
        elif key == "stream":
            attributes.append(("log.iostream", value))
        elif key in ("error", "http"):
            if isinstance(value, dict):
                names = _ERROR_KEYS if key == "error" else _HTTP_KEYS
                attributes += ((names.get(k, f"{key}.{k}"), v) for k, v in value.items())
        elif key == "trace_id":
            trace_id = _hex_id(value, 32)
            if trace_id is None:
                attributes.append((key, value))
        elif key == "span_id":
            span_id = _hex_id(value, 16)
            if span_id is None:
                attributes.append((key, value))
    message = record.get("message", "")
    return OtelLog(
        time_unix_nano=time_unix_nano(record.get("timestamp"), observed),
        severity_number=number,
        severity_text=text,
        body=message if isinstance(message, str) else str(message),
        attributes=attributes,
        trace_id=trace_id,
        span_id=span_id,
    )
