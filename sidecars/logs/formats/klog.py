"""klog/glog lines (Kubernetes components, Go programs using glog):
``I1126 10:00:00.123456   12345 server.go:12] message``, and klog's structured form
``... server.go:12] "Pod status updated" pod="kube-system/dns" status="ready"``.
The year is not written: it is inferred."""

from __future__ import annotations

import re
from typing import Any

import orjson

from sidecars.logs import timestamps
from sidecars.logs.formats import logfmt
from sidecars.logs.model import Record

_KLOG = re.compile(
    r"([IWEF])(\d\d)(\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) +(\d+) ([^\s:\]]+:\d+)\] ?(.*)", re.DOTALL
)
_QUOTED_HEAD = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"(?: (.*))?', re.DOTALL)
_LEVELS = {"I": "info", "W": "warn", "E": "error", "F": "fatal"}


def looks_like(text: str) -> bool:
    return text[:1] in _LEVELS and text[1:5].isdigit() and text[5:6] == " "


def parse(text: str, now: float) -> Record | None:
    match = _KLOG.fullmatch(text)
    if match is None:
        return None
    letter, month, day, clock, thread, source, message = match.groups()
    attributes: dict[str, Any] = {"thread": int(thread), "source": source}
    structured = _QUOTED_HEAD.fullmatch(message) if message[:1] == '"' else None
    if structured is not None:
        quoted, rest = structured.groups()
        try:
            message = orjson.loads(f'"{quoted}"')
        except orjson.JSONDecodeError:
            message = quoted
        if rest:
            attributes.update(logfmt.pairs(rest)[0])
    record: Record = {"level": _LEVELS[letter], "message": message, "attributes": attributes}
    stamp = timestamps.from_month_day(int(month), int(day), clock, now)
    if stamp is not None:
        record["timestamp"] = stamp
    return record
