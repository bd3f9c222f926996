"""Typed parsers for environment values, and a reader that collects every error at once.

Each parser takes the raw string and returns a value or raises ``ValueError`` whose message
says what is allowed; ``EnvReader`` turns those into one line per bad variable.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, overload
from urllib.parse import urlsplit

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|K|M|G)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kib": 1024,
    "k": 1024,
    "kb": 1000,
    "mib": 1024**2,
    "m": 1024**2,
    "mb": 1000**2,
    "gib": 1024**3,
    "g": 1024**3,
    "gb": 1000**3,
}
_USERINFO_PASSWORD = re.compile(r"(//[^/\s:@]*:)\S*@")
_QUERY_SECRET = re.compile(
    r"([?&;][^=&#\s]*(?:token|key|secret|pass|pwd|auth|sig|credential)[^=&#\s]*=)[^&#\s,]+",
    re.IGNORECASE,
)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ConfigError(Exception):
    """Raised with every problem found in the environment, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def duration(raw: str) -> float:
    """``0.25``, ``30``, ``250ms``, ``2s``, ``1m``, ``1h`` -> seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError("a duration: seconds (0.25, 30) or a number with ms, s, m or h")
    unit = match.group(2)
    return float(match.group(1)) * _DURATION_UNITS[unit.lower() if unit else None]


def duration_text(seconds: float) -> str:
    """Seconds as ``duration`` reads them: ``25ms`` below a second, else ``30s`` or ``1.5s``."""
    milliseconds = seconds * 1000
    if seconds < 1 and milliseconds == int(milliseconds):
        return f"{int(milliseconds)}ms"
    return f"{seconds:g}s"


def positive_duration(raw: str) -> float:
    value = duration(raw)
    if value <= 0:
        raise ValueError("a duration above zero (250ms, 2s, 1m)")
    return value


def size(raw: str) -> int:
    """``1048576``, ``64KiB``, ``1MiB`` -> bytes."""
    match = _SIZE.match(raw)
    if not match:
        raise ValueError("a size: bytes, or a number with KiB, MiB or GiB")
    unit = (match.group(2) or "b").lower()
    return int(match.group(1)) * _SIZE_UNITS[unit]


def size_text(size: int) -> str:
    """Bytes as ``size`` reads them, in the largest binary unit that divides: ``64KiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("one of true/false, 1/0, yes/no, on/off")


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise ValueError(f"a whole number {bound}")
        return value

    return parse


def float_range(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            value = float("nan")
        ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            raise ValueError(f"a number in {bracket}{low:g}, {high:g}]")
        return value

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def host_port(raw: str) -> HostPort:
    """``127.0.0.1:15001``, ``0.0.0.0:9901``, ``[::1]:80``, ``:9901`` (all interfaces)."""
    text = raw.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("host:port, e.g. 127.0.0.1:15001 (port 0-65535)")
    host = host.strip("[]") or "0.0.0.0"
    return HostPort(host, int(port_text))


def status_set(raw: str) -> frozenset[int]:
    """``500-599``, ``502,503,504``, ``429,500-599`` -> set of status codes."""
    codes: set[int] = set()
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        low_text, _, high_text = item.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise ValueError("HTTP status codes and ranges, e.g. 500-599 or 502,503") from None
        if not 100 <= low <= high <= 599:
            raise ValueError("HTTP status codes and ranges between 100 and 599, e.g. 500-599")
        codes.update(range(low, high + 1))
    if not codes:
        raise ValueError("at least one HTTP status code or range, e.g. 500-599")
    return frozenset(codes)


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def strict_comma_list(raw: str) -> tuple[str, ...]:
    """A comma list where an empty item (``a,,b``, a trailing comma) is a mistake to report,
    for lists whose every item is meant: endpoints, DNS servers."""
    items = tuple(item.strip() for item in raw.split(","))
    if len(items) > 1 and "" in items:
        raise ValueError("a comma list without empty items")
    return tuple(item for item in items if item)


def redis_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError("a Redis URL: redis://[:password@]host:port[/db] or rediss://...")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 and parts.scheme != "unix" and ":" in parts.netloc.rpartition("@")[2]:
        raise ValueError("a Redis URL with a port from 1 to 65535")
    # An optional extra: said at start-up, not as an ImportError once the sidecar serves.
    if importlib.util.find_spec("redis") is None:
        raise ValueError("the Redis client installed with it: pip install 'sidecars[redis]'")
    return raw.strip()


def mask_url(text: str) -> str:
    """Hide the passwords and secret query values of the URLs in ``text`` (one URL, a list,
    or an invalid value), keep the rest readable. Up to the last ``@`` is taken as userinfo:
    too much hidden in a malformed value rather than part of a password shown."""
    text = _USERINFO_PASSWORD.sub(r"\1***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


REQUIRED = object()
"""``EnvReader.defaults`` of a variable that has no default: it must be set."""


class EnvReader:
    """Reads variables under one prefix; records every problem instead of raising, and every
    variable read with its default and parser (``defaults``: what ``--help`` lists)."""

    def __init__(self, environ: Mapping[str, str], prefix: str) -> None:
        self.environ = environ
        self.prefix = prefix
        self.problems: list[str] = []
        self.used: set[str] = set()
        self.defaults: dict[str, tuple[object, Callable[[str], object]]] = {}

    @overload
    def get(self, name: str, parse: Callable[[str], T], default: T) -> T: ...

    @overload
    def get(self, name: str, parse: Callable[[str], T], default: None = None) -> T | None: ...

    def get(self, name: str, parse: Callable[[str], T], default: T | None = None) -> T | None:
        """Parse ``prefix + name`` if set and not empty, else return the default."""
        key = self.prefix + name
        self.used.add(key)
        self.defaults[key] = (default, parse)
        raw = self.environ.get(key)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw)
        except ValueError as error:
            self.fail(key, raw, str(error))
            return default

    def require(self, name: str, parse: Callable[[str], T], example: str) -> T | None:
        key = self.prefix + name
        self.used.add(key)
        self.defaults[key] = (REQUIRED, parse)
        raw = self.environ.get(key)
        if raw is None or raw.strip() == "":
            self.problems.append(f"{key} is required: {example}")
            return None
        try:
            return parse(raw)
        except ValueError as error:
            self.fail(key, raw, str(error))
            return None

    def fail(self, key: str, raw: str, allowed: str) -> None:
        # Error lines end up in container logs: never a credential in them.
        self.problems.append(f"{key}={mask_url(raw)!r} is invalid: expected {allowed}")

    def reject_unknown(self, known_patterns: tuple[re.Pattern[str], ...] = ()) -> None:
        """A misspelt variable is an error, not a silently ignored setting; the closest known
        name is suggested (``BREAKER_FAILURE_TRESHOLD``: did you mean ...THRESHOLD?)."""
        for key in sorted(self.environ):
            if not key.startswith(self.prefix) or key in self.used:
                continue
            if any(pattern.fullmatch(key) for pattern in known_patterns):
                continue
            close = difflib.get_close_matches(key, sorted(self.used), n=1, cutoff=0.8)
            hint = f": did you mean {close[0]}?" if close else " (check the spelling)"
            self.problems.append(f"{key} is not a known setting{hint}")
