"""TCP mode's connection cap (``P_MAX_CONNECTIONS``): past it a new client connection is
closed at once, before any dial, and counted (``sidecar_overload_rejected_total{reason=
"max_connections"}``). TCP relays do not run the HTTP filter chain, so the relay asks this
object when a connection arrives."""

from __future__ import annotations

from typing import Any

from sidecars import observability as obs
from sidecars.policies.window import Clock
from sidecars.proxy.filters.concurrency import Rejections


class ConnectionCap:
    def __init__(self, max_connections: int, sidecar: str, upstream: str, *, clock: Clock) -> None:
        self.max_connections = max_connections
        counter = obs.OVERLOAD_REJECTED.labels(sidecar, upstream, "max_connections")
        self.rejections = Rejections("overload_rejections", upstream, lambda _: counter, clock)

    def admits(self, open_relays: int) -> bool:
        """Whether a connection that makes ``open_relays`` (itself included) may be relayed."""
        if open_relays <= self.max_connections:
            if self.rejections.rejecting:
                self.rejections.admitted()
            return True
        self.rejections.rejected("max_connections")
        return False

    def status(self) -> dict[str, Any]:
        return {"max_connections": self.max_connections, "rejected": self.rejections.total}
