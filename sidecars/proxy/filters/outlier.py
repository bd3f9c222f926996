"""Passive outlier detection as a filter: every attempt's outcome is told to the endpoint's
record (``sidecars.policies.outlier``), and an endpoint whose failures in a row reach
``P_OUTLIER_CONSECUTIVE_FAILURES`` is ejected from its cluster for a while.

A failure is what the route counts as one (``P_FAILURE_STATUSES``, connect failures,
resets, timeouts) and, with ``P_SLOW_CALL``, a call slower than that: a replica that hangs is
ejected too. This module is the whole feature on the request path: the exchange knows
nothing of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sidecars.observability import get_logger
from sidecars.policies.outlier import OutlierDetector
from sidecars.proxy.filters import Filter

if TYPE_CHECKING:
    from sidecars.policies.retry import RetryDecision
    from sidecars.proxy.cluster import Endpoint
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.exchange import Exchange

log: Final = get_logger("sidecars.proxy.cluster")


class OutlierFilter(Filter):
    name = "outlier"

    def __init__(self, detector: OutlierDetector, slow_call: float | None, ejections: Any) -> None:
        """``ejections``: the sidecar_outlier_ejections_total children, by (cluster name,
        reason): one filter serves the route's cluster and its fallback."""
        self.detector = detector
        self.slow_call = slow_call
        self.times_calls = slow_call is not None
        self._ejections = ejections
        self.skipped = 0  # ejections the max-ejected-percent rule prevented

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        endpoint = exchange.endpoint
        if endpoint is None:
            return None
        slow = self.slow_call
        if failed:
            self._failed(endpoint, "consecutive_failures")
        elif slow is not None and elapsed > slow:
            self._failed(endpoint, "slow_calls")
        else:
            self.succeeded(endpoint)
        return None

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        endpoint = exchange.endpoint
        if endpoint is not None:
            self._failed(endpoint, "consecutive_failures")
        return None

    @staticmethod
    def succeeded(endpoint: Endpoint) -> None:
        """A call that went well (TCP mode reports its relays here)."""
        endpoint.outlier.consecutive_failures = 0

    def failed(self, endpoint: Endpoint) -> None:
        """A call that failed (TCP mode reports its dials and resets here)."""
        self._failed(endpoint, "consecutive_failures")

    def _failed(self, endpoint: Endpoint, reason: str) -> None:
        detector = self.detector
        if not detector.failed(endpoint.outlier) or endpoint.ejected or endpoint.removed:
            return
        cluster = endpoint.cluster
        if not detector.may_eject(len(cluster.endpoints), cluster.ejected_count):
            self.skipped += 1
            return
        until = detector.eject(endpoint.outlier, cluster.clock())
        self._ejections[cluster.name, reason].inc()
        cluster.eject(endpoint, until, reason)

    def status(self) -> dict[str, Any] | None:
        settings = self.detector.settings
        return {
            "consecutive_failures": settings.consecutive_failures,
            "base_ejection_seconds": settings.base_ejection,
            "max_ejection_seconds": settings.max_ejection,
            "max_ejected_percent": settings.max_ejected_percent,
            "ejections_prevented": self.skipped,
        }
