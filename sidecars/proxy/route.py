"""One route, composed once at start-up: listener settings, policies, pools, metric children.

Envoy's model (DESIGN.md principle 2): every route is the same engine with its own chain of
timeout -> retry -> breaker -> upstream, so the breaker and the ambassador differ only in the
settings they are built from.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sidecars.observability import get_logger
from sidecars.policies.breaker import CircuitBreaker
from sidecars.policies.retry import BackoffSchedule, RetryBudget, RetryPolicy
from sidecars.proxy.accesslog import AccessLog
from sidecars.proxy.batch import EndOfIteration, Outbox
from sidecars.proxy.errors import ErrorResponses
from sidecars.proxy.headers import RequestIds
from sidecars.proxy.metrics import RouteMetrics
from sidecars.proxy.pool import ConnectionPool, Dialer
from sidecars.proxy.resolver import Resolver
from sidecars.settings import ProxySettings, RouteSettings, Upstream

if TYPE_CHECKING:
    from sidecars.proxy.shared_state import SharedCircuitState

log = get_logger("sidecars.proxy")


class ClientSide(Protocol):
    """What a route asks of its client connections when draining (HTTP and TCP alike)."""

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class Route:
    def __init__(
        self,
        proxy: ProxySettings,
        settings: RouteSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        resolver: Resolver,
        request_ids: RequestIds,
        access_log: AccessLog | None,
        end_of_iteration: EndOfIteration,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.json_name = orjson.dumps(settings.name)  # for access lines
        self.loop = loop
        self.metrics = RouteMetrics(proxy.sidecar, settings.name, end_of_iteration)
        self.outbox = Outbox(end_of_iteration)
        self.access_log = access_log
        self.request_ids = request_ids
        self.errors = ErrorResponses(settings.name)
        self.timeout = settings.timeout
        self.per_try_timeout = settings.per_try_timeout
        # The first attempt's budget until response headers (later ones get what is left).
        per_try = settings.per_try_timeout
        self.first_try_timeout = (
            settings.timeout if per_try is None else min(settings.timeout, per_try)
        )
        self.connect_timeout = settings.connect_timeout
        self.max_header_size = proxy.max_header_size
        self.max_body = proxy.max_body
        self.header_timeout = proxy.header_timeout
        self.idle_timeout = proxy.idle_timeout

        retry = settings.retry
        self.max_attempts = retry.max_attempts
        self.max_retry_body = retry.max_retry_body
        self.retry_statuses = retry.retry_on.statuses
        self.budget = RetryBudget(retry.budget_ratio, retry.budget_min_per_second)
        self.retry = RetryPolicy(
            retry, self.budget, BackoffSchedule(retry.backoff_base, retry.backoff_max)
        )
        # Judged even with the breaker off: the attempts metric tells failures apart.
        self.failure_statuses = settings.breaker.failure_statuses
        self.breaker: CircuitBreaker | None = None
        if settings.breaker.enabled:
            self.breaker = CircuitBreaker(
                settings.breaker,
                on_transition=self._on_transition,
                trial_permit_ttl=settings.timeout,
            )
        self.metrics.show_state("closed")

        def pool(upstream: Upstream) -> ConnectionPool:
            dialer = Dialer(loop, upstream, resolver, self.metrics, settings.upstream_ca_file)
            return ConnectionPool(
                dialer,
                self.outbox,
                idle_timeout=proxy.upstream_idle_timeout,
                max_idle=proxy.upstream_max_idle,
                body_idle_timeout=proxy.idle_timeout,
                # An upstream's head may be larger than what clients may send, not unbounded.
                max_head_size=max(proxy.max_header_size, 256 * 1024),
            )

        self.pool = pool(settings.upstream)
        self.fallback_pool = pool(settings.fallback) if settings.fallback is not None else None
        self.local_authorities = _local_authorities(settings)
        self.connections: set[ClientSide] = set()
        self.in_flight = 0
        self.retries = 0
        self.shared_state: SharedCircuitState | None = None  # when P_STATE_REDIS_URL is set

    def _on_transition(self, old: str, new: str, reason: str) -> None:
        self.metrics.show_state(new)
        self.metrics.transitions[(old, new)].inc()
        # Opening is the news an operator acts on; half-opening and closing are recovery.
        emit = log.warn if new == "open" else log.info
        emit("circuit_transition", upstream=self.name, reason=reason, **{"from": old, "to": new})

    def drain(self) -> None:
        for connection in list(self.connections):
            connection.drain()

    def close(self) -> None:
        """The end of a drain: cut what is still open."""
        for connection in list(self.connections):
            connection.abort()
        self.pool.close()
        if self.fallback_pool is not None:
            self.fallback_pool.close()

    def status(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "listen": str(settings.listen),
            "protocol": settings.protocol,
            "upstream": str(settings.upstream),
            "fallback": str(settings.fallback) if settings.fallback else None,
            "breaker": self.breaker.snapshot() if self.breaker is not None else None,
            "shared_state": self.shared_state.snapshot() if self.shared_state else None,
            "retry_budget": self.budget.snapshot(),
            "connections": len(self.connections),
            "in_flight": self.in_flight,
            "answered": self.metrics.answered_total,
            "retries": self.retries,
            "pool": self.pool.snapshot(),
            "fallback_pool": self.fallback_pool.snapshot() if self.fallback_pool else None,
        }


def _local_authorities(settings: RouteSettings) -> frozenset[bytes]:
    """Authorities an absolute-form request may name: this listener or the upstream."""
    port = settings.listen.port
    names = {settings.upstream.authority, f"{settings.upstream.host}:{settings.upstream.port}"}
    for host in (settings.listen.host, "localhost", "127.0.0.1", "[::1]"):
        names.add(f"{host}:{port}")
    if port == 80:
        names.update({settings.listen.host, "localhost", "127.0.0.1"})
    return frozenset(name.lower().encode() for name in names)
