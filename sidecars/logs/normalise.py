"""Structured data (a JSON object, logfmt pairs, regex groups, a Forward event) -> the fields
of a record.

Keys are looked up in ``ALIASES`` (``msg``/``message``/``event``,
``level``/``severity``/``lvl``/``levelname``, ``time``/``ts``/``timestamp``/``@timestamp``,
trace and span ids of OpenTelemetry, Datadog, ECS and W3C ``traceparent``, error objects of
pino/bunyan/ECS and traceback strings of structlog/python-json-logger...). When a line has
two keys for one field, the one listed first in ``ALIASES`` wins (``message`` over ``msg``);
any key that is not mapped, or whose value cannot be used (a level word nobody knows, a
timestamp that does not parse), is kept under ``attributes`` unchanged.

An application writes the same keys on every line, so which of them are aliases, and in
which order they apply, is worked out once per key set (``_plan``); a line then costs one
pass over its aliased keys, and the object itself becomes ``attributes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sidecars.logs import levels, stacktrace, timestamps
from sidecars.logs.model import Record

# Target fields. Small ints keep the per-key dispatch a chain of int comparisons.
_MESSAGE, _LEVEL, _TIME, _LOGGER, _TRACE, _SPAN, _SERVICE = 1, 2, 3, 4, 5, 6, 7
_ERROR, _ERROR_STACK, _ERROR_MESSAGE, _ERROR_TYPE, _TRACEPARENT = 8, 9, 10, 11, 12
_SEVERITY_NUMBER, _CONTAINER_ID, _CONTAINER_NAME, _DATADOG = 13, 14, 15, 16

ALIASES: dict[str, int] = {
    "message": _MESSAGE, "msg": _MESSAGE, "event": _MESSAGE, "@message": _MESSAGE,
    "log": _MESSAGE, "Body": _MESSAGE, "body": _MESSAGE,
    "level": _LEVEL, "severity": _LEVEL, "lvl": _LEVEL, "levelname": _LEVEL,
    "log.level": _LEVEL, "loglevel": _LEVEL, "log_level": _LEVEL, "severity_text": _LEVEL,
    "SeverityText": _LEVEL, "@level": _LEVEL, "at": _LEVEL,
    "severity_number": _SEVERITY_NUMBER, "SeverityNumber": _SEVERITY_NUMBER,
    "time": _TIME, "ts": _TIME, "timestamp": _TIME, "@timestamp": _TIME, "asctime": _TIME,
    "Timestamp": _TIME, "datetime": _TIME, "@t": _TIME, "t": _TIME,
    "logger": _LOGGER, "logger_name": _LOGGER, "loggerName": _LOGGER, "log.logger": _LOGGER,
    "trace_id": _TRACE, "traceId": _TRACE, "trace.id": _TRACE, "dd.trace_id": _TRACE,
    "otelTraceID": _TRACE, "traceid": _TRACE, "TraceId": _TRACE, "trace": _TRACE,
    "span_id": _SPAN, "spanId": _SPAN, "span.id": _SPAN, "dd.span_id": _SPAN,
    "otelSpanID": _SPAN, "spanid": _SPAN, "SpanId": _SPAN, "span": _SPAN,
    "traceparent": _TRACEPARENT,
    "service": _SERVICE, "service.name": _SERVICE, "service_name": _SERVICE,
    "error": _ERROR, "err": _ERROR,
    "exception": _ERROR_STACK, "exc_info": _ERROR_STACK, "stack_trace": _ERROR_STACK,
    "stacktrace": _ERROR_STACK, "stack": _ERROR_STACK, "error.stack_trace": _ERROR_STACK,
    "error.message": _ERROR_MESSAGE, "error.type": _ERROR_TYPE,
    "container_id": _CONTAINER_ID, "container_name": _CONTAINER_NAME,
    "dd": _DATADOG,
}
"""Key -> target. ``log`` is a message (FireLens/Docker records) unless it is an ECS object;
``at`` is Heroku's level key, ``t`` log15's time key (used only when the value is one)."""

_RANK = {key: rank for rank, key in enumerate(ALIASES)}
# Module-level names: from_mapping runs for every JSON line.
_LEVEL_NAMES = levels.TABLE
_from_iso = timestamps.from_iso
_from_epoch = timestamps.from_epoch


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _id(value: Any) -> str | None:
    """A trace or span id as text (Datadog writes decimal integers); None if unusable."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def traceparent_ids(value: Any) -> tuple[str, str] | None:
    """W3C ``traceparent`` ``00-<32 hex trace id>-<16 hex span id>-<flags>`` -> ids."""
    if isinstance(value, str) and len(value) == 55 and value[2] == "-" and value[35] == "-":
        return value[3:35], value[36:52]
    return None


def _merge_error(record: Record, attributes: dict[str, Any], key: str, value: Any) -> bool:
    """An error object or text under ``err``/``error``: True when it was used."""
    error: dict[str, Any] = record.setdefault("error", {})
    if isinstance(value, str):
        if "\n" in value:
            described = stacktrace.describe(value)
            for field, text in described.items():
                error.setdefault(field, text)
        else:
            error.setdefault("message", value)
        return True
    if isinstance(value, Mapping):
        rest: dict[str, Any] = {}
        for field, item in value.items():
            if field in ("type", "name", "kind") and isinstance(item, str):
                error.setdefault("type", item)
            elif field == "message" and isinstance(item, str):
                error.setdefault("message", item)
            elif field in ("stack", "stack_trace", "stacktrace") and isinstance(item, str):
                error.setdefault("stack_trace", item)
            else:
                rest[field] = item
        if rest:
            attributes[key] = rest
        return True
    if not error:
        del record["error"]
    return False


