"""The rate limit as a filter: ``P_RATE_LIMIT`` requests a second (or minute) with bursts of
``P_RATE_LIMIT_BURST``, a token bucket asked before a request's first attempt (retries are
not limited: the retry budget bounds them). Over it the answer is 429 ``rate_limited`` with
``Retry-After``, without an attempt.

With ``P_RATE_LIMIT_REDIS_URL`` the decision is one Redis script shared by every replica
(``sidecars.proxy.shared_rate``): the request is parked during the round trip, and decided by
the local fallback bucket while Redis is unreachable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecars import observability as obs
from sidecars.policies.ratelimit import TokenBucket
from sidecars.policies.window import Clock
from sidecars.proxy import errors
from sidecars.proxy.filters import Answer, Filter
from sidecars.proxy.filters.concurrency import Rejections

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.filters import Verdict
    from sidecars.settings import OverloadSettings


def retry_after(wait: float) -> int:
    """Whole seconds rounded up, at least 1."""
    return int(-(-wait // 1)) or 1


class RateLimitFilter(Filter):
    name = "rate_limit"

    def __init__(
        self, settings: OverloadSettings, sidecar: str, upstream: str, *, clock: Clock
    ) -> None:
        rate = settings.rate_limit
        assert rate is not None
        self.settings = settings
        self.bucket = TokenBucket(rate.per_second, settings.burst, clock=clock)
        counter = obs.RATE_LIMITED.labels(sidecar, upstream)
        self.rejections = Rejections("rate_limit_rejections", upstream, lambda _: counter, clock)
        self.admitted = 0
        self._answers: dict[int, Answer] = {}

    def on_request(self, exchange: Exchange) -> Verdict:
        if exchange.attempt:
            return None
        wait = self.bucket.take()
        if wait:
            return self.rejected(wait)
        self.admit()
        return None

    def admit(self) -> None:
        self.admitted += 1
        if self.rejections.rejecting:
            self.rejections.admitted()

    def rejected(self, wait: float) -> Answer:
        self.rejections.rejected("rate_limited")
        seconds = retry_after(wait)
        answer = self._answers.get(seconds)
        if answer is None:
            answer = self._answers[seconds] = Answer(errors.RATE_LIMITED, seconds)
        return answer

    def status(self) -> dict[str, Any] | None:
        settings = self.settings
        return {
            "rate_limit": str(settings.rate_limit),
            "burst": settings.burst,
            "tokens": round(self.bucket.tokens, 3),
            "admitted": self.admitted,
            "rejected": self.rejections.total,
            "shared": None,
        }
