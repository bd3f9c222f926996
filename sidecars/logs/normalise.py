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

The sidecars' own events are recognised by the keys they all start with
(``timestamp, level, sidecar, logger, event``): the sidecar is the service, and a proxy's
access line (``event: access``) fills the ``http`` block as a web server's access line does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

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


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


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
        # A Forward record's keys may be other than strings: ``name`` is Any, not the str
        # ``field`` above (the compiled build checks the types).
        rest: dict[Any, Any] = {}
        name: Any
        for name, item in value.items():
            if name in ("type", "name", "kind") and isinstance(item, str):
                error.setdefault("type", item)
            elif name == "message" and isinstance(item, str):
                error.setdefault("message", item)
            elif name in ("stack", "stack_trace", "stacktrace") and isinstance(item, str):
                error.setdefault("stack_trace", item)
            else:
                rest[name] = item
        if rest:
            attributes[key] = rest
        return True
    if not error:
        del record["error"]
    return False


class Plan(NamedTuple):
    """How the aliased keys of one key set map to the record (``_plan``)."""

    aliases: list[tuple[str, int]]
    """The aliased keys with their targets, in alias-table order."""
    keys: tuple[str, ...]
    """The aliased keys alone."""
    simple: tuple[str | None, ...] | None
    """When each target has at most one key, and every target is one of message, level,
    time, logger, trace id, span id and service: the key of each, in that order (None for
    a target the key set lacks). None otherwise, and for a sidecar's event."""
    sidecar_event: bool
    """The key set starts as every event of a sidecar does (``SIDECAR_EVENT_KEYS``)."""


SIDECAR_EVENT_KEYS = ("timestamp", "level", "sidecar", "logger", "event")
"""The keys every JSON event of a sidecar starts with, in this order (its access lines too)."""
_ACCESS_HTTP_KEYS = ("bytes", "remote_addr", "user_agent", "duration")


_SIMPLE_TARGETS = (_MESSAGE, _LEVEL, _TIME, _LOGGER, _TRACE, _SPAN, _SERVICE)
_plans: dict[tuple[Any, ...], Plan] = {}


def _plan(keys: tuple[Any, ...]) -> Plan:
    """The plan of a key set (``message`` beats ``msg`` whatever the line's key order).
    Cached: one application writes the same keys on every line. (A Forward event's keys may
    be other than strings: they are never aliases.)"""
    plan = _plans.get(keys)
    if plan is None:
        if len(_plans) >= 2048:
            _plans.clear()
        aliases = sorted(
            ((key, ALIASES[key]) for key in keys if key in ALIASES), key=lambda item: _RANK[item[0]]
        )
        targets = [target for _, target in aliases]
        simple = None
        sidecar_event = keys[: len(SIDECAR_EVENT_KEYS)] == SIDECAR_EVENT_KEYS
        if (
            len(set(targets)) == len(targets)
            and set(targets) <= set(_SIMPLE_TARGETS)
            and not sidecar_event
        ):
            by_target = {target: key for key, target in aliases}
            if by_target.get(_MESSAGE) != "log":  # ``log`` may be an ECS object
                simple = tuple(by_target.get(target) for target in _SIMPLE_TARGETS)
        keys_aliased = tuple(key for key, _ in aliases)
        plan = _plans[keys] = Plan(aliases, keys_aliased, simple, sidecar_event)
    return plan