_plans: dict[tuple[str, ...], list[tuple[str, int]]] = {}


def _plan(keys: tuple[str, ...]) -> list[tuple[str, int]]:
    """The aliased keys of a key set, in alias-table order (so ``message`` beats ``msg``
    whatever the line's key order). Cached: one application writes the same keys."""
    plan = _plans.get(keys)
    if plan is None:
        if len(_plans) >= 2048:
            _plans.clear()
        plan = _plans[keys] = sorted(
            ((key, ALIASES[key]) for key in keys if key in ALIASES), key=lambda item: _RANK[item[0]]
        )
    return plan


def from_mapping(data: dict[str, Any], *, owned: bool = False) -> Record:
    """The record fields of one structured line or event (see the module docstring).
    ``owned``: ``data`` was decoded for this call and may be reused as ``attributes``."""
    record: Record = {}
    attributes = data if owned else dict(data)
    for key, target in _plan(tuple(data)):
        value = attributes.pop(key)
        if target == _MESSAGE:
            if key == "log" and isinstance(value, Mapping):
                _ecs_log(record, attributes, value)
            elif "message" in record or value is None:
                attributes[key] = value
            else:
                record["message"] = value if value.__class__ is str else _text(value)
        elif target == _LEVEL:
            level = None
            if "level" not in record:
                level = _LEVEL_NAMES.get(value) if value.__class__ is str else None
                if level is None:
                    level = levels.from_value(value)
            if level is None:
                attributes[key] = value
            else:
                record["level"] = level
        elif target == _TIME:
            stamp = None
            if "timestamp" not in record:
                kind = value.__class__
                if kind is str:
                    stamp = _from_iso(value) if value[4:5] == "-" else timestamps.from_text(value)
                elif kind is int or kind is float:
                    stamp = _from_epoch(value)
            if stamp is None:
                attributes[key] = value
            else:
                record["timestamp"] = stamp
        elif target == _LOGGER:
            if isinstance(value, str) and "logger" not in record:
                record["logger"] = value
            else:
                attributes[key] = value
        elif target in (_TRACE, _SPAN):
            field = "trace_id" if target == _TRACE else "span_id"
            if isinstance(value, Mapping) and field not in record and "id" in value:
                ident = _id(value["id"])
                rest = {k: v for k, v in value.items() if k != "id"}
                if rest:
                    attributes[key] = rest
            else:
                ident = None if field in record else _id(value)
                if ident is None:
                    attributes[key] = value
            if ident is not None:
                record[field] = ident
        elif target == _TRACEPARENT:
            ids = traceparent_ids(value)
            if ids is None:
                attributes[key] = value
            else:
                record.setdefault("trace_id", ids[0])
                record.setdefault("span_id", ids[1])
        elif target == _SERVICE:
            if isinstance(value, Mapping) and isinstance(value.get("name"), str):
                record.setdefault("service", value["name"])
                rest = {k: v for k, v in value.items() if k != "name"}
                if rest:
                    attributes[key] = rest
            elif isinstance(value, str) and value[:1].isalpha() and "service" not in record:
                record["service"] = value  # a name: Heroku's service=3ms is a duration
            else:
                attributes[key] = value
        elif target in (_ERROR, _ERROR_STACK):
            if not _merge_error(record, attributes, key, value):
                attributes[key] = value
        elif target in (_ERROR_MESSAGE, _ERROR_TYPE):
            if isinstance(value, str):
                field = "message" if target == _ERROR_MESSAGE else "type"
                record.setdefault("error", {}).setdefault(field, value)
            else:
                attributes[key] = value
        elif target == _SEVERITY_NUMBER:
            level = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                level = levels.from_severity_number(value)
            if level is None or "level" in record:
                attributes[key] = value
            else:
                record["level"] = level
        elif target in (_CONTAINER_ID, _CONTAINER_NAME):
            field = "container_id" if target == _CONTAINER_ID else "container_name"
            if isinstance(value, str):
                record[field] = value.lstrip("/") if target == _CONTAINER_NAME else value
            else:
                attributes[key] = value
        elif target == _DATADOG:
            _datadog(record, attributes, value)
    if attributes:
        record["attributes"] = attributes
    return record


def _ecs_log(record: Record, attributes: dict[str, Any], value: Mapping[str, Any]) -> None:
    """ECS ``"log": {"level": ..., "logger": ...}``."""
    rest: dict[str, Any] = {}
    for field, item in value.items():
        if field == "level" and "level" not in record and levels.from_value(item):
            record["level"] = levels.from_value(item)
        elif field == "logger" and isinstance(item, str) and "logger" not in record:
            record["logger"] = item
        else:
            rest[field] = item
    if rest:
        attributes["log"] = rest


def _datadog(record: Record, attributes: dict[str, Any], value: Any) -> None:
    """Datadog ``"dd": {"trace_id": ..., "span_id": ..., "service": ...}``."""
    if not isinstance(value, Mapping):
        attributes["dd"] = value
        return
    rest: dict[str, Any] = {}
    for field, item in value.items():
        ident = _id(item) if field in ("trace_id", "span_id") else None
        if ident is not None and field not in record:
            record[field] = ident
        else:
            rest[field] = item
    if rest:
        attributes["dd"] = rest
