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
from typing import Any

from sidecars.logs import normalise, timestamps
from sidecars.logs.formats import Parser, access, json, klog, logfmt, regex, syslog, text
from sidecars.logs.model import Record

LineParser = Callable[[str, float], tuple[str, Record]]
"""``(text, now) -> (format name, record fields)``: always answers."""


def _looks_like_access(line: str) -> bool:
    return line.find(" [", 0, 80) > 0 and '] "' in line


def _json(line: str, now: float) -> tuple[str, Record]:
    record = json.parse(line, now)
    if record is None:
        return "text", text.parse_plain(line, now)
    record.setdefault("message", "")
    return "json", record


def _digit(line: str, now: float) -> tuple[str, Record]:
    record: Record | None = None
    if line[4:5] == "/":
        if line[19:21] == " [":
            record = access.parse_nginx_error(line, now)
            if record is not None:
                return "nginx_error", record
        record = text.parse_go(line, now)
    elif line[4:5] == "-" or line[2:3] == ":":
        record = text.parse_stamped(line, now)
    elif line.find(" [", 0, 80) > 0 and '] "' in line:  # ``_looks_like_access``, inlined
        record = access.parse(line, now)
        if record is not None:
            return "clf", record
    return "text", record if record is not None else text.parse_plain(line, now)


def _syslog(line: str, now: float) -> tuple[str, Record]:
    record = syslog.parse(line, now)
    if record is None:
        return "text", text.parse_plain(line, now)
    return "syslog", record


def _bracketed(line: str, now: float) -> tuple[str, Record]:
    record = text.parse_stamped(line, now)
    return "text", record if record is not None else text.parse_plain(line, now)


def _other(line: str, now: float) -> tuple[str, Record]:
    first = line[:1]
    record: Record | None = None
    if first.isdigit():  # a digit outside ASCII
        return _digit(line, now)
    if klog.looks_like(line):
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
        data = logfmt.data(line)
        if data is not None:
            record = normalise.from_mapping(data, owned=True)
            record.setdefault("message", "")
            return "logfmt", record
    elif line[:3] in timestamps.MONTHS and line[3:4] == " ":
        record = syslog.parse(line, now)
        if record is not None:
            return "syslog", record
    elif first.isupper():
        record = text.parse_python_basic(line, now)
    return "text", record if record is not None else text.parse_plain(line, now)


def looks_like_access(line: str) -> bool:
    """Whether ``detect`` tries ``line`` as an access line first (a digit-led line)."""
    return (
        line[:1] in _ASCII_DIGITS
        and line[4:5] not in _DATE_SEPARATORS
        and line[2:3] != ":"
        and line.find(" [", 0, 80) > 0
        and '] "' in line
    )


def logfmt_data(line: str) -> dict[str, Any] | None:
    """The pairs of a line that ``detect`` reads as logfmt (None for any other line), before
    normalisation. A line that ``logfmt.looks_like`` (``key=`` first) is neither digit-led nor
    klog nor Ruby Logger, so of ``_other``'s earlier checks only the access one is left."""
    if not logfmt.looks_like(line) or (line.find(" [", 0, 80) > 0 and '] "' in line):
        return None
    return logfmt.data(line)


_ASCII_DIGITS = frozenset("0123456789")
_DATE_SEPARATORS = frozenset("/-")


def detect(line: str, now: float) -> tuple[str, Record]:
    """Auto-detect the format of ``line`` and parse it (by its first character). The
    branches are direct calls, which the compiled build makes native calls."""
    first = line[:1]
    if first in _ASCII_DIGITS:
        return _digit(line, now)
    if first == "{":
        return _json(line, now)
    if first == "<":
        return _syslog(line, now)
    if first == "[":
        return _bracketed(line, now)
    return _other(line, now)


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
