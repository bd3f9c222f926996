"""``LOGADAPTER_FORMAT=regex:<pattern>``: a user pattern with named groups.

Groups named like schema fields map to them (``timestamp``/``time``, ``level``,
``message``/``msg``, ``logger``, ``service``, ``trace_id``, ``span_id``, and the ``http``
fields ``method``, ``path``, ``status``, ``bytes``, ``remote_addr``, ``user_agent``,
``referer``, ``duration``); every other group goes to ``attributes``. Groups that did not
take part in the match are left out. The pattern is searched anywhere in the line.
"""

from __future__ import annotations

import re
from typing import Any

from sidecars.logs import normalise
from sidecars.logs.formats import Parser, access
from sidecars.logs.model import Record

_HTTP_INTEGERS = {"status", "bytes"}
_HTTP_FIELDS = {"method", "path", "remote_addr", "user_agent", "referer", "duration",
                *_HTTP_INTEGERS}


def _http_value(name: str, value: str) -> Any:
    if name in _HTTP_INTEGERS and value.isdigit():
        return int(value)
    if name == "duration" and value.replace(".", "", 1).isdigit():
        return float(value)
    return value


def compile_parser(pattern: str) -> Parser:
    """A parser for ``pattern`` (already validated by the settings)."""
    compiled = re.compile(pattern)

    def parse(text: str, now: float) -> Record | None:
        match = compiled.search(text)
        if match is None:
            return None
        fields: dict[str, Any] = {}
        http: dict[str, Any] = {}
        for name, value in match.groupdict().items():
            if value is None:
                continue
            if name in _HTTP_FIELDS:
                http[name] = _http_value(name, value)
            else:
                fields[name] = value
        clf_stamp = None
        when = fields.get("timestamp") or fields.get("time")
        if isinstance(when, str) and "/" in when:
            clf_stamp = access.clf_time(when)
        record = normalise.from_mapping(fields)
        if clf_stamp is not None:
            record["timestamp"] = clf_stamp
            attributes = record.get("attributes", {})
            attributes.pop("timestamp", None)
            attributes.pop("time", None)
            if not attributes:
                record.pop("attributes", None)
        if http:
            record["http"] = http
        record.setdefault("message", text)
        return record

    return parse
