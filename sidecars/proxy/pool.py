"""Keep-alive connections to one upstream: a LIFO idle list and the dialler (DNS, TCP, TLS).

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
from typing import TYPE_CHECKING, Any, TypeVar

from sidecars.proxy.batch import Outbox
from sidecars.proxy.resolver import Resolver
from sidecars.proxy.upstream import UpstreamConnection
from sidecars.settings import Upstream

if TYPE_CHECKING:
    from sidecars.proxy.metrics import RouteMetrics

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_SETTLE = 1.0


class ConnectFailure(Exception):
    """No connection: ``kind`` is how the breaker counts it (connect, dns, timeout, tls)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def client_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on and SNI sent (server_hostname), with the system CAs or ``ca_file``."""
    return ssl.create_default_context(cafile=ca_file)


class Dialer:
    """Opens connections to one upstream: resolve (cached), TCP, TLS with SNI, in a timeout."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: Upstream,
        resolver: Resolver,
        metrics: RouteMetrics,
        ca_file: str | None,
    ) -> None:
        self.loop = loop
        self.upstream = upstream
        self._resolver = resolver
        self._metrics = metrics
        self._tls = client_tls_context(ca_file) if upstream.tls else None
        self.opened = 0

    async def dial(self, factory: Callable[[], _P], limit: float) -> _P:
        """A new connection within ``limit`` seconds, or ConnectFailure."""
        upstream = self.upstream
        try:
            async with asyncio.timeout(limit):
                addresses = await self._resolver.resolve(upstream.host, upstream.port)
                error: OSError | None = None
                for family, sockaddr in addresses:
                    try:
                        _, protocol = await self.loop.create_connection(
                            factory,
                            sockaddr[0],
                            sockaddr[1],
                            family=family,
                            ssl=self._tls,
                            server_hostname=upstream.host if self._tls is not None else None,
                        )
                    except ssl.SSLError as tls_error:
                        raise ConnectFailure("tls", _describe(tls_error)) from tls_error
                    except OSError as connect_error:
                        error = connect_error
                        continue
                    self.opened += 1
                    self._metrics.upstream_connections_opened.inc()
                    return protocol
                raise ConnectFailure("connect", _describe(error))
        except TimeoutError:
            raise ConnectFailure("timeout", f"no connection within {limit:.3g}s") from None
        except OSError as resolve_error:
            raise ConnectFailure("dns", _describe(resolve_error)) from resolve_error


class ConnectionPool:
    def __init__(
        self,
        dialer: Dialer,
        outbox: Outbox,
        *,
        idle_timeout: float,
        max_idle: int,
        body_idle_timeout: float,
        max_head_size: int,
    ) -> None:
        self.loop = dialer.loop
        self.dialer = dialer
        self.outbox = outbox
        self.upstream = dialer.upstream
        self.authority = self.upstream.authority.encode()
        self.path_prefix = self.upstream.path_prefix.encode()
        self.idle_timeout = idle_timeout
        self.body_idle_timeout = body_idle_timeout
        self.max_head_size = max_head_size
        self._max_idle = max_idle
        self._idle: deque[UpstreamConnection] = deque()  # newest on the right

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
        if self._max_idle == 0:
            conn.close()
            return
        idle = self._idle
        now = self.loop.time()
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
        for conn in list(self._idle):
            conn.close()

    async def connect(self, limit: float) -> UpstreamConnection:
        return await self.dialer.dial(lambda: UpstreamConnection(self), limit)

    def snapshot(self) -> dict[str, Any]:
        return {
            "upstream": str(self.upstream),
            "idle": len(self._idle),
            "opened": self.dialer.opened,
        }


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no address"
    return f"{type(error).__name__}: {error}"
