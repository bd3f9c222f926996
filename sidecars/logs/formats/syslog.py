"""Syslog messages: RFC 5424 and RFC 3164 (BSD), with or without the ``<PRI>`` (files such as
/var/log/syslog have none). The framing (UDP datagram, octet counting, newlines) is the
input's job; this parses one message.

``level`` comes from the severity; facility, hostname, app name, process id, message id and
RFC 5424 structured data go under ``attributes.syslog``; the app name is the line's service.
A message that is itself a JSON object is merged in as structured data.
"""

from __future__ import annotations

import re
from typing import Any

from sidecars.logs import levels, normalise, timestamps
from sidecars.logs.formats import json
from sidecars.logs.model import Record

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(
    r"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) "
    r'(-|(?:\[(?:[^\]"\\]|\\.|"[^"\\]*(?:\\.[^"\\]*)*")*\])+)(?: (.*))?',
    re.DOTALL,
)
_SD_ELEMENT = re.compile(r'\[([^\s\]]+)((?: [^\s=\]]+="[^"\\]*(?:\\.[^"\\]*)*")*)\]')
_SD_PARAM = re.compile(r'([^\s=\]]+)="([^"\\]*(?:\\.[^"\\]*)*)"')
_BSD_TIME = r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d:\d\d:\d\d(?:\.\d+)?)"
_ISO_TIME = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
_RFC3164 = re.compile(
    rf"(?:{_BSD_TIME}|{_ISO_TIME}) (?:([^\s\[:]+) )?([^\s\[:]+)(?:\[([^\]]*)\])?: ?(.*)",
    re.DOTALL,
)
_RFC3164_NO_TAG = re.compile(rf"(?:{_BSD_TIME}|{_ISO_TIME}) (\S+) (.*)", re.DOTALL)


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _unescape(value: str) -> str:
    return re.sub(r'\\(["\\\]])', r"\1", value) if "\\" in value else value


def structured_data(text: str) -> dict[str, dict[str, str]]:
    """``[id@1 a="1" b="2"][other]`` -> ``{"id@1": {"a": "1", "b": "2"}, "other": {}}``."""
    return {
        element: {key: _unescape(value) for key, value in _SD_PARAM.findall(params)}
        for element, params in _SD_ELEMENT.findall(text)
    }


def _finish(record: Record, meta: dict[str, Any], message: str, app: str | None) -> Record:
    if message.startswith("\ufeff"):
        message = message[1:]
    message = message.rstrip("\r\n")
    payload = json.load_object(message) if message[:1] == "{" else None
    if payload is not None:
        fields = normalise.from_mapping(payload)
        record.update(fields)
        record.setdefault("message", "")
    else:
        record["message"] = message
    if app and "service" not in record:
        record["service"] = app
    attributes = record.setdefault("attributes", {})
    attributes["syslog"] = meta
    return record


def parse(text: str, now: float) -> Record | None:
    meta: dict[str, Any] = {}
    record: Record = {}
    body = text
    pri = _PRI.match(text)
    if pri is not None:
        value = int(pri.group(1))
        if value > 191:
            return None
        severity = value & 7
        meta["facility"] = FACILITIES[value >> 3]
        meta["severity"] = SEVERITY_NAMES[severity]
        record["level"] = levels.SYSLOG_SEVERITIES[severity]
        body = text[pri.end() :]
        match = _RFC5424.fullmatch(body)
        if match is not None:
            _version, when, host, app, proc, msgid, data, message = match.groups()
            stamp = timestamps.from_iso(when) if when != "-" else None
            if stamp is not None:
                record["timestamp"] = stamp
            for key, value_text in (("hostname", host), ("appname", app), ("procid", proc),
                                    ("msgid", msgid)):
                if value_text != "-":
                    meta[key] = value_text
            if data != "-":
                meta["structured_data"] = structured_data(data)
            return _finish(record, meta, message or "", _nil(app))
    match = _RFC3164.fullmatch(body)
    if match is not None:
        month, day, clock, iso, host, tag, pid, message = match.groups()
    else:
        match = _RFC3164_NO_TAG.fullmatch(body)
        if match is None:
            return None
        month, day, clock, iso, host, message = match.groups()
        tag = pid = None
    if iso is not None:
        stamp = timestamps.from_iso(iso)
    else:
        month_number = timestamps.MONTHS.get(month)
        if month_number is None:
            return None
        stamp = timestamps.from_month_day(month_number, int(day), clock, now)
    if stamp is not None:
        record["timestamp"] = stamp
    if host is not None:
        meta["hostname"] = host
    if tag is not None:
        meta["appname"] = tag
    if pid is not None:
        meta["procid"] = pid
    return _finish(record, meta, message, tag)
