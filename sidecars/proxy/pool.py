"""Keep-alive connections to one endpoint: a LIFO idle list, and the dialler (TCP, TLS).

LIFO keeps the few most recently used connections warm and lets the rest reach their idle
timeout and close, so the pool shrinks by itself after a burst.

``max_idle`` bounds the connections that stay idle, not those idle for an instant: under more
concurrent requests than ``max_idle``, answers come back in one loop iteration and the next
requests are read in the next, so closing every connection over the bound at once would dial
anew for most requests (nginx's ``keepalive N`` churns that way). Over the bound, the least
recently used connection is closed once it has been idle for ``_SETTLE`` seconds.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from sidecars.proxy.batch import Outbox
from sidecars.proxy.upstream import UpstreamConnection

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_SETTLE: Final = 1.0


class ConnectFailure(Exception):
    """No connection: ``kind`` is how the breaker counts it (connect, dns, timeout, tls)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def client_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on and SNI sent (server_hostname), with the system CAs or ``ca_file``."""
    return ssl.create_default_context(cafile=ca_file)


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint's address to dial, and what TLS checks its certificate against."""

    family: int
    host: str  # an IP address
    port: int
    server_hostname: str | None  # the name for SNI and verification; None: plain TCP

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Connector(Protocol):
    """Opens connections (the real one is Dialer; tests pass their own)."""

    async def connect(self, target: Target, factory: Callable[[], _P], limit: float) -> _P: ...


class Dialer:
    """Opens connections to an endpoint: TCP, then TLS with SNI when asked, in a timeout."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None) -> None:
        self.loop = loop
        self._tls = tls

    async def connect(self, target: Target, factory: Callable[[], _P], limit: float) -> _P:
        """A new connection within ``limit`` seconds, or ConnectFailure."""
        tls = self._tls if target.server_hostname is not None else None
        try:
            async with asyncio.timeout(limit):
                _, protocol = await self.loop.create_connection(
                    factory,
                    target.host,
                    target.port,
                    family=target.family,
                    ssl=tls,
                    server_hostname=target.server_hostname if tls is not None else None,
                )
                return protocol
        except TimeoutError:
            raise ConnectFailure("timeout", f"no connection within {limit:.3g}s") from None
        except ssl.SSLError as tls_error:
            raise ConnectFailure("tls", _describe(tls_error)) from tls_error
        except OSError as connect_error:
            raise ConnectFailure("connect", _describe(connect_error)) from connect_error


@dataclass(frozen=True, slots=True)
class PoolSettings:
    idle_timeout: float  # an idle pooled connection closes after it
    max_idle: int
    body_idle_timeout: float  # a response body that stalls this long is a timeout
    max_head_size: int


class ConnectionPool:
    """One endpoint's connections: the idle ones (LIFO) and how to open another."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connector: Connector,
        target: Target,
        outbox: Outbox,
        settings: PoolSettings,
        *,
        authority: bytes,
        path_prefix: bytes,
        opened_counter: Any,
        timer_clock: Callable[[], float] | None = None,
    ) -> None:
        self.loop = loop
        # The clock of connection deadlines (the loop's unless a test gives its own).
        self.timer_clock = loop.time if timer_clock is None else timer_clock
        self.connector = connector
        self.target = target
        self.outbox = outbox
        self.authority = authority
        self.path_prefix = path_prefix
        self.idle_timeout = settings.idle_timeout
        self.body_idle_timeout = settings.body_idle_timeout
        self.max_head_size = settings.max_head_size
        self._max_idle = settings.max_idle
        self._opened_counter = opened_counter
        self._idle: deque[UpstreamConnection] = deque()  # newest on the right
        self.opened = 0
        self.closed = False  # the endpoint left: connections close once their request ends

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def take(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        if conn.reading_paused:
            conn.resume_reading()
        if conn.closed:
            return
        if self._max_idle == 0 or self.closed:
            conn.close()
            return
        idle = self._idle
        now = self.timer_clock()
        if len(idle) >= self._max_idle and now - idle[0].idle_since >= _SETTLE:
            oldest = idle.popleft()
            oldest.pooled = False
            oldest.close()
        conn.pooled = True
        conn.idle_since = now
        # Usually only a move of the deadline: the timer armed for the request fires first
        # and re-arms for this.
        conn.timer.set(now + self.idle_timeout)
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn.pooled:
            conn.pooled = False
            self._idle.remove(conn)

    def close(self) -> None:
        self.closed = True
        for conn in list(self._idle):
            conn.close()

    async def connect(self, limit: float) -> UpstreamConnection:
        conn = await self.connector.connect(self.target, lambda: UpstreamConnection(self), limit)
        self.opened += 1
        self._opened_counter.inc()
        return conn

    def snapshot(self) -> dict[str, Any]:
        return {"idle": len(self._idle), "opened": self.opened}


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no address"
    return f"{type(error).__name__}: {error}"
