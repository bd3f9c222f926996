"""Timestamps of every shape -> RFC 3339 UTC with microseconds (``2026-11-26T10:00:00.123456Z``).

Consecutive log lines share their seconds, so the UTC text of each seconds prefix (with its
zone) is computed once and cached; a line then costs a dictionary lookup and a string join,
not a datetime parse. A zone offset is converted to UTC; no zone means UTC. Fractions past
microseconds are truncated, never rounded up into the next second.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime, timedelta
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

_CACHE_LIMIT = 8192
_FUTURE_TOLERANCE = timedelta(days=7)

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

_iso_prefixes: dict[str, str] = {}
_last_output_prefix = "\0"  # ``YYYY-MM-DDTHH:MM:SS.`` of the last line already in output shape
_epoch_prefixes: dict[int, str | None] = {}
_years: dict[tuple[int, int, int], int] = {}


def _remember(cache: dict[K, V], key: K, value: V) -> V:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _zone_offset(zone: str) -> timedelta | None:
    """``Z``, ``UTC``, ``+01:00``, ``+0100``, ``+01`` -> offset east of UTC; None if unknown."""
    if zone in ("", "Z", "z", "UTC", "GMT"):
        return timedelta(0)
    sign = zone[:1]
    digits = zone[1:].replace(":", "")
    if sign not in ("+", "-") or not digits.isdigit() or len(digits) not in (2, 4):
        return None
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if sign == "-" else offset


_BASE = re.compile(r"\d{4}-\d\d-\d\d[T t]\d\d:\d\d:\d\d")
_TAIL = re.compile(r"(?:[.,](\d+))?\s*(Z|z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?")
_UTC_ZONES = frozenset({"", "Z", "z", "UTC", "GMT", "+00:00", "+0000", "+00", "-00:00"})


def _utc_prefix(base: str, zone: str) -> str:
    """``YYYY-MM-DD[T ]HH:MM:SS`` in ``zone`` -> ``YYYY-MM-DDTHH:MM:SS.`` in UTC; "" if invalid."""
    offset = _zone_offset(zone)
    if offset is None or _BASE.fullmatch(base) is None:
        return ""
    try:
        moment = datetime(
            int(base[0:4]), int(base[5:7]), int(base[8:10]),
            int(base[11:13]), int(base[14:16]), int(base[17:19]),
        )
    except ValueError:
        return ""
    if offset:
        moment -= offset
    return moment.strftime("%Y-%m-%dT%H:%M:%S.")


def from_iso(text: str) -> str | None:
    """ISO 8601 / RFC 3339 text, ``T`` or space between date and time, ``.`` or ``,`` before
    the fraction, optional zone (also after a space): ``2026-11-26 10:00:00,123``,
    ``2026-11-26T11:00:00.123456789+01:00``. None when the text is not such a timestamp."""
    global _last_output_prefix
    if len(text) == 27 and text[26] == "Z":
        # Already the output shape (what most JSON loggers write), and most often in the same
        # second as the line before: then only the fraction needs a look.
        head = text[:20]
        if head != _last_output_prefix and text[19] == "." and text[10] == "T":
            base = text[:19]
            prefix = _iso_prefixes.get(base)
            if prefix is None:
                prefix = _remember(_iso_prefixes, base, _utc_prefix(base, ""))
            if prefix == head:
                _last_output_prefix = prefix
        if head == _last_output_prefix and text[20:26].isdigit():
            return text
    base = text[:19]
    tail = text[19:]
    if tail[-1:] == "Z" and tail[:1] == ".":  # the commonest shape: fast path
        fraction = tail[1:-1]
        prefix = _iso_prefixes.get(base)
        if prefix and fraction.isdigit():
            if len(fraction) == 6:
                return prefix + fraction + "Z"
            return prefix + (fraction + "000000")[:6] + "Z"
    if not tail or tail == "Z":
        fraction = zone = ""
    elif tail[0] in ".," and (tail[1:-1] if tail[-1] == "Z" else tail[1:]).isdigit():
        fraction, zone = tail[1:-1] if tail[-1] == "Z" else tail[1:], ""
    elif tail[0] in ".," and tail[-3:-2] == ":" and tail[-6:-5] in "+-" and tail[1:-6].isdigit():
        fraction, zone = tail[1:-6], tail[-6:]  # ``.123+01:00`` (logback, ECS)
        if zone in _UTC_ZONES:
            zone = ""
    else:
        match = _TAIL.fullmatch(tail)
        if match is None:
            return None
        fraction = match.group(1) or ""
        zone = match.group(2) or ""
        if zone in _UTC_ZONES:
            zone = ""
    key = base + zone if zone else base
    prefix = _iso_prefixes.get(key)
    if prefix is None:
        prefix = _remember(_iso_prefixes, key, _utc_prefix(base, zone))
    if not prefix:
        return None
    if len(fraction) == 6:
        return prefix + fraction + "Z"
    if len(fraction) == 3:
        return prefix + fraction + "000Z"
    return prefix + (fraction + "000000")[:6] + "Z"


def from_epoch(value: int | float) -> str | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds (told apart by magnitude, as
    pino, zap, bunyan and OpenTelemetry write them) -> RFC 3339; None outside years 1..9999.
    (Integers and floats take separate typed paths: native arithmetic when compiled.)"""
    if isinstance(value, int):
        return _from_epoch_int(value)
    return _from_epoch_float(value)


