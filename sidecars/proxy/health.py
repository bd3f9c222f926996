"""Active health checks: every ``P_HEALTH_CHECK_INTERVAL``, each endpoint of a cluster is
asked ``GET P_HEALTH_CHECK_PATH`` on a connection of its own (a TCP route checks by connecting).
An answer 200-399 within ``P_HEALTH_CHECK_TIMEOUT`` passes. ``P_UNHEALTHY_THRESHOLD``
failures in a row take an endpoint out of the balancing, ``P_HEALTHY_THRESHOLD`` passes in a
row bring it back; a new endpoint gets traffic once it passed one check.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

from sidecars.observability import get_logger
from sidecars.proxy.pool import ConnectFailure, Connector

if TYPE_CHECKING:
    from sidecars.proxy.cluster import Cluster, Endpoint
    from sidecars.settings import ClusterSettings

log = get_logger("sidecars.proxy.cluster")
_MAX_STATUS_LINE = 4096


class _Probe(asyncio.Protocol):
    """One check's connection: sends the request and reads the status line."""

    def __init__(self, request: bytes | None) -> None:
        self.request = request
        self.passed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.request is None:
            self._settle(True)
        else:
            self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self._head += data
        line, found, _ = self._head.partition(b"\r\n")
        if found or len(self._head) > _MAX_STATUS_LINE:
            parts = line.split(b" ", 2)
            ok = (
                len(parts) >= 2
                and parts[0].startswith(b"HTTP/1.")
                and parts[1].isdigit()
                and 200 <= int(parts[1]) < 400
            )
            self._settle(ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(False)

    def _settle(self, passed: bool) -> None:
        if not self.passed.done():
            self.passed.set_result(passed)
        if self.transport is not None:
            self.transport.close()


class HealthChecker:
    def __init__(
        self, cluster: Cluster, settings: ClusterSettings, connector: Connector, *, tcp: bool
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self._connector = connector
        self._tcp = tcp
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        cluster.on_change(self._changed)

    async def start(self) -> None:
        """A first round of checks (so that the first requests go to endpoints known to
        pass), then a round every interval in the background."""
        if self._task is None:
            await asyncio.gather(*(self.check(e) for e in list(self.cluster.endpoints.values())))
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [*self._checks, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _changed(self, endpoint: Endpoint, change: str) -> None:
        if change == "added" and self._task is not None:
            self._spawn(endpoint)  # checked now, not at the next round

    def _spawn(self, endpoint: Endpoint) -> None:
        task = asyncio.get_running_loop().create_task(self.check(endpoint))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_check_interval)
            for endpoint in list(self.cluster.endpoints.values()):
                self._spawn(endpoint)

    async def probe(self, endpoint: Endpoint) -> bool:
        request = None
        if not self._tcp:
            request = (
                b"GET %b HTTP/1.1\r\nHost: %b\r\nUser-Agent: sidecars-health-check\r\n"
                b"Connection: close\r\n\r\n"
                % ((self.settings.health_check_path or "/").encode(), endpoint.member.authority)
            )
        timeout = self.settings.health_check_timeout
        try:
            async with asyncio.timeout(timeout):
                probe = await self._connector.connect(
                    endpoint.member.target, lambda: _Probe(request), timeout
                )
                return await probe.passed
        except (TimeoutError, ConnectFailure, OSError):
            return False

    async def check(self, endpoint: Endpoint) -> None:
        passed = await self.probe(endpoint)
        if endpoint.removed:
            return
        settings = self.settings
        if passed:
            endpoint.health_failures = 0
            endpoint.health_passes += 1
            first = not endpoint.ever_healthy
            if first or endpoint.health_passes >= settings.healthy_threshold:
                endpoint.ever_healthy = True
                self.cluster.set_healthy(endpoint, True)
        else:
            endpoint.health_passes = 0
            endpoint.health_failures += 1
            if endpoint.health_failures >= settings.unhealthy_threshold:
                self.cluster.set_healthy(endpoint, False)
