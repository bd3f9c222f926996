"""Cluster membership from the upstream URLs: literal addresses, host names (every A/AAAA
record an endpoint) and SRV names (``_service._proto.name``: host and port of every endpoint
from the SRV records), looked up again every ``P_DNS_TTL`` or the records' TTL, whichever is
shorter.

A lookup that fails keeps what the name had before: a DNS blip does not empty a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from sidecars.observability import get_logger
from sidecars.proxy.cluster import Cluster, Member
from sidecars.proxy.pool import Target
from sidecars.proxy.resolver import NO_TTL, Resolver, literal
from sidecars.settings import Upstream

log = get_logger("sidecars.proxy.cluster")

# Re-resolution never comes faster than this (P_DNS_TTL=0, or records with TTL 0), nor slower
# than P_DNS_TTL; a name never resolved yet is asked again after _RETRY.
_MIN_INTERVAL = 1.0
_RETRY = 1.0


def _authority(host: str, port: int, scheme: str) -> bytes:
    default = {"http": 80, "https": 443}.get(scheme)
    shown = f"[{host}]" if ":" in host else host
    return (shown if port == default else f"{shown}:{port}").encode()


class Discovery:
    """Keeps one cluster's members up to date from its URLs."""

    def __init__(
        self,
        cluster: Cluster,
        upstream: Upstream,
        resolver: Resolver,
        ttl: float,
    ) -> None:
        self.cluster = cluster
        self.urls = upstream.urls
        self._resolver = resolver
        self._ttl = ttl
        # The members each URL had at its last successful lookup (None: never resolved).
        self._found: list[list[Member] | None] = [None] * len(self.urls)
        self._task: asyncio.Task[None] | None = None
        self.lookups = 0
        self.failures = 0
        self.static = all(literal(url.host) is not None for url in self.urls)
        if self.static:
            self._found = [self._literal(url) for url in self.urls]
            cluster.update(self.members())

    def members(self) -> list[Member]:
        return [member for found in self._found if found for member in found]

    @staticmethod
    def _literal(url: Upstream) -> list[Member]:
        address = literal(url.host)
        assert address is not None
        target = Target(address[0], address[1], url.port, url.host if url.tls else None)
        return [Member(target, url.authority.encode())]

    async def refresh(self) -> float:
        """Look every name up once and update the cluster; returns when to look again."""
        next_in = max(self._ttl, _MIN_INTERVAL)
        for index, url in enumerate(self.urls):
            if literal(url.host) is not None:
                self._found[index] = self._literal(url)
                continue
            self.lookups += 1
            try:
                members, ttl = await self._lookup(url)
            except OSError as error:
                self.failures += 1
                self.cluster.discovery_error = f"{type(error).__name__}: {error}"
                log.warn(
                    "dns_lookup_failed", upstream=self.cluster.name, name=url.host, error=str(error)
                )
                if self._found[index] is None:
                    next_in = min(next_in, _RETRY)
                continue
            self._found[index] = members
            self.cluster.discovery_error = ""
            if ttl != NO_TTL:
                next_in = min(next_in, max(ttl, _MIN_INTERVAL))
        self.cluster.update(self.members())
        return next_in

    async def _lookup(self, url: Upstream) -> tuple[list[Member], float]:
        resolver = self._resolver
        if not url.srv:
            addresses, ttl = await resolver.addresses(url.host)
            authority = url.authority.encode()
            server_name = url.host if url.tls else None
            return [
                Member(Target(family, ip, url.port, server_name), authority)
                for family, ip in addresses
            ], ttl
        services, ttl = await resolver.services(url.host)
        members: list[Member] = []
        for host, port in services:
            address = literal(host)
            found: Sequence[tuple[int, str]]
            if address is not None:
                found = [address]
            else:
                found, address_ttl = await resolver.addresses(host)
                ttl = min(ttl, address_ttl)
            authority = _authority(host, port, url.scheme)
            server_name = host if url.tls else None
            members += [Member(Target(f, ip, port, server_name), authority) for f, ip in found]
        return members, ttl

    async def start(self, first_lookup_timeout: float) -> None:
        """The first lookup (waited for, within a timeout, so that the first requests find
        endpoints), then re-resolution in the background."""
        if self.static or self._task is not None:
            return
        next_in = _RETRY
        try:
            async with asyncio.timeout(first_lookup_timeout):
                next_in = await self.refresh()
        except TimeoutError:
            log.warn("dns_lookup_slow", upstream=self.cluster.name, timeout=first_lookup_timeout)
        self._task = asyncio.get_running_loop().create_task(self._run(next_in))

    async def _run(self, next_in: float) -> None:
        while True:
            await asyncio.sleep(next_in)
            next_in = await self.refresh()

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
