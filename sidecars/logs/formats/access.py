"""Web server logs: Apache/nginx access lines (Common and Combined Log Format, with the
extra fields nginx configurations commonly append) and nginx error lines.

An access record's ``message`` is the request line; ``http`` holds method, path, status,
bytes, remote_addr, user_agent, and referer/duration/protocol/remote_user when present;
``level`` follows the status (5xx error, 4xx warn, else info).
"""

from __future__ import annotations

import re
from typing import Any

from sidecars.logs import levels, timestamps
from sidecars.logs.model import Record

_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_ACCESS = re.compile(
    r"(\S+) (\S+) (\S+) \[([^\]]+)\] "
    + _QUOTED
    + r" (\d{3}|-) (\d+|-)(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + r")?(.*)"
)
_EXTRA = re.compile(r'(?:([\w.]+)=)?("[^"\\]*(?:\\.[^"\\]*)*"|\S+)')
_DURATION_KEYS = {"rt", "request_time", "duration", "time"}
_CLF_TIME = re.compile(r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}:\d{2}:\d{2}(?:\.\d+)?) ?(.*)")

_NGINX_ERROR = re.compile(
    r"(\d{4})/(\d{2})/(\d{2}) (\d{2}:\d{2}:\d{2}) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?(.*)"
)
_NGINX_CONTEXT = re.compile(
    r', (client|server|request|upstream|host|referrer|subrequest): ("[^"\\]*(?:\\.[^"\\]*)*"|[^,]*)'
)


_clf_times: dict[str, str | None] = {}


def clf_time(text: str) -> str | None:
    """``26/Nov/2026:10:00:00 +0000`` -> RFC 3339 UTC (cached: access lines of one second
    share their timestamp text)."""
    if text in _clf_times:
        return _clf_times[text]
    if len(_clf_times) >= 4096:
        _clf_times.clear()
    stamp = _clf_times[text] = _parse_clf_time(text)
    return stamp


def _parse_clf_time(text: str) -> str | None:
    match = _CLF_TIME.fullmatch(text)
    if match is None:
        return None
    day, month_name, year, clock, zone = match.groups()
    month = timestamps.MONTHS.get(month_name)
    if month is None:
        return None
    return timestamps.from_iso(f"{year}-{month:02d}-{day}T{clock}{zone}")


def _extras(rest: str, http: dict[str, Any], attributes: dict[str, Any]) -> None:
    """What follows the combined format: ``"$http_x_forwarded_for"``, ``rt=0.012``, a bare
    ``$request_time`` ..."""
    for position, (key, raw) in enumerate(_EXTRA.findall(rest)):
        value = raw[1:-1] if raw[:1] == '"' and len(raw) > 1 else raw
        if key:
            if key in _DURATION_KEYS and "duration" not in http and _is_number(value):
                http["duration"] = float(value)
            else:
                attributes[key] = value
        elif position == 0 and raw[:1] == '"':
            if value != "-":
                attributes["x_forwarded_for"] = value
        elif "duration" not in http and "." in value and _is_number(value):
            http["duration"] = float(value)
        else:
            attributes.setdefault("extra", []).append(value)


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).isdigit()


# The usual line: Combined format, a request line of three parts, nothing after the user
# agent, no backslash (checked before, so that quoted parts need no escape handling), the
# request's parts as groups.
_COMBINED = re.compile(
    r'(\S+) \S+ (\S+) \[([^\]]+)\] "(([A-Z]+) ([^ "]+) ([^ "]+))" (\d{3}) (\d+|-) '
    r'"([^"]*)" "([^"]*)"'
)


def parse(text: str, now: float) -> Record | None:
    record = schema_record(text, "")
    if record is None:
        return _parse(text)
    del record["service"]
    return record


def schema_record(text: str, service: str, head: Record | None = None) -> Record | None:
    """The whole output record of the usual line (``_COMBINED``; the fields ``parse`` gives,
    with ``service`` and the ``head`` fields after it: stream, container), in schema order:
    built at once, for the processor's common case. None for any other line (``parse``
    reads it then)."""
    usual = _COMBINED.fullmatch(text) if "\\" not in text else None
    if usual is None:
        return None
    addr, user, when, request, method, path, protocol, status_text, size, referer, agent = (
        usual.groups()
    )
    stamp = _clf_times.get(when) or clf_time(when)
    if stamp is None:
        return None
    status = int(status_text)
    http: dict[str, Any] = {
        "method": method,
        "path": path,
        "protocol": protocol,
        "status": status,
        "bytes": int(size) if size != "-" else 0,
        "remote_addr": addr,
        "user_agent": agent,
    }
    if referer != "-":
        http["referer"] = referer
    if user != "-":
        http["remote_user"] = user
    record: Record = {
        "timestamp": stamp,
        "level": "error" if status >= 500 else "warn" if status >= 400 else "info",
        "message": request,
        "service": service,
    }
    if head:
        record.update(head)
    record["http"] = http
    return record


def _parse(text: str) -> Record | None:
    match = _ACCESS.fullmatch(text)
    if match is None:
        return None
    addr, _ident, user, when, request, status_text, size, referer, agent, rest = match.groups()
    method, _, target = request.partition(" ")
    path, _, protocol = target.rpartition(" ") if " " in target else (target, "", "")
    http: dict[str, Any] = {}
    if path and method.isalpha() and method.isupper():
        http["method"] = method
        http["path"] = path
        if protocol:
            http["protocol"] = protocol
    else:  # a probe or garbage instead of a request line ("-", TLS bytes...)
        http["path"] = request
    status = int(status_text) if status_text != "-" else 0
    http["status"] = status
    http["bytes"] = int(size) if size != "-" else 0
    http["remote_addr"] = addr
    if agent is not None:
        http["user_agent"] = agent
    if referer and referer != "-":
        http["referer"] = referer
    if user != "-":
        http["remote_user"] = user
    record: Record = {
        "level": "error" if status >= 500 else "warn" if status >= 400 else "info",
        "message": request,
        "http": http,
    }
    stamp = clf_time(when)
    if stamp is not None:
        record["timestamp"] = stamp
    if rest.strip():
        attributes: dict[str, Any] = {}
        _extras(rest, http, attributes)
        if attributes:
            record["attributes"] = attributes
    if stamp is None:
        record.setdefault("attributes", {})["time"] = when
    return record


def parse_nginx_error(text: str, now: float) -> Record | None:
    """``2026/11/26 10:00:00 [error] 12#12: *1 open() "/x" failed (2: ...), client: ...``."""
    match = _NGINX_ERROR.fullmatch(text)
    if match is None:
        return None
    year, month, day, clock, level, pid, tid, connection, message = match.groups()
    attributes: dict[str, Any] = {"pid": int(pid), "tid": int(tid)}
    if connection is not None:
        attributes["connection"] = int(connection)
    cut = message.find(", client: ")
    if cut >= 0:
        for key, raw in _NGINX_CONTEXT.findall(message[cut:]):
            attributes[key] = raw[1:-1] if raw[:1] == '"' else raw
        message = message[:cut]
    record: Record = {
        "level": levels.from_name(level) or "info",
        "message": message,
        "attributes": attributes,
    }
    stamp = timestamps.from_iso(f"{year}-{month}-{day}T{clock}")
    if stamp is not None:
        record["timestamp"] = stamp
    return record