def from_mapping(data: dict[str, Any], *, owned: bool = False) -> Record:
    """The record fields of one structured line or event (see the module docstring).
    ``owned``: ``data`` was decoded for this call and may be reused as ``attributes``.

    This runs for every JSON line, so the usual key sets (one key per target, the common
    targets: ``Plan.simple``) take a path with no loop and the usual value types inline;
    any other value goes through ``_apply`` like every key of the other key sets.
    """
    attributes = data if owned else dict(data)
    keys: tuple[Any, ...] = tuple(data)  # a Forward event's keys may be other than strings
    plan = _plans.get(keys)
    if plan is None:
        plan = _plan(keys)
    record: Record = {}
    simple = plan.simple
    if simple is None:
        for key, target in plan.aliases:
            _apply(record, attributes, key, target, attributes.pop(key))
        if plan.sidecar_event:
            _sidecar_event(record, attributes)
    else:
        message_key, level_key, time_key, logger_key, trace_key, span_key, service_key = simple
        if message_key is not None:
            value = attributes.pop(message_key)
            if value.__class__ is str:
                record["message"] = value
            else:
                _apply(record, attributes, message_key, _MESSAGE, value)
        if level_key is not None:
            value = attributes.pop(level_key)
            level = _usual_level(value)
            if level is None:
                _apply(record, attributes, level_key, _LEVEL, value)
            else:
                record["level"] = level
        if time_key is not None:
            value = attributes.pop(time_key)
            stamp = _time_of(value)
            if stamp is None:
                _apply(record, attributes, time_key, _TIME, value)
            else:
                record["timestamp"] = stamp
        if logger_key is not None:
            value = attributes.pop(logger_key)
            if value.__class__ is str:
                record["logger"] = value
            else:
                attributes[logger_key] = value
        if trace_key is not None:
            value = attributes.pop(trace_key)
            if value.__class__ is str and value:
                record["trace_id"] = value
            else:
                _apply(record, attributes, trace_key, _TRACE, value)
        if span_key is not None:
            value = attributes.pop(span_key)
            if value.__class__ is str and value:
                record["span_id"] = value
            else:
                _apply(record, attributes, span_key, _SPAN, value)
        if service_key is not None:
            value = attributes.pop(service_key)
            if value.__class__ is str and value[:1].isalpha():
                record["service"] = value
            else:
                _apply(record, attributes, service_key, _SERVICE, value)
    if attributes:
        record["attributes"] = attributes
    return record


def schema_record(
    data: dict[str, Any],
    service: str | None,
    default_time: str | None,
    head: Record | None = None,
) -> Record | None:
    """The whole output record of one JSON (or logfmt) line, in schema order, built at once
    (no fields dict merged into defaults), when its key set is simple (``Plan.simple``) and
    its values are the usual ones: text message, logger, ids and service name, a level word
    or number, a timestamp that reads. None otherwise, with ``data`` as it was:
    ``from_mapping`` then.

    ``service``: the one configured or known from the container (None: the line's, else
    ``unknown``); ``default_time``: the timestamp of a line without one (None: left for the
    caller); ``head``: fields that follow ``service`` (stream, container). ``data`` (the
    decoded line) becomes ``attributes``."""
    keys: tuple[Any, ...] = tuple(data)  # a Forward event's keys may be other than strings
    plan = _plans.get(keys)
    if plan is None:
        plan = _plan(keys)
    simple = plan.simple
    if simple is None:
        return None
    message_key, level_key, time_key, logger_key, trace_key, span_key, service_key = simple
    pop = data.pop
    message = pop(message_key) if message_key is not None else ""
    raw_level: Any = pop(level_key) if level_key is not None else "info"
    raw_time: Any = pop(time_key) if time_key is not None else default_time
    logger = pop(logger_key) if logger_key is not None else None
    trace = pop(trace_key) if trace_key is not None else None
    span = pop(span_key) if span_key is not None else None
    hint = pop(service_key) if service_key is not None else None
    level = _usual_level(raw_level) if level_key is not None else "info"
    stamp = _time_of(raw_time) if time_key is not None else default_time
    if (
        message.__class__ is not str
        or level is None
        or (time_key is not None and stamp is None)
        or (logger_key is not None and logger.__class__ is not str)
        or (trace_key is not None and (trace.__class__ is not str or not trace))
        or (span_key is not None and (span.__class__ is not str or not span))
        or (service_key is not None and (hint.__class__ is not str or not hint[:1].isalpha()))
    ):
        taken = (message, raw_level, raw_time, logger, trace, span, hint)
        pairs = zip(simple, taken, strict=True)
        _restore(data, keys, {key: value for key, value in pairs if key is not None})
        return None
    service = service or hint or "unknown"
    record: Record = {"timestamp": stamp, "level": level, "message": message, "service": service}
    if head:
        record.update(head)
    if logger_key is not None:
        record["logger"] = logger
    if trace_key is not None:
        record["trace_id"] = trace
    if span_key is not None:
        record["span_id"] = span
    if hint is not None and hint != service:
        data.setdefault("service", hint)
    if data:
        record["attributes"] = data
    return record


def _usual_level(value: Any) -> str | None:
    """A level word or number as the schema's level; None for anything else (``_apply``
    then tries the rarer shapes)."""
    kind = value.__class__
    if kind is str:
        return _LEVEL_NAMES.get(value)
    return levels.from_number(value) if kind is int else None