def _from_epoch_int(value: int) -> str | None:
    if value < 0:  # before 1970: not a log timestamp
        return None
    if value >= 10**17:
        value //= 1000
        return _epoch_text(value // 1_000_000, value % 1_000_000)
    if value >= 10**14:
        return _epoch_text(value // 1_000_000, value % 1_000_000)
    if value >= 10**11:
        return _epoch_text(value // 1000, value % 1000 * 1000)
    return _epoch_text(value, 0)


def _from_epoch_float(value: float) -> str | None:
    if math.isnan(value) or value < 0:
        return None
    if value >= 1e17:
        value /= 1e9
    elif value >= 1e14:
        value /= 1e6
    elif value >= 1e11:
        value /= 1e3
    if value == math.inf:
        return None
    seconds = int(value)
    micros = int((value - seconds) * 1e6 + 0.5)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return _epoch_text(seconds, micros)


def _epoch_text(seconds: int, micros: int) -> str | None:
    prefix = _epoch_prefixes.get(seconds, "")
    if prefix == "":
        try:
            text: str | None = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, ValueError, OSError):
            text = None
        prefix = _remember(_epoch_prefixes, seconds, text)
    if prefix is None:
        return None
    return prefix + "." + str(1_000_000 + micros)[1:] + "Z"  # six digits, cheaper than :06d


def from_text(text: str) -> str | None:
    """A timestamp field of unknown shape: ISO text, or epoch digits (``1764151200.123``)."""
    if len(text) >= 19 and text[4] == "-":
        return from_iso(text)
    if text[:1].isdigit():
        try:
            number = float(text) if "." in text else int(text)
        except ValueError:
            return None
        return from_epoch(number)
    return None


def infer_year(month: int, day: int, now: float) -> int:
    """The year of a date written without one (syslog RFC 3164, klog), as Vector infers it:
    this year, unless that puts the date more than a few days in the future (a December line
    read in January), then last year."""
    # The answer changes only from one day to the next (a date at midnight against now plus
    # whole days), so it is cached per day: no datetime per line.
    key = (int(now // 86400), month, day)
    year = _years.get(key)
    if year is None:
        current = datetime.fromtimestamp(now, UTC)
        year = current.year
        try:
            if datetime(year, month, day, tzinfo=UTC) > current + _FUTURE_TOLERANCE:
                year -= 1
        except ValueError:  # 29 February of a common year: the last leap year
            while not calendar.isleap(year):
                year -= 1
        _remember(_years, key, year)
    return year


def from_month_day(month: int, day: int, clock: str, now: float) -> str | None:
    """``Nov 26 10:00:00[.123]`` style parts without a year -> RFC 3339 (year inferred)."""
    year = infer_year(month, day, now)
    return from_iso(f"{year:04d}-{month:02d}-{day:02d}T{clock}")
