"""One route, composed once at start-up: listener settings, its filter chain, its clusters
(the upstream, and the fallback), metric children.

Envoy's model (DESIGN.md principle 2): every route is the same engine with its own chain of
filters (retry, breaker, outlier detection) in front of a cluster, so the breaker and the
ambassador differ only in the settings they are built from.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sidecars import observability as obs
from sidecars.observability import get_logger
from sidecars.policies.balancer import Random, balancer
from sidecars.policies.breaker import CircuitBreaker
from sidecars.policies.canary import Rollout
from sidecars.policies.concurrency import AdaptiveLimit, AdaptiveSettings
from sidecars.policies.faults import Drills
from sidecars.policies.outlier import OutlierDetector
from sidecars.policies.window import Clock
from sidecars.proxy.accesslog import AccessLog
from sidecars.proxy.batch import EndOfIteration, Outbox
from sidecars.proxy.cluster import Cluster, Member
from sidecars.proxy.discovery import Discovery
from sidecars.proxy.errors import ErrorResponses
from sidecars.proxy.filters import Filter, FilterChain
from sidecars.proxy.filters.breaker import BreakerFilter
from sidecars.proxy.filters.canary import CanaryFilter
from sidecars.proxy.filters.concurrency import ConcurrencyFilter
from sidecars.proxy.filters.connections import ConnectionCap
from sidecars.proxy.filters.faults import FaultFilter
from sidecars.proxy.filters.outlier import OutlierFilter
from sidecars.proxy.filters.ratelimit import RateLimitFilter
from sidecars.proxy.filters.retry import RetryFilter
from sidecars.proxy.headers import RequestIds, TraceContext
from sidecars.proxy.health import HealthChecker
from sidecars.proxy.metrics import RouteMetrics
from sidecars.proxy.pool import (
    ConnectionPool,
    Connector,
    Dialer,
    PoolSettings,
    client_tls_context,
)
from sidecars.proxy.resolver import Resolver
from sidecars.proxy.tcp_faults import FaultyConnector
from sidecars.settings import OverloadSettings, ProxySettings, RouteSettings, Upstream

if TYPE_CHECKING:
    from sidecars.proxy.shared_state import SharedCircuitState, SharedRollout

log = get_logger("sidecars.proxy")


class ClientSide(Protocol):
    """What a route asks of its client connections when draining (HTTP and TCP alike)."""

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class Route:
    """Collaborators are passed in: ``clock`` (monotonic seconds) for every policy and the
    cluster, ``timer_clock`` for connection deadlines, ``resolver`` for discovery,
    ``connector`` to open upstream connections, ``randrange`` for the balancer, the backoff
    jitter and the fault draws, ``randbytes`` for trace and span ids, and ``drills``: the
    process's run-time faults (admin ``/faults``)."""

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
        clock: Clock = time.monotonic,
        timer_clock: Clock | None = None,
        connector: Connector | None = None,
        randrange: Random = random.randrange,
        randbytes: Callable[[int], bytes] | None = None,
        drills: Drills | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.metrics_sidecar = proxy.sidecar
        self.json_name = orjson.dumps(settings.name)  # for access lines
        self.loop = loop
        self.clock = clock
        # Connection deadlines (head, idle, header timeouts) are on this clock and woken by
        # the loop's timers; it is the loop's own unless a test drives its own.
        self.timer_clock: Clock = loop.time if timer_clock is None else timer_clock
        self.metrics = RouteMetrics(proxy.sidecar, settings.name)
        self.outbox = Outbox(end_of_iteration)
        self.access_log = access_log
        self.request_ids = request_ids
        self.trace_context = TraceContext(randbytes) if proxy.trace_context else None
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
        self.max_retry_body = settings.retry.max_retry_body

        canary_settings = settings.canary
        any_tls = (
            settings.upstream.tls
            or (settings.fallback is not None and settings.fallback.tls)
            or (canary_settings is not None and canary_settings.upstream.tls)
        )
        tls = client_tls_context(settings.upstream_ca_file) if any_tls else None
        self.connector: Connector = connector if connector is not None else Dialer(loop, tls)
        pool_settings = PoolSettings(
            idle_timeout=proxy.upstream_idle_timeout,
            max_idle=proxy.upstream_max_idle,
            body_idle_timeout=proxy.idle_timeout,
            # An upstream's head may be larger than what clients may send, not unbounded.
            max_head_size=max(proxy.max_header_size, 256 * 1024),
        )
        cluster_settings = settings.cluster

        def cluster(name: str, upstream: Upstream) -> tuple[Cluster, Discovery]:
            prefix = upstream.path_prefix.encode()

            def pool(member: Member) -> ConnectionPool:
                return ConnectionPool(
                    loop,
                    self.connector,
                    member.target,
                    self.outbox,
                    pool_settings,
                    authority=member.authority,
                    path_prefix=prefix,
                    opened_counter=self.metrics.upstream_connections_opened,
                    timer_clock=self.timer_clock,
                )

            built = Cluster(
                name,
                proxy.sidecar,
                balancer(cluster_settings.lb, randrange),
                pool,
                clock=clock,
                health_checked=cluster_settings.health_checks,
                measures_latency=cluster_settings.lb == "ewma",
            )
            return built, Discovery(built, upstream, resolver, proxy.dns_ttl)

        self.cluster, discovery = cluster(settings.name, settings.upstream)
        self.discoveries = [discovery]
        self.fallback: Cluster | None = None
        if settings.fallback is not None:
            self.fallback, discovery = cluster(f"{settings.name}/fallback", settings.fallback)
            self.discoveries.append(discovery)
        self.canary_cluster: Cluster | None = None
        if canary_settings is not None:
            self.canary_cluster, discovery = cluster(
                f"{settings.name}/canary", canary_settings.upstream
            )
            self.discoveries.append(discovery)
        self.health_checks = [
            HealthChecker(c, cluster_settings, self.connector, tcp=settings.protocol == "tcp")
            for c in self.clusters
            if cluster_settings.health_checks
        ]

        filters: list[Filter] = []
        # First: its REPLAY verdict on a failure ends the round before any other filter
        # counts the attempt.
        self.retry = RetryFilter(
            settings.retry,
            self.metrics,
            settings.name,
            clock=clock,
            random=lambda: randrange(1 << 53) / (1 << 53),
        )
        filters.append(self.retry)
        # Overload protection (issue 14): before the breaker, so that a request refused or
        # waiting holds no breaker permit; the rate limit first, so that a refused request
        # takes no queue place.
        self.rate_limit: RateLimitFilter | None = None
        self.concurrency: ConcurrencyFilter | None = None
        overload = settings.overload
        if overload.rate_limit is not None and settings.protocol == "http":
            self.rate_limit = RateLimitFilter(overload, proxy.sidecar, settings.name, clock=clock)
            filters.append(self.rate_limit)
        if settings.protocol == "http" and (
            overload.max_requests is not None or overload.max_active_retries is not None
        ):
            self.concurrency = ConcurrencyFilter(
                overload,
                loop,
                proxy.sidecar,
                settings.name,
                clock=clock,
                adaptive=_adaptive_limit(overload, clock, randrange),
            )
            filters.append(self.concurrency)
        self.connection_cap: ConnectionCap | None = None
        if overload.max_connections is not None and settings.protocol == "tcp":
            self.connection_cap = ConnectionCap(
                overload.max_connections, proxy.sidecar, settings.name, clock=clock
            )
        # Right after the retry filter: it steers the request (exchange.cluster) before the
        # breaker, which guards only the stable cluster, is asked.
        self.canary: CanaryFilter | None = None
        if canary_settings is not None and self.canary_cluster is not None:
            self.canary = CanaryFilter(
                Rollout(canary_settings, clock=clock),
                self.cluster,
                self.canary_cluster,
                header=canary_settings.header,
                sidecar=proxy.sidecar,
                upstream=settings.name,
                randrange=randrange,
            )
            filters.append(self.canary)
        self.breaker: CircuitBreaker | None = None
        if settings.breaker.enabled:
            self.breaker = CircuitBreaker(
                settings.breaker,
                clock=clock,
                on_transition=self._on_transition,
                trial_permit_ttl=settings.timeout,
            )
            filters.append(BreakerFilter(self.breaker, self.metrics, self.cluster, self.fallback))
        self.outlier: OutlierFilter | None = None
        if cluster_settings.outlier.consecutive_failures > 0:
            self.outlier = OutlierFilter(
                OutlierDetector(cluster_settings.outlier),
                settings.breaker.slow_call,
                _Ejections(proxy.sidecar),
            )
            if all(d.static for d in self.discoveries) and all(
                len(c.endpoints) * cluster_settings.outlier.max_ejected_percent < 100
                for c in self.clusters
            ):
                # Fixed endpoints, too few to eject any (one, at 50%): nothing to watch.
                self.outlier.idle_hooks = ("on_response_head", "on_failure")
            filters.append(self.outlier)
        # Fault injection: last, so the retry filter, the breaker and outlier detection judge
        # an injected attempt as the endpoint's.
        self.drills = drills if drills is not None else Drills(clock=clock)
        self.faults: FaultFilter | None = None
        # What TCP-mode relays dial through (health checks use ``connector`` itself).
        self.relay_connector: Connector = self.connector
        self.relay_faults: FaultyConnector | None = None
        if settings.protocol == "tcp":
            self.relay_connector = self.relay_faults = FaultyConnector(
                self.connector,
                settings.faults,
                self.drills,
                sidecar=proxy.sidecar,
                upstream=settings.name,
                random=lambda: randrange(1 << 53) / (1 << 53),
            )
        else:
            self.faults = FaultFilter(
                settings.faults,
                self.drills,
                sidecar=proxy.sidecar,
                upstream=settings.name,
                loop=loop,
                random=lambda: randrange(1 << 53) / (1 << 53),
            )
            filters.append(self.faults)
        # Judged even with the breaker off: the attempts metric tells failures apart.
        self.chain = FilterChain(
            filters,
            failure_statuses=settings.breaker.failure_statuses,
            times_calls=self.cluster.measures_latency,
        )
        if self.faults is not None:
            self.drills.on_change(self.chain.refresh)  # the fault filter's hooks come and go
        self.metrics.show_state("closed")
        self.local_authorities = _local_authorities(settings)
        self.connections: set[ClientSide] = set()
        self.in_flight = 0
        self.shared_state: SharedCircuitState | None = None  # when P_STATE_REDIS_URL is set
        self.shared_rollout: SharedRollout | None = None  # the same, with a canary

    @property
    def clusters(self) -> list[Cluster]:
        return [c for c in (self.cluster, self.fallback, self.canary_cluster) if c is not None]

    async def start(self) -> None:
        """Find the endpoints (the first DNS lookups), then keep them up to date and checked."""
        for discovery in self.discoveries:
            await discovery.start(self.connect_timeout)
        for checker in self.health_checks:
            await checker.start()
        if self.canary is not None:
            self.canary.start()
        overload = self.settings.overload
        if self.rate_limit is not None and overload.rate_limit_redis_url is not None:
            from sidecars.proxy.shared_rate import SharedRateLimit  # noqa: PLC0415

            self.rate_limit.shared = SharedRateLimit(
                overload.rate_limit_redis_url,
                f"sidecars:{self.metrics_sidecar}:{self.name}:rate",
                self.rate_limit.rate,
                overload.burst,
                clock=self.clock,
            )

    async def stop(self) -> None:
        for discovery in self.discoveries:
            await discovery.stop()
        for checker in self.health_checks:
            await checker.stop()
        if self.canary is not None:
            await self.canary.stop()
        if self.rate_limit is not None and self.rate_limit.shared is not None:
            await self.rate_limit.shared.close()

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
        for cluster in self.clusters:
            cluster.close()

    def status(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "listen": str(settings.listen),
            "protocol": settings.protocol,
            "upstream": str(settings.upstream),
            "fallback": str(settings.fallback) if settings.fallback else None,
            "lb": settings.cluster.lb,
            "breaker": None,
            "outlier": None,
            # HTTP routes' faults are the fault filter's part; TCP ones the relay connector's.
            "faults": self.relay_faults.status() if self.relay_faults is not None else None,
            "canary": None,
            "rate_limit": None,
            "concurrency": None,
            **self.chain.status(),  # breaker, retry_budget, outlier, canary, limits: each filter's
            "shared_state": self.shared_state.snapshot() if self.shared_state else None,
            "max_connections": self.connection_cap.status() if self.connection_cap else None,
            "connections": len(self.connections),
            "in_flight": self.in_flight,
            "answered": self.metrics.answered_total,
            "retries": self.retry.retries,
            "pool": _pool_totals(self.cluster),
            "endpoints": self.cluster.snapshot()["endpoints"],
            "fallback_endpoints": (
                self.fallback.snapshot()["endpoints"] if self.fallback is not None else None
            ),
            "canary_shared_state": (
                self.shared_rollout.snapshot() if self.shared_rollout is not None else None
            ),
            "canary_endpoints": (
                self.canary_cluster.snapshot()["endpoints"]
                if self.canary_cluster is not None
                else None
            ),
            "dns": [
                {"lookups": d.lookups, "failures": d.failures}
                for d in self.discoveries
                if not d.static
            ],
        }