def _time_of(value: Any) -> str | None:
    """A timestamp field's value (text, or epoch number: not a bool) as RFC 3339; None if it
    does not read as one."""
    kind = value.__class__
    if kind is str:
        return timestamps.from_text(value)
    if kind is float or kind is int:
        return timestamps.from_epoch(value)
    return None


def _restore(data: dict[str, Any], keys: tuple[Any, ...], taken: dict[str, Any]) -> None:
    """Put back the values ``schema_record`` took out, each in its place (``keys``: the
    original order, which only refilling the dict restores)."""
    rest = dict(data)
    data.clear()
    for key in keys:
        data[key] = taken[key] if key in taken else rest[key]


def _apply(record: Record, attributes: dict[str, Any], key: str, target: int, value: Any) -> None:
    """One aliased key (taken out of ``attributes``) into the record, or back into
    ``attributes`` when its value cannot be used or an earlier alias already gave the field."""
    kind = value.__class__
    if target == _MESSAGE:
        if key == "log" and isinstance(value, Mapping):
            _ecs_log(record, attributes, value)
        elif "message" in record or value is None:
            attributes[key] = value
        else:
            record["message"] = value if kind is str else _text(value)
    elif target == _LEVEL:
        level = None
        if "level" not in record:
            level = _LEVEL_NAMES.get(value) if kind is str else None
            if level is None:
                level = levels.from_value(value)
        if level is None:
            attributes[key] = value
        else:
            record["level"] = level
    elif target == _TIME:
        stamp = _time_of(value) if "timestamp" not in record else None
        if stamp is None:
            attributes[key] = value
        else:
            record["timestamp"] = stamp
    elif target == _LOGGER:
        if kind is str and "logger" not in record:
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
        elif kind is str and value[:1].isalpha() and "service" not in record:
            record["service"] = value  # a name: Heroku's service=3ms is a duration
        else:
            attributes[key] = value
    elif target in (_ERROR, _ERROR_STACK):
        if not _merge_error(record, attributes, key, value):
            attributes[key] = value
    elif target in (_ERROR_MESSAGE, _ERROR_TYPE):
        if kind is str:
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
        if kind is str:
            record[field] = value.lstrip("/") if target == _CONTAINER_NAME else value
        else:
            attributes[key] = value
    elif target == _DATADOG:
        _datadog(record, attributes, value)


def _sidecar_event(record: Record, attributes: dict[str, Any]) -> None:
    """A sidecar's own event (its aliased keys applied): the sidecar names the service; an
    access line of a proxy (``event: access``, with method, path and a status) fills ``http``
    (+ bytes, remote_addr, user_agent, duration), its message is the request line and its
    level follows the status, as for a web server's access line. The route stays in
    ``attributes`` (``upstream``), with the attempts and the request id."""
    sidecar = attributes.get("sidecar")
    if isinstance(sidecar, str) and sidecar and "service" not in record:
        record["service"] = attributes.pop("sidecar")
    method = attributes.get("method")
    path = attributes.get("path")
    status = attributes.get("status")
    if (
        record.get("message") != "access"
        or not isinstance(method, str)
        or not isinstance(path, str)
        or not isinstance(status, int)
        or isinstance(status, bool)
    ):
        return
    http: dict[str, Any] = {"method": method, "path": path, "status": status}
    del attributes["method"], attributes["path"], attributes["status"]
    for key in _ACCESS_HTTP_KEYS:
        value = attributes.pop(key, None)
        if value is not None:
            http[key] = value
    record["message"] = f"{method} {path}"
    record["level"] = "error" if status >= 500 else "warn" if status >= 400 else "info"
    record["http"] = http


def _ecs_log(record: Record, attributes: dict[str, Any], value: Mapping[Any, Any]) -> None:
    """ECS ``"log": {"level": ..., "logger": ...}`` (keys of any type, as in ``_merge_error``)."""
    rest: dict[Any, Any] = {}
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
    rest: dict[Any, Any] = {}
    for field, item in value.items():
        ident = _id(item) if field in ("trace_id", "span_id") else None
        if ident is not None and field not in record:
            record[field] = ident
        else:
            rest[field] = item
    if rest:
        attributes["dd"] = rest
