"""Records -> PutLogEvents calls, within CloudWatch Logs' limits (sans-IO).

The limits of one PutLogEvents call (CloudWatch Logs quotas):
- at most ``MAX_EVENTS`` (10,000) events and ``MAX_CALL_BYTES`` (1,048,576) bytes, each event
  counting its UTF-8 message plus ``EVENT_OVERHEAD`` (26) bytes;
- one event at most ``MAX_EVENT_BYTES`` (262,144) bytes, overhead included;
- the events in chronological order, spanning less than 24 hours;
- none older than 14 days (or the group's retention) or more than 2 hours ahead.

An event's message is its record's JSON line. A record too large for one event is split into
parts, as the processor splits an over-long line: the message cut on character boundaries,
each part a record of its own marked ``attributes.truncated=true`` and ``attributes.part="i/n"``
(after the mark a record may already carry). A record whose other fields alone are too large
is carried whole, as the text of the parts' messages. A timestamp outside what CloudWatch
accepts (with ``CLOCK_MARGIN_MS`` to spare) is replaced by the time of sending, and counted;
the record keeps its own ``timestamp`` in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sidecars.logs.pending import split_line
from sidecars.logs.sinks.otlp_mapping import time_unix_nano
from sidecars.settings import STREAM_FIELD

MAX_EVENTS = 10_000
MAX_CALL_BYTES = 1_048_576
MAX_EVENT_BYTES = 262_144
EVENT_OVERHEAD = 26
MAX_SPAN_MS = 24 * 3600 * 1000
MAX_AGE_MS = 14 * 24 * 3600 * 1000
MAX_AHEAD_MS = 2 * 3600 * 1000
CLOCK_MARGIN_MS = 10 * 60 * 1000
"""Room for the difference between this host's clock and CloudWatch's."""
MAX_STREAM_NAME = 512
MISSING_FIELD = "unknown"
_MARK_ROOM = 64
"""Bytes a part's marks may add to its JSON (``"attributes":{"truncated":true,"part":...}``)."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    timestamp: int
    """Milliseconds since the epoch."""
    message: str
    size: int
    """UTF-8 bytes of the message plus the per-event overhead."""


def field_value(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def stream_name(template: str, record: dict[str, Any]) -> str:
    """The template with each ``{field}`` replaced by the record's value (``unknown`` when it
    has none); ``:`` and ``*``, which stream names may not hold, become ``_``."""

    def value(match: Any) -> str:
        found = field_value(record, match.group(1))
        text = MISSING_FIELD if found is None or found == "" else str(found)
        return text.lstrip("/") if match.group(1) == "container_name" else text

    name = STREAM_FIELD.sub(value, template).replace(":", "_").replace("*", "_")
    return name[:MAX_STREAM_NAME] or MISSING_FIELD


def _encoded(record: dict[str, Any]) -> str:
    return orjson.dumps(record, default=str).decode()


def _event(timestamp: int, message: str) -> LogEvent:
    return LogEvent(timestamp, message, len(message.encode("utf-8", "replace")) + EVENT_OVERHEAD)


def split_record(record: dict[str, Any], line: str, timestamp: int) -> list[LogEvent]:
    """Events of at most ``MAX_EVENT_BYTES`` each carrying a part of an oversize record."""
    message = record.get("message")
    base = {**record, "message": ""}
    if not isinstance(message, str) or len(_encoded(base)) + _MARK_ROOM > MAX_EVENT_BYTES // 2:
        # The other fields are the bulk: carry the whole line as the parts' text.
        base = {key: record[key] for key in ("timestamp", "level", "service") if key in record}
        base["message"] = ""
        message = line
    attributes = base.get("attributes")
    attributes = dict(attributes) if isinstance(attributes, dict) else {}
    earlier_part = attributes.get("part")
    budget = MAX_EVENT_BYTES - EVENT_OVERHEAD - len(_encoded(base)) - _MARK_ROOM
    while True:
        pieces = split_line(message, budget)
        events: list[LogEvent] = []
        for number, piece in enumerate(pieces, 1):
            part = f"{number}/{len(pieces)}"
            marks = {
                **attributes,
                "truncated": True,
                "part": f"{earlier_part} {part}" if earlier_part else part,
            }
            part_record = {**base, "message": piece, "attributes": marks}
            events.append(_event(timestamp, _encoded(part_record)))
        if all(event.size <= MAX_EVENT_BYTES for event in events):
            return events
        budget //= 2  # JSON escapes made the pieces grow: cut smaller


def events_of(
    record: dict[str, Any], line: str, now_ms: int, max_age_ms: int
) -> tuple[list[LogEvent], str | None]:
    """The record's event(s), and why its timestamp was replaced (``too_old``, ``too_new``)."""
    timestamp = time_unix_nano(record.get("timestamp"), now_ms * 1_000_000) // 1_000_000
    restamped: str | None = None
    if timestamp < now_ms - max_age_ms + CLOCK_MARGIN_MS:
        timestamp, restamped = now_ms, "too_old"
    elif timestamp > now_ms + MAX_AHEAD_MS - CLOCK_MARGIN_MS:
        timestamp, restamped = now_ms, "too_new"
    event = _event(timestamp, line)
    if event.size <= MAX_EVENT_BYTES:
        return [event], restamped
    return split_record(record, line, timestamp), restamped


def plan_calls(events: list[LogEvent]) -> list[list[LogEvent]]:
    """One stream's events sorted by time (stable) and cut into calls within the limits."""
    calls: list[list[LogEvent]] = []
    current: list[LogEvent] = []
    size = 0
    first = 0
    for event in sorted(events, key=lambda event: event.timestamp):
        if current and (
            len(current) >= MAX_EVENTS
            or size + event.size > MAX_CALL_BYTES
            or event.timestamp - first >= MAX_SPAN_MS
        ):
            calls.append(current)
            current, size = [], 0
        if not current:
            first = event.timestamp
        current.append(event)
        size += event.size
    if current:
        calls.append(current)
    return calls


def rejected_counts(info: dict[str, Any], count: int) -> dict[str, int]:
    """``rejectedLogEventsInfo`` of a PutLogEvents answer -> events refused, by reason."""
    counts: dict[str, int] = {}
    too_new = info.get("tooNewLogEventStartIndex")
    if isinstance(too_new, int):
        counts["cloudwatch_too_new"] = max(count - too_new, 0)
    too_old = info.get("tooOldLogEventEndIndex")
    expired = info.get("expiredLogEventEndIndex")
    if isinstance(too_old, int):
        counts["cloudwatch_too_old"] = too_old + 1
    if isinstance(expired, int):  # the same first events may be both: count them once
        counts["cloudwatch_expired"] = max(expired + 1 - counts.get("cloudwatch_too_old", 0), 0)
    return {reason: number for reason, number in counts.items() if number}
