"""Fault injection in TCP mode: a ``Connector`` in front of the route's own, used for the
relay's dials only (health checks dial through the route's connector, untouched).

Per client connection, the first fault that hits (drills newest first, then ``P_FAULT_*``):
an abort is a refused connect (its status is not used), a delay holds the connect (past
``P_CONNECT_TIMEOUT`` it is a connect timeout), a reset lets the upstream's first bytes
through and then resets the stream, as an upstream dying mid-stream would. The relay counts
each as the upstream's failure (breaker, outlier detection), as for HTTP's attempt scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sidecars import observability as obs
from sidecars.policies.faults import Drills, Fault, Uniform, pick
from sidecars.proxy.pool import ConnectFailure, Connector, Target

if TYPE_CHECKING:
    from sidecars.settings import FaultSettings

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


class FaultyConnector:
    """Dials through ``inner``, injecting the route's faults."""

    def __init__(
        self,
        inner: Connector,
        settings: FaultSettings,
        drills: Drills,
        *,
        sidecar: str,
        upstream: str,
        random: Uniform,
    ) -> None:
        self.inner = inner
        self.configured = tuple(
            f for f in (settings.abort, settings.reset, settings.delay) if f is not None
        )
        self.drills = drills
        self.random = random
        self.injected = {
            kind: obs.FAULTS_INJECTED.labels(sidecar, upstream, kind)
            for kind in ("abort", "delay", "reset")
        }

    def _choose(self) -> Fault | None:
        drills = self.drills
        if drills.faults and drills.next_expiry <= drills.now():
            drills.expire()
        if not drills.faults and not self.configured:
            return None
        # No path nor headers in TCP mode: a drill limited to either never matches here.
        return pick((*drills.faults, *self.configured), b"", (), self.random)

    async def connect(self, target: Target, factory: Callable[[], _P], limit: float) -> _P:
        fault = self._choose()
        if fault is None:
            return await self.inner.connect(target, factory, limit)
        self.injected[fault.kind].inc()
        if fault.kind == "abort":
            raise ConnectFailure("connect", "injected fault: connection refused")
        if fault.kind == "delay":
            if fault.delay >= limit:
                await asyncio.sleep(limit)
                raise ConnectFailure("timeout", "injected fault: connect timed out")
            await asyncio.sleep(fault.delay)
            return await self.inner.connect(target, factory, limit - fault.delay)
        wrapped = await self.inner.connect(target, lambda: _ResetMidStream(factory()), limit)
        return wrapped.inner

    def status(self) -> dict[str, Any]:
        return {
            "configured": [f.describe() for f in self.configured],
            "drills": self.drills.active(),
        }


class _ResetMidStream(asyncio.Protocol, Generic[_P]):
    """The upstream side's protocol, reset after the upstream's first bytes went through."""

    def __init__(self, inner: _P) -> None:
        self.inner = inner
        self._protocol = cast(asyncio.Protocol, inner)
        self._transport: asyncio.Transport | None = None
        self._reset = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._reset:
            return
        self._protocol.data_received(data)
        self._reset = True
        if self._transport is not None:
            self._transport.abort()
        self._protocol.connection_lost(ConnectionResetError("injected fault: reset mid-stream"))

    def eof_received(self) -> bool | None:
        return None if self._reset else self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._reset:
            self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._reset:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if not self._reset:
            self._protocol.resume_writing()
