"""A cluster: the endpoints behind one upstream name, and the choice among them.

Cluster -> Endpoint -> ConnectionPool -> Connection. Membership comes from discovery
(``sidecars.proxy.discovery``: literal addresses, DNS A/AAAA or SRV records, re-resolved);
an endpoint leaves the balancing when it is ejected by outlier detection
(``sidecars.proxy.filters.outlier``), fails its active health checks
(``sidecars.proxy.health``) or disappears from discovery (then it drains: it finishes what it
has and its pooled connections close). When too few endpoints are left to balance over, the
cluster balances over all of them (Envoy's panic mode) rather than over none.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sidecars import observability as obs
from sidecars.observability import get_logger
from sidecars.policies.balancer import Balancer, PeakEwma
from sidecars.policies.outlier import OutlierRecord
from sidecars.policies.window import Clock
from sidecars.proxy.pool import ConnectionPool, Target

log = get_logger("sidecars.proxy.cluster")

ENDPOINT_STATES = ("healthy", "ejected", "unhealthy", "draining")
# Below this share of endpoints able to take traffic, balance over every endpoint.
PANIC_THRESHOLD_PERCENT = 50


@dataclass(frozen=True, slots=True)
class Member:
    """One endpoint as discovery found it."""

    target: Target
    authority: bytes  # the Host header sent to it


class Endpoint:
    __slots__ = (
        "cluster",
        "ever_healthy",
        "ewma",
        "failures",
        "health_failures",
        "health_passes",
        "healthy",
        "in_flight",
        "member",
        "name",
        "outlier",
        "pool",
        "removed",
        "requests",
    )

    def __init__(self, cluster: Cluster, member: Member, pool: ConnectionPool) -> None:
        self.cluster = cluster
        self.member = member
        self.name = str(member.target)
        self.pool = pool
        self.in_flight = 0
        self.requests = 0  # attempts sent to it
        self.failures = 0
        self.ewma = PeakEwma(cluster.clock)
        self.outlier = OutlierRecord()
        self.healthy = not cluster.health_checked  # checked endpoints start untested
        self.ever_healthy = False
        self.health_passes = 0
        self.health_failures = 0
        self.removed = False

    def cost(self) -> float:
        return self.ewma.cost(self.in_flight)

    def responded(self, failed: bool, elapsed: float) -> None:
        """An attempt got its response head (``elapsed`` is read only by an ewma cluster)."""
        if failed:
            self.failures += 1
        elif self.cluster.measures_latency:
            self.ewma.observe(elapsed)

    def released(self) -> None:
        """An attempt on this endpoint is over (answered, failed or abandoned)."""
        self.in_flight -= 1
        if self.removed and self.in_flight == 0:
            self.cluster.forget(self)

    @property
    def ejected(self) -> bool:
        return self.outlier.ejected_until != 0.0

    @property
    def state(self) -> str:
        if self.removed:
            return "draining"
        if self.ejected:
            return "ejected"
        return "healthy" if self.healthy else "unhealthy"

    def snapshot(self) -> dict[str, Any]:
        outlier = self.outlier
        until = outlier.ejected_until
        return {
            "address": self.name,
            "state": self.state,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "ewma_latency_ms": round(self.ewma.value * 1000, 3),
            "times_ejected": outlier.times_ejected,
            "ejected_for_seconds": (
                round(max(0.0, until - self.cluster.clock()), 3) if until else None
            ),
            "pool": self.pool.snapshot(),
        }


PoolFactory = Callable[[Member], ConnectionPool]


class Cluster:
    def __init__(
        self,
        name: str,
        sidecar: str,
        balancer: Balancer,
        pool_factory: PoolFactory,
        *,
        clock: Clock = time.monotonic,
        health_checked: bool = False,
        measures_latency: bool = False,
    ) -> None:
        self.name = name
        self.sidecar = sidecar
        self.clock = clock
        self.health_checked = health_checked
        self.measures_latency = measures_latency
        self._balancer = balancer
        self._pool_factory = pool_factory
        self.endpoints: dict[Target, Endpoint] = {}  # the members, by address
        self.draining: list[Endpoint] = []
        # What pick() chooses from: the endpoints that may take traffic, or every member when
        # too few may (panic mode).
        self._pickable: list[Endpoint] = []
        # The one endpoint pick() can only choose (one pickable, none ejected to return),
        # taken without a balancer; None otherwise.
        self.sole: Endpoint | None = None
        self.serving = False  # some endpoint is healthy and not ejected
        self._ejected = 0
        self._next_return = 0.0  # the earliest end of an ejection
        self._listeners: list[Callable[[Endpoint, str], None]] = []
        # Why the last lookup of a name failed ("" when none did): the answer's detail while
        # the cluster has no endpoint.
        self.discovery_error = ""
        self._handle = obs.WeakHandle(self)
        CLUSTERS.add(self._handle)

    # -- the request path -------------------------------------------------------------------

    def pick(self, tried: Sequence[Endpoint] | None) -> Endpoint | None:
        """The endpoint for the next attempt, not one of ``tried`` when another is left."""
        endpoint = self.sole  # the common cluster of one: nothing to weigh or return
        if endpoint is None:
            endpoint = self._choose(tried)
            if endpoint is None:
                return None
        endpoint.in_flight += 1
        endpoint.requests += 1
        return endpoint

    def _choose(self, tried: Sequence[Endpoint] | None) -> Endpoint | None:
        if self._ejected and self.clock() >= self._next_return:
            self._return_ejected()
        candidates = self._pickable
        if tried is not None:
            rest = [e for e in candidates if e not in tried]
            if rest:
                candidates = rest
        count = len(candidates)
        if count == 1:
            return candidates[0]
        return self._balancer.choose(candidates) if count else None

    # -- membership -------------------------------------------------------------------------

    def update(self, members: Sequence[Member]) -> None:
        """Discovery's latest answer: new endpoints join, missing ones drain."""
        wanted = {member.target: member for member in members}
        for target, endpoint in list(self.endpoints.items()):
            if target not in wanted or wanted[target] != endpoint.member:
                del self.endpoints[target]
                self._remove(endpoint)
        for target, member in wanted.items():
            if target not in self.endpoints:
                endpoint = Endpoint(self, member, self._pool_factory(member))
                self.endpoints[target] = endpoint
                log.info("endpoint_added", upstream=self.name, endpoint=endpoint.name)
                self._announce(endpoint, "added")
        self._refresh()

    def _remove(self, endpoint: Endpoint) -> None:
        endpoint.removed = True
        if endpoint.ejected:
            self._ejected -= 1
        endpoint.pool.close()
        log.info(
            "endpoint_removed",
            upstream=self.name,
            endpoint=endpoint.name,
            in_flight=endpoint.in_flight,
        )
        if endpoint.in_flight:
            self.draining.append(endpoint)
        self._announce(endpoint, "removed")

    def forget(self, endpoint: Endpoint) -> None:
        """A removed endpoint finished its last request."""
        if endpoint in self.draining:
            self.draining.remove(endpoint)

    def close(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.pool.close()

    def on_change(self, listener: Callable[[Endpoint, str], None]) -> None:
        """Call ``listener(endpoint, "added"|"removed")`` on membership changes."""
        self._listeners.append(listener)

    def _announce(self, endpoint: Endpoint, change: str) -> None:
        for listener in self._listeners:
            listener(endpoint, change)

    # -- ejection and health ----------------------------------------------------------------

    @property
    def ejected_count(self) -> int:
        return self._ejected

    def eject(self, endpoint: Endpoint, until: float, reason: str) -> None:
        """Take ``endpoint`` out of the balancing until ``until`` (the outlier filter's call,
        its record already updated)."""
        self._ejected += 1
        if self._ejected == 1 or until < self._next_return:
            self._next_return = until
        log.warn(
            "endpoint_ejected",
            upstream=self.name,
            endpoint=endpoint.name,
            reason=reason,
            times_ejected=endpoint.outlier.times_ejected,
            seconds=round(until - self.clock(), 3),
        )
        self._refresh()

    def _return_ejected(self) -> None:
        now = self.clock()
        self._next_return = 0.0
        for endpoint in self.endpoints.values():
            record = endpoint.outlier
            if not record.ejected_until:
                continue
            if now >= record.ejected_until:
                record.ejected_until = 0.0
                self._ejected -= 1
                log.info("endpoint_returned", upstream=self.name, endpoint=endpoint.name)
            elif not self._next_return or record.ejected_until < self._next_return:
                self._next_return = record.ejected_until
        self._refresh()

    def set_healthy(self, endpoint: Endpoint, healthy: bool) -> None:
        if endpoint.healthy != healthy:
            endpoint.healthy = healthy
            emit = log.info if healthy else log.warn
            emit(
                "endpoint_healthy" if healthy else "endpoint_unhealthy",
                upstream=self.name,
                endpoint=endpoint.name,
            )
            self._refresh()

    def _refresh(self) -> None:
        members = list(self.endpoints.values())
        candidates = [e for e in members if e.healthy and not e.outlier.ejected_until]
        panic = not candidates or len(candidates) * 100 < len(members) * PANIC_THRESHOLD_PERCENT
        self.serving = bool(candidates)
        pickable = self._pickable = members if panic else candidates
        self.sole = pickable[0] if len(pickable) == 1 and not self._ejected else None

    # -- reporting --------------------------------------------------------------------------

    def state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ENDPOINT_STATES, 0)
        for endpoint in self.endpoints.values():
            counts[endpoint.state] += 1
        counts["draining"] = len(self.draining)
        return counts

    def all_endpoints(self) -> Iterator[Endpoint]:
        yield from self.endpoints.values()
        yield from self.draining

    def snapshot(self) -> dict[str, Any]:
        return {
            "endpoints": [endpoint.snapshot() for endpoint in self.all_endpoints()],
            "states": self.state_counts(),
        }


# Every cluster of the process, for the scrape-time endpoint metrics (observability).
CLUSTERS: weakref.WeakSet[obs.WeakHandle[Cluster]] = weakref.WeakSet()


def _samples() -> Iterator[obs.EndpointSample]:
    for handle in list(CLUSTERS):
        cluster = handle.owner
        yield (
            cluster.sidecar,
            cluster.name,
            cluster.state_counts(),
            [(e.name, e.requests, e.failures, e.in_flight) for e in cluster.all_endpoints()],
        )


obs.ENDPOINTS.source = _samples
