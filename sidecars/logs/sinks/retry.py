"""How a remote output waits between failed sends: full-jitter backoff over consecutive
failures, or the destination's ``Retry-After``. Shared by the HTTP outputs and CloudWatch, and
free of any HTTP client, so an output that needs no aiohttp does not import it."""

from __future__ import annotations

import random as random_module
from collections.abc import Callable

from sidecars.logs.sinks import RetryLater
from sidecars.policies.retry import BackoffSchedule

RETRY_BASE = 0.1
RETRY_MAX = 5.0
RETRY_AFTER_MAX = 300.0


class RetrySchedule:
    """Consecutive failures of one output -> the next delay (full jitter, or Retry-After)."""

    def __init__(self, random: Callable[[], float] = random_module.random) -> None:
        self._backoff = BackoffSchedule(RETRY_BASE, RETRY_MAX, random)
        self.failures = 0

    def failed(self, message: str, retry_after: float | None = None) -> RetryLater:
        self.failures += 1
        delay = (
            min(retry_after, RETRY_AFTER_MAX)
            if retry_after is not None
            else self._backoff.delay(self.failures)
        )
        return RetryLater(message, delay)

    def succeeded(self) -> None:
        self.failures = 0
