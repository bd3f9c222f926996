"""Text lines of the common logging libraries, and plain text with level words.

Recognised heads (timestamp, level, logger, thread are taken out; the rest is the message):

- Spring Boot: ``2026-11-26 10:00:00.123  INFO 1 --- [main] c.e.App : msg`` (2.x) and
  ``2026-11-26T10:00:00.123Z  INFO 1 --- [app] [main] c.e.App : msg`` (3.x)
- logback/log4j: ``2026-11-26 10:00:00.123 [main] INFO  c.e.App - msg``,
  ``10:00:00.123 [main] INFO c.e.App - msg`` (date-less: today's date),
  ``2026-11-26 10:00:00,123 ERROR [main] c.e.App - msg``
- Python logging: ``WARNING:root:msg`` (basicConfig), ``2026-11-26 10:00:00,123 - app - INFO
  - msg``, ``2026-11-26 10:00:00,123 INFO app: msg``, ``2026-11-26 10:00:00,123 INFO [app]
  msg`` (a bracket after the level with no logger after it is the logger, not a thread),
  ``[2026-11-26 10:00:00,123] INFO in app: msg`` (Flask), gunicorn ``[2026-11-26 10:00:00
  +0000] [7] [INFO] msg``, uvicorn ``INFO:     msg``, loguru ``2026-11-26 10:00:00.123 |
  INFO | mod:fn:1 - msg``
- Ruby Logger/Rails: ``I, [2026-11-26T10:00:00.123456 #1]  INFO -- app: msg``
- Go ``log``: ``2026/11/26 10:00:00 [file.go:12: ]msg`` (a leading level word is used)
- anything else: the whole line is the message; an upper-case level word in its first
  80 characters (``ERROR``, ``WARN``...) or a leading ``error:``/``[warn]`` gives the level.
"""

from __future__ import annotations

import re
import time
from typing import Any

from sidecars.logs import levels, timestamps
from sidecars.logs.model import Record

_ISO = (
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?(?:Z|UTC|[+-]\d\d(?::?\d\d)?)(?!\d))?"
)
_CLOCK = r"\d\d:\d\d:\d\d(?:[.,]\d+)?"
_LEVEL = (
    r"(?i:trace|debug|info|notice|warn|warning|error|err|critical|crit|fatal|severe|alert"
    r"|emerg|emergency|panic|fine|finer|finest|config|verbose|success|dbg|inf|wrn|ftl|trc)"
    r"(?![\w-])"
)
_LOGGER = r"[\w.$/<>-]+(?::[\w.$<>-]+)*(?:\[[^\]]*\])?"

_SPRING = re.compile(
    rf"({_ISO})\s+({_LEVEL})\s+(\d+)\s+---\s+((?:\[[^\]]*\]\s*)+?)\s*(\S+)\s+:\s(.*)", re.DOTALL
)
_STAMPED = re.compile(
    rf"\[?({_ISO}|{_CLOCK})\]?(?:\s+|\s*\|\s*)"
    rf"(?:\[([^\]]+)\]\s+)?\[?({_LEVEL})\]?(?:\s*\|\s*|:\s*|\s+)"
    rf"(?:\[([^\]]+)\]\s+)?(?:(?:in )?({_LOGGER})(?:\s+-|:)\s)?(.*)",
    re.DOTALL,
)
_PYTHON_DASHED = re.compile(rf"({_ISO}) - (\S+) - ({_LEVEL}) - (.*)", re.DOTALL)
_STAMP_ONLY = re.compile(rf"\[?({_ISO})\]?[\s:|-]*(.*)", re.DOTALL)
_GO = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) (?:([\w./-]+\.go:\d+): )?(.*)",
                 re.DOTALL)
_RUBY = re.compile(r"([DIWEFAU]), \[([^\]\s]+) #(\d+)\]\s+(\w+) -- (.*?): (.*)", re.DOTALL)
_PYTHON_BASIC = re.compile(r"(CRITICAL|ERROR|WARNING|INFO|DEBUG):(?:([^\s:]+):)?\s*(.*)",
                           re.DOTALL)
_LEVEL_LEAD = re.compile(rf"\[?({_LEVEL})\]?(?::\s*|\s+)(.*)", re.DOTALL)
_LEVEL_WORD = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE|PANIC|EMERG)\b"
)
_CORRELATION = re.compile(r"([0-9a-f]{32})[-,]([0-9a-f]{16})")

_days: dict[int, str] = {}


