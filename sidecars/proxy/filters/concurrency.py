"""Concurrency caps as a filter: ``P_MAX_REQUESTS`` (a number, or ``adaptive``), the FIFO
queue of ``P_MAX_PENDING`` requests waiting at most ``P_QUEUE_TIMEOUT`` for a slot, and
``P_MAX_ACTIVE_RETRIES``.

A request takes a slot before its first attempt and keeps it until the exchange ends, so its
retries hold a slot like first attempts and the upstream never has more than the limit in
flight from this route. Past the limit and the queue the answer is 503 ``overloaded`` at once,
without an attempt. A slot given back goes to the oldest waiting request, which is parked
(``PARK``) meanwhile. With ``adaptive`` the limit is ``AdaptiveLimit``'s
(``sidecars.policies.concurrency``), fed with every attempt's time to its response head.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from sidecars import observability as obs
from sidecars.observability import get_logger
from sidecars.policies.concurrency import AdaptiveLimit
from sidecars.policies.window import Clock
from sidecars.proxy import errors
from sidecars.proxy.filters import PARK, Answer, Filter

if TYPE_CHECKING:
    from sidecars.policies.retry import RetryDecision
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.filters import Verdict
    from sidecars.settings import OverloadSettings

log: Final = get_logger("sidecars.proxy.overload")

_OVERLOADED: Final = Answer(errors.OVERLOADED)
# Quiet seconds after which a run of rejections is logged as over.
REJECTIONS_QUIET: Final = 5.0


class Rejections:
    """Counts rejections by reason and logs when a run of them starts and when it stops
    (the first admission after ``REJECTIONS_QUIET`` seconds without one): two lines per
    episode, not one per request."""

    def __init__(self, event: str, upstream: str, counter: Any, clock: Clock) -> None:
        self._event = event
        self._upstream = upstream
        self._counter = counter  # the labelled counter, or a callable of the reason
        self._clock = clock
        self._children: dict[str, Any] = {}
        self.total = 0
        self._episode = 0
        self._last = 0.0
        self.rejecting = False

    def rejected(self, reason: str) -> None:
        child = self._children.get(reason)
        if child is None:
            child = self._children[reason] = self._counter(reason)
        child.inc()
        self.total += 1
        self._episode += 1
        self._last = self._clock()
        if not self.rejecting:
            self.rejecting = True
            log.warn(f"{self._event}_started", upstream=self._upstream, reason=reason)

    def admitted(self) -> None:
        """Called on admissions only while rejecting (``rejecting`` is the cheap check)."""
        if self._clock() - self._last >= REJECTIONS_QUIET:
            log.info(f"{self._event}_stopped", upstream=self._upstream, rejected=self._episode)
            self.rejecting = False
            self._episode = 0


class ConcurrencyFilter(Filter):
    name = "concurrency"

    def __init__(
        self,
        settings: OverloadSettings,
        loop: asyncio.AbstractEventLoop,
        sidecar: str,
        upstream: str,
        *,
        clock: Clock,
        adaptive: AdaptiveLimit | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.adaptive = adaptive
        fixed = settings.max_requests
        self.limit = fixed if isinstance(fixed, int) else None  # None: no cap, or adaptive
        self.max_pending = settings.max_pending
        self.queue_timeout = settings.queue_timeout
        self.max_retries = settings.max_active_retries
        self.times_calls = adaptive is not None
        if adaptive is None:
            self.idle_hooks = ("on_response_head", "on_failure")
        self.upstream = upstream
        if adaptive is not None:
            adaptive.on_change = self._limit_moved
            self._logged_limit = adaptive.limit
        self.in_flight = 0
        self.retries_in_flight = 0
        # Waiting exchanges, oldest first, with their queue-timeout timers.
        self.queue: dict[Exchange, asyncio.TimerHandle] = {}
        base = (sidecar, upstream)
        self.rejections = Rejections(
            "overload_rejections",
            upstream,
            lambda reason: obs.OVERLOAD_REJECTED.labels(*base, reason),
            clock,
        )
        if self.limit is not None or adaptive is not None:
            obs.IN_FLIGHT.labels(*base).set_function(lambda: self.in_flight)
            obs.QUEUE_DEPTH.labels(*base).set_function(lambda: len(self.queue))
            obs.CONCURRENCY_LIMIT.labels(*base).set_function(lambda: self.current_limit() or 0)

    def current_limit(self) -> int | None:
        adaptive = self.adaptive
        return adaptive.limit if adaptive is not None else self.limit

    def on_request(self, exchange: Exchange) -> Verdict:
        if exchange.attempt:
            return self._retry(exchange)
        adaptive = self.adaptive
        limit = adaptive.limit if adaptive is not None else self.limit
        if limit is None or (self.in_flight < limit and not self.queue):
            self.in_flight += 1
            exchange.limit_slot = True
            if self.rejections.rejecting:
                self.rejections.admitted()
            return None
        if len(self.queue) < self.max_pending:
            self.queue[exchange] = self.loop.call_later(
                self.queue_timeout, self._timed_out, exchange
            )
            return PARK
        self.rejections.rejected("queue_full" if self.max_pending else "max_requests")
        return _OVERLOADED

    def _retry(self, exchange: Exchange) -> Verdict:
        max_retries = self.max_retries
        if max_retries is None or exchange.retry_slot:
            return None
        if self.retries_in_flight >= max_retries:
            self.rejections.rejected("max_retries")
            return _OVERLOADED  # the failed answer kept meanwhile goes to the client
        self.retries_in_flight += 1
        exchange.retry_slot = True
        return None

    def _timed_out(self, exchange: Exchange) -> None:
        if self.queue.pop(exchange, None) is not None:
            self.rejections.rejected("queue_timeout")
            exchange.reject(_OVERLOADED)

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        adaptive = self.adaptive
        if adaptive is not None and exchange.limit_slot:
            adaptive.sample(elapsed)
        return None

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        adaptive = self.adaptive
        if adaptive is not None and kind == "timeout" and exchange.limit_slot:
            adaptive.sample(elapsed)  # a timeout is the latency signal at its worst
        return None

    def on_done(self, exchange: Exchange) -> None:
        if exchange.retry_slot:
            exchange.retry_slot = False
            self.retries_in_flight -= 1
        if exchange.limit_slot:
            exchange.limit_slot = False
            self.in_flight -= 1
            self._grant()
        elif self.queue:
            timer = self.queue.pop(exchange, None)
            if timer is not None:
                timer.cancel()

    def _limit_moved(self, old: int, new: int) -> None:
        """The adaptive limit moved: a rise lets waiting requests in; a move by half of the
        last logged value (2 at least) is logged."""
        if new > old and self.queue:
            self._grant()
        logged = self._logged_limit
        if abs(new - logged) >= max(2.0, logged / 2):
            self._logged_limit = new
            adaptive = self.adaptive
            assert adaptive is not None
            log.info(
                "concurrency_limit_changed",
                upstream=self.upstream,
                limit=new,
                previous=logged,
                min_rtt_ms=_ms(adaptive.min_rtt),
                sample_rtt_ms=_ms(adaptive.sample_rtt),
            )

    def _grant(self) -> None:
        """Slots free go to the oldest waiting requests (resumed on the next loop turn)."""
        queue = self.queue
        limit = self.current_limit()
        while queue and (limit is None or self.in_flight < limit):
            exchange = next(iter(queue))
            queue.pop(exchange).cancel()
            self.in_flight += 1
            exchange.limit_slot = True
            self.loop.call_soon(exchange.resume, self)

    def status(self) -> dict[str, Any] | None:
        adaptive = self.adaptive
        return {
            "max_requests": self.settings.max_requests,
            "limit": self.current_limit(),
            "in_flight": self.in_flight,
            "max_pending": self.max_pending,
            "queue_depth": len(self.queue),
            "queue_timeout_seconds": self.queue_timeout,
            "max_active_retries": self.max_retries,
            "retries_in_flight": self.retries_in_flight,
            "rejected": self.rejections.total,
            "adaptive": adaptive.snapshot() if adaptive is not None else None,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)