def _adaptive_limit(
    overload: OverloadSettings, clock: Clock, randrange: Random
) -> AdaptiveLimit | None:
    if not overload.adaptive:
        return None
    return AdaptiveLimit(
        AdaptiveSettings(
            min_limit=overload.adaptive_min_limit, max_limit=overload.adaptive_max_limit
        ),
        clock=clock,
        random=lambda: randrange(1 << 53) / (1 << 53),
    )


def _pool_totals(cluster: Cluster) -> dict[str, int]:
    endpoints = list(cluster.all_endpoints())
    return {
        "idle": sum(e.pool.idle_count for e in endpoints),
        "opened": sum(e.pool.opened for e in endpoints),
    }


class _Ejections:
    """sidecar_outlier_ejections_total children by (cluster name, reason)."""

    def __init__(self, sidecar: str) -> None:
        self._sidecar = sidecar

    def __getitem__(self, key: tuple[str, str]) -> Any:
        cluster, reason = key
        return obs.OUTLIER_EJECTIONS.labels(self._sidecar, cluster, reason)


def _local_authorities(settings: RouteSettings) -> frozenset[bytes]:
    """Authorities an absolute-form request may name: this listener or the upstream."""
    port = settings.listen.port
    names = {settings.upstream.authority, f"{settings.upstream.host}:{settings.upstream.port}"}
    for host in (settings.listen.host, "localhost", "127.0.0.1", "[::1]"):
        names.add(f"{host}:{port}")
    if port == 80:
        names.update({settings.listen.host, "localhost", "127.0.0.1"})
    return frozenset(name.lower().encode() for name in names)
