"""Which format a line is in, and its record fields.

``auto`` dispatches on the first character, so a line costs one or two parse attempts:
``{`` JSON, ``<`` syslog with PRI, a digit a timestamp-led text line, an nginx error line,
Go ``log`` or an access line from an IP address, ``[`` a bracketed timestamp or level,
``I1126 `` klog, ``key=`` logfmt, ``Nov 26 `` syslog without PRI; anything else is text
with level words. A forced format (``json``, ``logfmt``, ``clf``, ``syslog``, ``raw``,
``regex:...``) parses only that format; a line that does not fit it becomes a plain text
record counted under the format ``unparsed``.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecars.logs import timestamps
from sidecars.logs.formats import Parser, access, json, klog, logfmt, regex, syslog, text
from sidecars.logs.model import Record

LineParser = Callable[[str, float], tuple[str, Record]]
"""``(text, now) -> (format name, record fields)``: always answers."""


def _looks_like_access(line: str) -> bool:
    return line.find(" [", 0, 80) > 0 and '] "' in line


def detect(line: str, now: float) -> tuple[str, Record]:
    """Auto-detect the format of ``line`` and parse it."""
    first = line[:1]
    record: Record | None = None
    if first == "{":
        record = json.parse(line, now)
        if record is not None:
            record.setdefault("message", "")
            return "json", record
    elif first.isdigit():
        if line[4:5] == "/":
            if line[19:21] == " [":
                record = access.parse_nginx_error(line, now)
                if record is not None:
                    return "nginx_error", record
            record = text.parse_go(line, now)
        elif line[4:5] == "-" or line[2:3] == ":":
            record = text.parse_stamped(line, now)
        elif _looks_like_access(line):
            record = access.parse(line, now)
            if record is not None:
                return "clf", record
    elif first == "<":
        record = syslog.parse(line, now)
        if record is not None:
            return "syslog", record
    elif first == "[":
        record = text.parse_stamped(line, now)
    elif klog.looks_like(line):
        record = klog.parse(line, now)
        if record is not None:
            return "klog", record
    elif line[1:4] == ", [":
        record = text.parse_ruby(line, now)
    elif _looks_like_access(line):
        record = access.parse(line, now)
        if record is not None:
            return "clf", record
    elif logfmt.looks_like(line):
        record = logfmt.parse(line, now)
        if record is not None:
            return "logfmt", record
    elif line[:3] in timestamps.MONTHS and line[3:4] == " ":
        record = syslog.parse(line, now)
        if record is not None:
            return "syslog", record
    elif first.isupper():
        record = text.parse_python_basic(line, now)
    if record is None:
        record = text.parse_plain(line, now)
    return "text", record


def _forced(name: str, *parsers: Parser) -> LineParser:
    def parse(line: str, now: float) -> tuple[str, Record]:
        for parser in parsers:
            record = parser(line, now)
            if record is not None:
                record.setdefault("message", "")
                return name, record
        return "unparsed", text.parse_plain(line, now)

    return parse


def _raw(line: str, now: float) -> tuple[str, Record]:
    return "raw", {"message": line}


def line_parser(log_format: str) -> LineParser:
    """The parser for ``LOGADAPTER_FORMAT`` (``cri`` lines hold any format: auto)."""
    if log_format.startswith("regex:"):
        return _forced("regex", regex.compile_parser(log_format[len("regex:") :]))
    if log_format == "json":
        return _forced("json", json.parse)
    if log_format == "logfmt":
        return _forced("logfmt", logfmt.parse)
    if log_format == "clf":
        return _forced("clf", access.parse, access.parse_nginx_error)
    if log_format == "syslog":
        return _forced("syslog", syslog.parse)
    if log_format == "raw":
        return _raw
    return detect


def hinted_parser(hint: str) -> LineParser | None:
    """The parser for a LogLine's ``format_hint`` (the syslog input says ``syslog``)."""
    if hint == "syslog":
        return _forced("syslog", syslog.parse)
    if hint == "json":
        return _forced("json", json.parse)
    return None
