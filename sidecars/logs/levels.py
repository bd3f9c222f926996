"""Log levels of every logging library -> ``trace|debug|info|warn|error|fatal``.

The six names are OpenTelemetry's severity ranges. Text levels are looked up in one table
(with its upper-case and capitalised spellings precomputed, so the common cases cost one
dictionary lookup); numbers follow pino/bunyan (10 trace .. 60 fatal) or, for
OpenTelemetry's ``severity_number``, its 1..24 ranges; syslog severities 0..7 by index.
"""

from __future__ import annotations

LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")

_NAMES = {
    "trace": "trace", "trc": "trace", "finest": "trace", "finer": "trace", "silly": "trace",
    "debug": "debug", "dbg": "debug", "dbug": "debug", "fine": "debug", "config": "debug",
    "verbose": "debug", "d": "debug",
    "info": "info", "inf": "info", "information": "info", "informational": "info",
    "notice": "info", "note": "info", "i": "info", "log": "info", "default": "info",
    "success": "info",
    "warn": "warn", "warning": "warn", "wrn": "warn", "w": "warn",
    "error": "error", "err": "error", "eror": "error", "erro": "error", "severe": "error",
    "e": "error", "failure": "error",
    "fatal": "fatal", "ftl": "fatal", "critical": "fatal", "crit": "fatal", "crt": "fatal",
    "panic": "fatal", "emerg": "fatal", "emergency": "fatal", "alert": "fatal", "f": "fatal",
    "dpanic": "fatal",
}
TABLE: dict[str, str] = {}
"""Every spelling (as written, UPPER, Capitalised) -> level."""
for _name, _level in _NAMES.items():
    for _spelling in (_name, _name.upper(), _name.capitalize()):
        TABLE[_spelling] = _level

SYSLOG_SEVERITIES = ("fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug")
"""Index = RFC 5424 severity (0 emerg, 1 alert, 2 crit, 3 err, 4 warning, 5 notice, ...)."""


def from_name(raw: str) -> str | None:
    """A level word (any case, surrounding spaces ignored) -> level; None when unknown."""
    level = TABLE.get(raw)
    if level is None:
        level = TABLE.get(raw.strip().lower())
    return level


def from_number(value: float) -> str:
    """pino/bunyan numbers: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal (values
    between two steps take the lower one)."""
    if value < 20:
        return "trace"
    if value < 30:
        return "debug"
    if value < 40:
        return "info"
    if value < 50:
        return "warn"
    if value < 60:
        return "error"
    return "fatal"


def from_severity_number(value: float) -> str | None:
    """OpenTelemetry SeverityNumber 1..24 -> level (None outside the range)."""
    if not 1 <= value <= 24:
        return None
    return LEVELS[min(int(value - 1) // 4, 5)]


def from_value(value: object) -> str | None:
    """A level field as found in structured data: a word, a number or a numeric string."""
    if isinstance(value, str):
        level = from_name(value)
        if level is None and value.isdecimal():  # what int() reads ("²".isdigit() is true)
            return from_number(int(value))
        return level
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return from_number(value)
    return None