def _today(now: float) -> str:
    day = int(now // 86400)
    text = _days.get(day)
    if text is None:
        _days.clear()
        text = _days[day] = time.strftime("%Y-%m-%d", time.gmtime(now))
    return text


def _stamp(text: str, now: float) -> str | None:
    if text[2] == ":":
        return timestamps.from_iso(f"{_today(now)}T{text}")
    return timestamps.from_iso(text)


def _record(stamp: str | None, level: str | None, message: str) -> Record:
    record: Record = {"message": message}
    if stamp is not None:
        record["timestamp"] = stamp
    if level is not None:
        record["level"] = level
    return record


def _spring(match: re.Match[str], now: float) -> Record:
    stamp, level, pid, brackets, logger, message = match.groups()
    record = _record(_stamp(stamp, now), levels.from_name(level), message)
    record["logger"] = logger
    attributes: dict[str, Any] = {"pid": int(pid)}
    names: list[str] = []
    for part in re.findall(r"\[([^\]]*)\]", brackets):
        value = part.strip()
        ids = _CORRELATION.fullmatch(value)
        if ids is not None:
            record["trace_id"], record["span_id"] = ids.groups()
        elif value:
            names.append(value)
    if len(names) > 1:
        attributes["application"] = names[0]
    if names:
        attributes["thread"] = names[-1]
    record["attributes"] = attributes
    return record


def _stamped(match: re.Match[str], now: float) -> Record:
    stamp, thread, level, thread_after, logger, message = match.groups()
    if thread_after and not thread and not logger:
        # ``LEVEL [name] message``: Python's ``%(levelname)s [%(name)s] %(message)s``. In the
        # Java layouts a bracket after the level is the thread, and the logger follows it.
        logger, thread_after = thread_after, None
    record = _record(_stamp(stamp, now), levels.from_name(level), message)
    if logger:
        record["logger"] = logger
    if thread or thread_after:
        record["attributes"] = {"thread": thread or thread_after}
    return record


def _level_in(message: str) -> str | None:
    found = _LEVEL_WORD.search(message, 0, 80)
    return None if found is None else levels.from_name(found.group(1))


def _leading_level(message: str) -> tuple[str | None, str]:
    """``[ERROR] msg`` / ``error: msg`` / ``WARN msg`` -> (level, msg); else a level word in
    the first 80 characters, message unchanged."""
    lead = _LEVEL_LEAD.match(message)
    if lead is not None:
        return levels.from_name(lead.group(1)), lead.group(2)
    return _level_in(message), message


def parse_stamped(text: str, now: float) -> Record | None:
    """Lines that start with a date-time (or a bracketed one)."""
    if " --- " in text:
        match = _SPRING.match(text)
        if match is not None:
            return _spring(match, now)
    match = _STAMPED.match(text)
    if match is not None:
        return _stamped(match, now)
    dashed = _PYTHON_DASHED.match(text)
    if dashed is not None:
        stamp, logger, level, message = dashed.groups()
        record = _record(_stamp(stamp, now), levels.from_name(level), message)
        record["logger"] = logger
        return record
    bare = _STAMP_ONLY.match(text)
    if bare is None:
        return None
    stamp, message = bare.groups()
    level, message = _leading_level(message)
    return _record(_stamp(stamp, now), level, message)


def parse_go(text: str, now: float) -> Record | None:
    """Go's standard ``log`` package: ``2026/11/26 10:00:00[.123456] [file.go:12: ]msg``."""
    match = _GO.match(text)
    if match is None:
        return None
    year, month, day, clock, source, message = match.groups()
    level, message = _leading_level(message)
    record = _record(timestamps.from_iso(f"{year}-{month}-{day}T{clock}"), level, message)
    if source:
        record["attributes"] = {"source": source}
    return record


def parse_ruby(text: str, now: float) -> Record | None:
    """Ruby's Logger (Rails): ``I, [2026-11-26T10:00:00.123456 #1]  INFO -- prog: msg``."""
    match = _RUBY.match(text)
    if match is None:
        return None
    letter, stamp, pid, level, program, message = match.groups()
    record = _record(
        timestamps.from_iso(stamp), levels.from_name(level) or levels.from_name(letter), message
    )
    if program:
        record["logger"] = program
    record["attributes"] = {"pid": int(pid)}
    return record


def parse_python_basic(text: str, now: float) -> Record | None:
    """``logging.basicConfig()``'s ``LEVEL:logger:message``, and uvicorn's ``INFO:  msg``."""
    match = _PYTHON_BASIC.match(text)
    if match is None:
        return None
    level, logger, message = match.groups()
    record = _record(None, levels.from_name(level), message)
    if logger:
        record["logger"] = logger
    return record


def parse_plain(text: str, now: float) -> Record:
    """Any line: a leading level word is taken out, else one found early in the line."""
    level, message = _leading_level(text)
    return _record(None, level, message)


def parse(text: str, now: float) -> Record:
    """Every text shape above, tried in the order of the line's first character."""
    first = text[:1]
    record: Record | None = None
    if first.isdigit():
        record = parse_go(text, now) if text[4:5] == "/" else parse_stamped(text, now)
    elif first == "[":
        record = parse_stamped(text, now)
    elif text[1:4] == ", [":
        record = parse_ruby(text, now)
    elif first.isupper():
        record = parse_python_basic(text, now)
    return record if record is not None else parse_plain(text, now)
