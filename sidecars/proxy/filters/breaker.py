"""The circuit breaker as a filter: admission (a permit per attempt), the verdict of every
attempt, and the fallback cluster while the circuit is open.

The breaker is cluster-level: it judges the cluster as a whole, so one sick endpoint among
healthy ones is the outlier filter's business, not a reason to open the circuit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecars.policies.breaker import CircuitBreaker
from sidecars.proxy import errors
from sidecars.proxy.filters import Answer, Filter, Refusals

if TYPE_CHECKING:
    from sidecars.policies.retry import RetryDecision
    from sidecars.proxy.cluster import Cluster
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.metrics import RouteMetrics


class BreakerFilter(Filter):
    name = "breaker"

    def __init__(
        self,
        breaker: CircuitBreaker,
        metrics: RouteMetrics,
        cluster: Cluster,
        fallback: Cluster | None,
    ) -> None:
        self.breaker = breaker
        self.metrics = metrics
        self.cluster = cluster
        self.fallback = fallback
        self.times_calls = breaker.times_calls
        self._refusals = Refusals(errors.CIRCUIT_OPEN)  # the open circuit's answers

    def on_request(self, exchange: Exchange) -> Answer | Cluster | None:
        if exchange.cluster is not self.cluster:
            return None  # only its own cluster is guarded (not the fallback, not a canary)
        permit = self.breaker.acquire()
        if permit is not None:
            exchange.permit = permit
            return None
        self.metrics.circuit_rejected()
        fallback = self.fallback
        if fallback is None:
            # Whole seconds rounded up, at least 1 (cheaper than max(1, math.ceil(...))).
            return self._refusals.get(int(-(-self.breaker.retry_after() // 1)) or 1)
        self.metrics.fallback_requests.inc()
        return fallback

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        permit = exchange.permit
        if permit is not None:
            exchange.permit = None
            if failed:
                self.breaker.record_failure(permit, "status", elapsed)
            else:
                self.breaker.record_success(permit, elapsed)
        return None

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        permit = exchange.permit
        if permit is not None:
            exchange.permit = None
            self.breaker.record_failure(permit, kind, elapsed)
        return None

    def on_done(self, exchange: Exchange) -> None:
        permit = exchange.permit
        if permit is not None:
            exchange.permit = None
            self.breaker.release(permit)  # no verdict: the attempt was abandoned

    def status(self) -> dict[str, Any] | None:
        return self.breaker.snapshot()
