"""The rate limit as a filter: ``P_RATE_LIMIT`` requests a second (or minute) with bursts of
``P_RATE_LIMIT_BURST``, a token bucket asked before a request's first attempt (retries are
not limited: the retry budget bounds them). Over it the answer is 429 ``rate_limited`` with
``Retry-After``, without an attempt.

With ``P_RATE_LIMIT_REDIS_URL`` the decision is one Redis script shared by every replica
(``sidecars.proxy.shared_rate``): the request is parked during the round trip, and decided by
the local fallback bucket while Redis is unreachable. A request may end while parked (its
client gone, its deadline): the answer that comes back for it then decides nothing, even
though its Exchange may by then carry the connection's next request (``_parked``: the
decision each exchange waits for, forgotten in ``on_done``). The Redis call itself is left to
finish rather than cancelled: a call cut mid-reply would cost the client its connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sidecars import observability as obs
from sidecars.policies.ratelimit import TokenBucket
from sidecars.policies.window import Clock
from sidecars.proxy import errors
from sidecars.proxy.filters import PARK, Answer, Filter, Refusals
from sidecars.proxy.filters.concurrency import Rejections

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.filters import Verdict
    from sidecars.proxy.shared_rate import SharedRateLimit
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
        self.fallbacks = obs.RATE_LIMIT_FALLBACK.labels(sidecar, upstream)
        self.admitted = 0
        self._refusals = Refusals(errors.RATE_LIMITED)
        self.rate = rate.per_second
        self.shared: SharedRateLimit | None = None  # set when P_RATE_LIMIT_REDIS_URL is
        self._decisions: set[asyncio.Task[None]] = set()
        # The Redis decision each parked exchange waits for (the request it was asked for).
        self._parked: dict[Exchange, asyncio.Task[None]] = {}
        if settings.rate_limit_redis_url is None:
            self.idle_hooks = ("on_done",)  # nothing is ever parked

    def on_request(self, exchange: Exchange) -> Verdict:
        if exchange.attempt:
            return None
        shared = self.shared
        if shared is not None:
            if shared.available():
                task = asyncio.get_running_loop().create_task(self._ask(shared, exchange))
                self._decisions.add(task)
                task.add_done_callback(self._decisions.discard)
                self._parked[exchange] = task
                return PARK
            return self._fallback(shared)
        wait = self.bucket.take()
        if wait:
            return self.rejected(wait)
        self.admit()
        return None

    async def _ask(self, shared: SharedRateLimit, exchange: Exchange) -> None:
        wait = await shared.decide()
        if self._parked.get(exchange) is not asyncio.current_task():
            return  # the request ended meanwhile: the exchange is another's, or no one's
        del self._parked[exchange]
        verdict: Answer | None
        if wait is None:
            verdict = self._fallback(shared)
        elif wait:
            verdict = self.rejected(wait)
        else:
            self.admit()
            verdict = None
        if verdict is None:
            exchange.resume(self)
        else:
            exchange.reject(verdict)

    def on_done(self, exchange: Exchange) -> None:
        """A request parked here ended first: the decision still under way is for no one."""
        if self._parked:
            self._parked.pop(exchange, None)

    def _fallback(self, shared: SharedRateLimit) -> Answer | None:
        """Redis is unreachable: the local bucket decides, at this replica's share."""
        self.fallbacks.inc()
        share = self.rate / max(1, shared.replicas)
        if self.bucket.rate != share:
            self.bucket.set_rate(share)
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
        return self._refusals.get(retry_after(wait))

    def status(self) -> dict[str, Any] | None:
        settings = self.settings
        return {
            "rate_limit": str(settings.rate_limit),
            "burst": settings.burst,
            "tokens": round(self.bucket.tokens, 3),
            "admitted": self.admitted,
            "rejected": self.rejections.total,
            "shared": self.shared.snapshot() if self.shared is not None else None,
        }
