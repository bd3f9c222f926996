"""Retry policy: what may be retried, when, and how many retries the upstream can afford.

Sans-IO: the engine reports what happened to an attempt and gets a ``RetryDecision`` back;
waiting, timing out and re-sending are the engine's business.
"""

from __future__ import annotations

import math
import random as random_module
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

from sidecars.policies.window import Clock, SlidingCounter

if TYPE_CHECKING:
    from sidecars.settings import RetrySettings

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS: Final[frozenset[bytes]] = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
)
# A Retry-After beyond a day is an upstream's way of saying "not today"; the deadline caps it.
_RETRY_AFTER_MAX: Final = 86400.0


class BackoffSchedule:
    """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the wait before
    retry n is uniform over [0, min(cap, base * 2**(n-1))), so retrying clients spread out
    instead of arriving together."""

    def __init__(
        self, base: float, cap: float, random: Callable[[], float] = random_module.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._random = random

    def ceiling(self, retry: int) -> float:
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        # Past 2**64 the cap has long won; the bound keeps the float finite.
        return min(self.cap, self.base * 2.0 ** min(retry - 1, 64))

    def delay(self, retry: int) -> float:
        return self._random() * self.ceiling(retry)


def parse_retry_after(value: bytes | str, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date (``now`` in
    epoch seconds). None for anything else; never negative (a past date means now)."""
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return min(float(text), _RETRY_AFTER_MAX) if len(text) < 12 else _RETRY_AFTER_MAX
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; RFC 9110 dates are all GMT
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), _RETRY_AFTER_MAX)


class Deadline:
    """The overall time a client request may take, all attempts and waits included."""

    __slots__ = ("_clock", "_ends_at", "timeout")

    def __init__(self, timeout: float, clock: Clock = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._ends_at = clock() + timeout

    def remaining(self) -> float:
        return max(0.0, self._ends_at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._ends_at


class RetryBudget:
    """Linkerd/Envoy model: retries allowed = ratio x requests over the window
    + min_per_second x window.

    During a total outage every request fails and wants retrying; the budget keeps the load on
    the upstream at about (1 + ratio) x the client load instead of max_attempts x, while the
    floor keeps retries available to a low-traffic route."""

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        window: float = 10.0,
        clock: Clock = time.monotonic,
        buckets: int = 10,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._requests = SlidingCounter(window, buckets, clock)
        self._retries = SlidingCounter(window, buckets, clock)
        self._exhausted = 0

    def record_request(self) -> None:
        self._requests.add()

    def allowed(self) -> float:
        return self.ratio * self._requests.total() + self.min_per_second * self.window

    def try_spend(self) -> bool:
        if self._retries.total() + 1 > self.allowed():
            self._exhausted += 1
            return False
        self._retries.add()
        return True

    def snapshot(self) -> dict[str, Any]:
        requests = self._requests.total()
        retries = self._retries.total()
        allowed = self.ratio * requests + self.min_per_second * self.window
        return {
            "window_seconds": self.window,
            "ratio": self.ratio,
            "min_per_second": self.min_per_second,
            "requests": requests,
            "retries": retries,
            "allowed": round(allowed, 3),
            "available": max(0, math.floor(allowed) - retries),
            "exhausted": self._exhausted,
        }


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float  # seconds to wait before the next attempt (when retry)
    reason: str  # the failure retried, or why there is no retry


class RetryPolicy:
    """Decides, after a failed attempt, whether to make another and after what wait."""

    def __init__(
        self, settings: RetrySettings, budget: RetryBudget, backoff: BackoffSchedule
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.backoff = backoff
        self._kinds = settings.retry_on.kinds
        self._statuses = settings.retry_on.statuses

    def decide(
        self,
        *,
        attempt: int,
        failure: str | int,
        method: bytes,
        has_idempotency_key: bool,
        request_sent: bool,
        body_replayable: bool,
        retry_after: float | None,
        remaining: float,
    ) -> RetryDecision:
        """``failure``: "connect-failure", "reset", "timeout", or the status answered;
        ``attempt``: the attempt that just failed, from 1; ``remaining``: seconds left of the
        deadline. The budget is asked last, so it is spent only on retries really made."""
        if isinstance(failure, int):
            if failure not in self._statuses:
                return _no("success" if failure < 400 else "not_retryable")
        elif failure not in self._kinds:
            return _no("not_retryable")
        if attempt >= self.settings.max_attempts:
            return _no("max_attempts")
        if request_sent:
            # The upstream may have acted on it: repeat only what is safe to repeat.
            if not (
                method in IDEMPOTENT_METHODS
                or has_idempotency_key
                or self.settings.retry_non_idempotent
            ):
                return _no("non_idempotent")
            if not body_replayable:
                return _no("body_not_replayable")
        if remaining <= 0:
            return _no("deadline")
        if retry_after is not None:
            if retry_after >= remaining:
                return _no("retry_after_exceeds_deadline")
            delay = retry_after
        else:
            delay = self.backoff.delay(attempt)
            if delay >= remaining:
                return _no("deadline")
        if not self.budget.try_spend():
            return _no("budget")
        return RetryDecision(True, delay, str(failure))


def _no(reason: str) -> RetryDecision:
    return RetryDecision(False, 0.0, reason)
