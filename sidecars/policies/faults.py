"""Fault injection, sans-IO: what a fault is, which request gets which fault (randomness
injected), and the run-time drills with their expiry (clock injected).

A fault is one of ``abort`` (answer with a status), ``delay`` (hold the attempt) or
``reset`` (the connection cut as if the upstream died), for a share of the requests, and
optionally only for a path prefix or a request header's value. At most one fault applies to
an attempt: the first, in order, whose match and draw hit (drills newest first, then the
``P_FAULT_*`` variables: abort, reset, delay).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sidecars.envparse import duration

Clock = Callable[[], float]
Uniform = Callable[[], float]
"""A draw in [0, 1)."""

KINDS = ("abort", "delay", "reset")
SCOPES = ("attempt", "request")
# Every drill ends by itself: at most this long, and at most this many at once.
MAX_DRILL_SECONDS = 3600.0
MAX_DRILLS = 16


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # abort, delay, reset
    percent: float  # 0-100
    status: int = 0  # abort
    delay: float = 0.0  # seconds, delay
    path_prefix: bytes = b""  # b"": every path
    header: tuple[bytes, bytes] | None = None  # (lower-case name, value) to match
    scope: str = ""  # attempt, request; "": the route's P_FAULT_SCOPE

    def matches(self, target: bytes, lines: Sequence[bytes]) -> bool:
        if self.path_prefix and not target.startswith(self.path_prefix):
            return False
        header = self.header
        if header is None:
            return True
        name, value = header
        # lines: name, b": ", value, b"\r\n", ... as the client sent them
        return any(
            lines[i].lower() == name and lines[i + 2] == value for i in range(0, len(lines), 4)
        )

    def describe(self) -> dict[str, Any]:
        view: dict[str, Any] = {"kind": self.kind, "percent": self.percent}
        if self.scope:
            view["scope"] = self.scope
        if self.kind == "abort":
            view["status"] = self.status
        elif self.kind == "delay":
            view["delay"] = self.delay
        if self.path_prefix:
            view["path_prefix"] = self.path_prefix.decode("latin-1")
        if self.header is not None:
            view["header"] = {
                "name": self.header[0].decode("latin-1"),
                "value": self.header[1].decode("latin-1"),
            }
        return view


_SHARE = re.compile(r"^\s*(?:(.+?)\s*@)?\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def percent(raw: str) -> float:
    """``30``, ``30%``, ``2.5%`` -> 0-100."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", raw)
    if match is None or float(match.group(1)) > 100:
        raise ValueError("a percentage from 0 to 100, e.g. 30%")
    return float(match.group(1))


def _share(raw: str, what: str) -> tuple[str, float]:
    match = _SHARE.match(raw)
    if match is None or match.group(1) is None:
        raise ValueError(f"{what}@PERCENT%")
    return match.group(1), percent(match.group(2))


def abort_status(raw: str) -> int:
    """A registered HTTP status from 200 to 599 (it is answered with its reason phrase)."""
    text = raw.strip()
    if not text.isdigit() or not 200 <= int(text) <= 599 or int(text) not in _STATUSES:
        raise ValueError("a registered HTTP status from 200 to 599")
    return int(text)


_STATUSES = frozenset(int(status) for status in HTTPStatus)


def parse_abort(raw: str) -> Fault:
    """``503@10%``"""
    status, share = _share(raw, "STATUS")
    try:
        return Fault("abort", share, status=abort_status(status))
    except ValueError:
        raise ValueError("STATUS@PERCENT%, e.g. 503@10%") from None


def parse_delay(raw: str) -> Fault:
    """``200ms@5%``"""
    text, share = _share(raw, "DURATION")
    try:
        return Fault("delay", share, delay=duration(text))
    except ValueError:
        raise ValueError("DURATION@PERCENT%, e.g. 200ms@5%") from None


def parse_reset(raw: str) -> Fault:
    """``2%``"""
    return Fault("reset", percent(raw))


def pick(
    faults: Sequence[Fault], target: bytes, lines: Sequence[bytes], draw: Uniform
) -> Fault | None:
    """The first fault that matches the request and whose draw hits (one draw per matching
    fault with a share below 100%)."""
    for fault in faults:
        share = fault.percent
        if share <= 0.0 or not fault.matches(target, lines):
            continue
        if share >= 100.0 or draw() * 100.0 < share:
            return fault
    return None


class DrillRefused(ValueError):
    """A drill that cannot start: the bound on active drills is reached."""


@dataclass(frozen=True, slots=True)
class Drill:
    id: str
    fault: Fault
    started: float  # clock seconds
    expires: float

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.fault.describe(),
            "remaining": round(max(0.0, self.expires - now), 3),
        }


class Drills:
    """The run-time faults of one process (every HTTP route reads them). ``faults`` is the
    tuple the filters read per request (empty when no drill runs); ``on_end(drill, reason)``
    hears of every drill's end (expired, deleted), the ``on_change`` listeners of every
    change of ``faults``."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        on_end: Callable[[Drill, str], None] | None = None,
        max_active: int = MAX_DRILLS,
        max_seconds: float = MAX_DRILL_SECONDS,
    ) -> None:
        self.now = clock
        self._on_end = on_end
        self.max_active = max_active
        self.max_seconds = max_seconds
        self._drills: list[Drill] = []  # newest first
        self._next_id = 1
        self.faults: tuple[Fault, ...] = ()
        self.next_expiry = float("inf")
        self._listeners: list[Callable[[], None]] = []

    def add(self, fault: Fault, seconds: float) -> Drill:
        if not 0 < seconds <= self.max_seconds:
            raise ValueError(f"duration must be above 0 and at most {self.max_seconds:g}s")
        self.expire()
        if len(self._drills) >= self.max_active:
            raise DrillRefused(f"{self.max_active} drills are active already")
        now = self.now()
        drill = Drill(str(self._next_id), fault, now, now + seconds)
        self._next_id += 1
        self._drills.insert(0, drill)
        self._changed()
        return drill

    def remove(self, drill_id: str) -> Drill | None:
        for drill in self._drills:
            if drill.id == drill_id:
                self._drills.remove(drill)
                self._changed()
                self._ended(drill, "deleted")
                return drill
        return None

    def clear(self) -> list[Drill]:
        ended, self._drills = self._drills, []
        self._changed()
        for drill in ended:
            self._ended(drill, "deleted")
        return ended

    def expire(self) -> None:
        """End the drills whose time is up."""
        now = self.now()
        if now < self.next_expiry:
            return
        ended = [d for d in self._drills if d.expires <= now]
        self._drills = [d for d in self._drills if d.expires > now]
        self._changed()
        for drill in ended:
            self._ended(drill, "expired")

    def active(self) -> list[dict[str, Any]]:
        self.expire()
        now = self.now()
        return [drill.describe(now) for drill in self._drills]

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change of ``faults``."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.faults = tuple(d.fault for d in self._drills)
        self.next_expiry = min((d.expires for d in self._drills), default=float("inf"))
        for listener in self._listeners:
            listener()

    def _ended(self, drill: Drill, reason: str) -> None:
        if self._on_end is not None:
            self._on_end(drill, reason)
