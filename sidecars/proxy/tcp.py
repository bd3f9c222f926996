"""TCP mode: a byte relay guarded by the breaker, one permit per client connection, to an
endpoint of the route's cluster chosen by its balancer (in-flight count: the connections
relayed), with outlier ejection and health checks as for HTTP.

A refused or timed-out dial, or a reset while relaying, is the upstream's failure; a failed
dial is retried on another endpoint as the retry filter decides (``P_RETRY_ON``
connect-failure, ``P_MAX_ATTEMPTS``, budget, backoff, within ``P_TIMEOUT``), the client's
bytes held meanwhile; once connected nothing is retried (a stream cannot be replayed). A relay
that ends with either side closing normally is a success. While the circuit is open new
client connections are closed at once without dialling (or relayed to the fallback).
Half-close is passed through (``write_eof``), so request/response protocols that signal the
end of a request by shutting down their write side keep working; an upstream reset is passed
on as a reset, so a client never takes a cut stream for a complete one. A relay with no bytes
either way for ``P_IDLE_TIMEOUT`` is closed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING, cast

from sidecars.observability import get_logger
from sidecars.proxy.pool import ConnectFailure
from sidecars.proxy.timer import DeadlineTimer

if TYPE_CHECKING:
    from sidecars.policies.breaker import Permit
    from sidecars.proxy.cluster import Cluster, Endpoint
    from sidecars.proxy.route import Route

log = get_logger("sidecars.proxy.tcp")

# SO_LINGER on, 0 s: closing the socket sends a reset instead of a FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class TcpRelay(asyncio.Protocol):
    """The client side of one relayed connection."""

    __slots__ = (
        "_attempts",
        "_client_eof",
        "_cluster",
        "_connecting",
        "_dial",
        "_dialled_in",
        "_early",
        "_endpoint",
        "_pending",
        "_permit",
        "_reads",
        "_reads_checked",
        "_started",
        "_timer",
        "_tried",
        "_upstream_eof",
        "bytes_down",
        "bytes_up",
        "closed",
        "route",
        "transport",
        "upstream",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        self.transport: asyncio.Transport | None = None
        self.upstream: TcpUpstream | None = None
        self._permit: Permit | None = None
        self._endpoint: Endpoint | None = None
        self._cluster: Cluster = route.cluster  # the fallback once the circuit refused
        self._dial: asyncio.Task[TcpUpstream] | None = None
        self._pending: asyncio.Handle | None = None  # the next dial, after the backoff
        self._attempts = 0  # dials made
        self._tried: list[Endpoint] = []  # endpoints whose dial failed
        self._connecting = True  # until a dial succeeded or none is left to make
        self._started = route.clock()
        self._dialled_in = 0.0
        self._client_eof = False
        self._upstream_eof = False
        self._early = bytearray()  # bytes the client sent before the dial finished
        self._timer = DeadlineTimer(route.loop, self._on_timer, route.timer_clock)
        self._reads = 0  # reads either way: a count, not a time (a clock per read costs more)
        self._reads_checked = 0
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        route = self.route
        route.connections.add(self)
        route.in_flight += 1
        route.metrics.connections.inc()
        route.metrics.active_connections.inc()
        cap = route.connection_cap
        if cap is not None and not cap.admits(route.in_flight):
            self.transport.close()  # P_MAX_CONNECTIONS: refused before any dial
            return
        route.retry.budget.record_request()
        self._timer.set(route.timer_clock() + route.idle_timeout)
        self._attempt()

    def _attempt(self) -> None:
        """Dial an endpoint not tried yet (a permit per dial, as per HTTP attempt)."""
        self._pending = None
        route = self.route
        transport = self.transport
        if self.closed or transport is None:
            return
        breaker = route.breaker
        if breaker is not None and self._cluster is not route.fallback:
            self._permit = breaker.acquire()
            if self._permit is None:
                route.metrics.circuit_rejected()
                if route.fallback is None:
                    self._connecting = False
                    transport.close()
                    return
                route.metrics.fallback_requests.inc()
                self._cluster = route.fallback
        self._attempts += 1
        endpoint = self._endpoint = self._cluster.pick(self._tried)
        if endpoint is None:
            self._dial_failed(ConnectFailure("connect", "no endpoint"))
            return
        self._dial = route.loop.create_task(
            route.relay_connector.connect(
                endpoint.member.target,
                lambda: TcpUpstream(self),
                min(route.connect_timeout, self._remaining()),
            )
        )
        self._dial.add_done_callback(self._dialled)

    def _remaining(self) -> float:
        """Seconds left of P_TIMEOUT for dialling, from the client's connection."""
        route = self.route
        return max(0.0, route.timeout - (route.clock() - self._started))

    def _dial_failed(self, error: BaseException) -> None:
        """The breaker and the outlier filter judge the dial; the retry filter says whether
        another endpoint is dialled (nothing was relayed yet: the client's bytes are held)."""
        route = self.route
        kind = error.kind if isinstance(error, ConnectFailure) else "connect"
        route.metrics.upstream_errors[kind].inc()
        route.metrics.attempt_failure.inc()
        self._record_failure(kind)
        decision = route.retry.on_connect_failure(self._attempts, kind, self._remaining())
        retry = decision is not None and decision.retry and not self.closed
        endpoint = self._endpoint
        log.warn(
            "tcp_dial_failed",
            upstream=route.name,
            kind=kind,
            detail=str(error),
            endpoint=endpoint.name if endpoint is not None else None,
            attempt=self._attempts,
            retry=retry,
            reason=decision.reason if decision is not None else "max_attempts",
            backoff=round(decision.delay, 4) if decision is not None and retry else None,
        )
        if endpoint is not None:
            self._release_endpoint()
            self._tried.append(endpoint)
        if retry:
            assert decision is not None
            if decision.delay > 0:
                self._pending = route.loop.call_later(decision.delay, self._attempt)
            else:
                self._pending = route.loop.call_soon(self._attempt)
            return
        self._connecting = False
        if self.transport is not None:
            self.transport.close()

    def _dialled(self, task: asyncio.Task[TcpUpstream]) -> None:
        self._dial = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._dial_failed(error)
            return
        upstream = task.result()
        self._connecting = False
        self.route.metrics.upstream_connections_opened.inc()
        self._dialled_in = self.route.clock() - self._started
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        if self._early:
            upstream.write(bytes(self._early))
            self._early.clear()
        if self._client_eof:
            upstream.write_eof()
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self._reads += 1
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            return
        # Still dialling (uvloop reads before a pause in connection_made takes effect): keep
        # these bytes for the upstream and read no more until it is there.
        self._early += data
        assert self.transport is not None
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._client_eof = True
        upstream = self.upstream
        if self._connecting:
            return True  # passed on once a dial succeeded
        if upstream is None or self._upstream_eof:
            return False
        upstream.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._timer.cancel()
        route = self.route
        route.connections.discard(self)
        route.in_flight -= 1
        route.metrics.active_connections.dec()
        if self._dial is not None:
            self._dial.cancel()
            self._dial = None
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        upstream = self.upstream
        if upstream is not None:
            upstream.close()
        elif self._permit is not None and route.breaker is not None:
            route.breaker.release(self._permit)  # no dial finished: no verdict
            self._permit = None
            self._release_endpoint()
        self._record_success()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- driven by the upstream side ----------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.bytes_down += len(data)
            self._reads += 1
            self.transport.write(data)

    def on_upstream_eof(self) -> bool:
        self._upstream_eof = True
        transport = self.transport
        if transport is None or self.closed or self._client_eof:
            return False
        transport.write_eof()
        return True

    def on_upstream_closed(self, exc: Exception | None) -> None:
        self.upstream = None
        if exc is not None:
            route = self.route
            route.metrics.upstream_errors["reset"].inc()
            route.metrics.attempt_failure.inc()
            self._record_failure("reset")
            log.warn(
                "tcp_relay_reset",
                upstream=route.name,
                detail=str(exc),
                endpoint=self._endpoint.name if self._endpoint is not None else None,
            )
            self._release_endpoint()
            if self.transport is not None:
                client_socket = self.transport.get_extra_info("socket")
                if client_socket is not None:
                    client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                self.transport.abort()
            return
        self._record_success()
        if self.transport is not None:
            self.transport.close()

    def pause_client(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_client(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _on_timer(self) -> None:
        if self.closed:
            return
        route = self.route
        if self._reads == self._reads_checked:
            log.info("tcp_idle_closed", upstream=route.name, idle_timeout=route.idle_timeout)
            route.metrics.tunnels_idle_closed.inc()
            self.abort()
            return
        self._reads_checked = self._reads
        self._timer.set(route.timer_clock() + route.idle_timeout)

    # -- draining and verdicts ----------------------------------------------------------------

    def drain(self) -> None:
        """Relays in progress go on until they end or the drain timeout cuts them."""

    def abort(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self.transport is not None:
            self.transport.abort()

    def _record_success(self) -> None:
        endpoint = self._endpoint
        if endpoint is not None:
            # The relay is over: the endpoint did its part.
            if self.route.outlier is not None:
                self.route.outlier.succeeded(endpoint)
            self._release_endpoint()
        permit = self._permit
        breaker = self.route.breaker
        if permit is not None and breaker is not None:
            self._permit = None
            # Only the dial can be slow: a long-lived connection is not a slow call.
            breaker.record_success(permit, self._dialled_in)
            self.route.metrics.attempt_succeeded()

    def _record_failure(self, kind: str) -> None:
        endpoint = self._endpoint
        if endpoint is not None:
            endpoint.responded(True, 0.0)
            if self.route.outlier is not None:
                self.route.outlier.failed(endpoint)
        permit = self._permit
        breaker = self.route.breaker
        if permit is not None and breaker is not None:
            self._permit = None
            breaker.record_failure(permit, kind, self.route.clock() - self._started)

    def _release_endpoint(self) -> None:
        endpoint = self._endpoint
        if endpoint is not None:
            self._endpoint = None
            endpoint.released()


class TcpUpstream(asyncio.Protocol):
    """The upstream side of one relayed connection."""

    __slots__ = ("_paused", "client", "transport")

    def __init__(self, client: TcpRelay) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client.on_upstream_data(data)

    def eof_received(self) -> bool:
        return self.client.on_upstream_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.on_upstream_closed(exc)

    def pause_writing(self) -> None:
        self.client.pause_client()

    def resume_writing(self) -> None:
        self.client.resume_client()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def write_eof(self) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resume_reading()
