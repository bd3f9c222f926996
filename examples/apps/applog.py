"""The example app's logs, deliberately in the mix of styles a real estate has.

One app writes JSON lines (orders), logfmt (inventory client), classic Python ``logging`` text
with tracebacks (payments client) and a combined access log; the log adapter turns them all
into one schema. The app itself only writes lines: to stdout (what a container runtime
collects) or to files on a shared volume.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from typing import Any

# Fields of a LogRecord that are not the caller's ``extra``.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JSONLineFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra>...}`` (pino/structlog)."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        return json.dumps(event, default=str)


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=warn logger=inventory msg="..." key=value`` (Go/Heroku style)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = {
            "ts": _timestamp(record),
            "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        return " ".join(
            f"{key}={_logfmt_value(value)}" for key, value in pairs.items() if value is not None
        )


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(char in text for char in ' ="\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
ACCESS_LOG_FORMAT = '%a - - %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'
# Files on a shared volume are rotated by rename (the adapter follows renames), so a pod's
# emptyDir never fills up.
ROTATE_BYTES = 32 * 1024 * 1024
ROTATE_KEEP = 2


class StyleByLogger(logging.Formatter):
    """One destination, a style per logger: the mix the adapter has to untangle."""

    def __init__(self, styles: dict[str, logging.Formatter], fallback: logging.Formatter) -> None:
        super().__init__()
        self.styles = styles
        self.fallback = fallback

    def format(self, record: logging.LogRecord) -> str:
        return self.styles.get(record.name, self.fallback).format(record)


def destination(path: str | None) -> logging.Handler:
    """stdout (what a container runtime collects), or a rotated file on a shared volume."""
    if path is None:
        return logging.StreamHandler(sys.stdout)
    return logging.handlers.RotatingFileHandler(
        path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP, encoding="utf-8"
    )


def _attach(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def configure(app_log: logging.Handler, access_log: logging.Handler) -> None:
    """``orders`` as JSON lines, ``inventory`` as logfmt, ``payments`` as text with tracebacks
    (all to ``app_log``), and the combined access log to ``access_log``."""
    text = logging.Formatter(TEXT_FORMAT)
    app_log.setFormatter(
        StyleByLogger({"orders": JSONLineFormatter(), "inventory": LogfmtFormatter()}, text)
    )
    access_log.setFormatter(logging.Formatter("%(message)s"))
    for name in ("orders", "inventory", "payments"):
        _attach(name, app_log)
    _attach("aiohttp.access", access_log)
    # aiohttp's own errors (a bug in a handler) go to stderr as classic text with tracebacks.
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(text)
    _attach("aiohttp", errors)
