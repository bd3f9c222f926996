"""Fault injection as a filter (Envoy's fault filter, plus attempt scope).

Where a fault acts (``P_FAULT_SCOPE``):

``attempt`` (default)
    In the ``on_attempt`` hook, once an endpoint is picked: an abort is a stand-in
    connection answering with the status, a reset a stand-in connection that fails with
    ``reset``, a delay holds the attempt within its deadline. The retry filter, the breaker
    and outlier detection judge it as the endpoint's doing, which is what a drill watches.
``request``
    The client gets it directly: an abort is answered before any attempt (not retried), a
    reset cuts the client's connection, a delay holds the request before its first attempt
    without counting in it.

Faults come from the ``P_FAULT_*`` variables, from the process's drills (admin ``/faults``),
and, with ``P_FAULT_HEADERS=on``, from the request's ``X-Sidecar-Fault-*`` headers, which
are then removed before the upstream sees the request.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import orjson

from sidecars import observability as obs
from sidecars.envparse import duration
from sidecars.observability import get_logger
from sidecars.policies.faults import Drills, Fault, Uniform, abort_status, percent, pick
from sidecars.proxy.connection import Connection
from sidecars.proxy.errors import SidecarError
from sidecars.proxy.filters import CUT, Answer, Delay, Filter

if TYPE_CHECKING:
    import asyncio

    from sidecars.proxy.cluster import Cluster
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.pool import ConnectionPool
    from sidecars.settings import FaultSettings

log: Final = get_logger("sidecars.proxy")

_ABORT: Final = b"x-sidecar-fault-abort"
_DELAY: Final = b"x-sidecar-fault-delay"
_PERCENT: Final = b"x-sidecar-fault-percent"
FAULT_HEADERS: Final = (_ABORT, _DELAY, _PERCENT)
# The scope of the delay a request-scoped draw decided, kept on the exchange until its first
# attempt (a scope no configured fault has).
_HELD: Final = "held"


class FaultFilter(Filter):
    name = "faults"

    def __init__(
        self,
        settings: FaultSettings,
        drills: Drills,
        *,
        sidecar: str,
        upstream: str,
        loop: asyncio.AbstractEventLoop,
        random: Uniform,
    ) -> None:
        self.configured = tuple(
            f for f in (settings.abort, settings.reset, settings.delay) if f is not None
        )
        self.scope = settings.scope  # of the faults that do not name theirs
        self.headers = settings.headers
        self.drills = drills
        self.upstream = upstream
        self.loop = loop
        self.random = random
        self.injected = {
            kind: obs.FAULTS_INJECTED.labels(sidecar, upstream, kind)
            for kind in ("abort", "delay", "reset")
        }
        self.drills_changed()
        drills.on_change(self.drills_changed)

    def drills_changed(self) -> None:
        """Nothing configured, no header faults and no drill: the hooks are left out of the
        chain (which refreshes after every change of the drills) instead of being asked."""
        idle = not self.configured and not self.headers and not self.drills.faults
        self.idle_hooks = ("on_request", "on_attempt") if idle else ()

    def on_request(self, exchange: Exchange) -> Answer | Cluster | None:
        """The request's own fault (P_FAULT_HEADERS=on), taken out of its headers, and the
        request-scoped faults: decided once, before the first attempt."""
        if exchange.attempt:
            return None
        own = _header_fault(exchange.lines) if self.headers else None
        drilled = self.drills.faults
        if not drilled and not self.configured and own is None:
            return None  # the common case: nothing to inject
        exchange.fault = own
        fault = self._choose(exchange, "request")
        if fault is None:
            return None
        self.injected[fault.kind].inc()
        if fault.kind == "abort":
            return Answer(_fault_error(fault.status))
        if fault.kind == "reset":
            return CUT
        exchange.fault = Fault("delay", 100.0, delay=fault.delay, scope=_HELD)
        return None

    def on_attempt(self, exchange: Exchange) -> Delay | Connection | None:
        own = exchange.fault
        if not self.drills.faults and not self.configured and own is None:
            return None  # the common case: nothing to inject
        if own is not None and own.scope == _HELD:
            exchange.fault = None  # a request-scoped delay: before the first attempt only
            return Delay(own.delay, in_attempt=False)
        fault = self._choose(exchange, "attempt")
        if fault is None:
            return None
        self.injected[fault.kind].inc()
        if fault.kind == "delay":
            return Delay(fault.delay)
        endpoint = exchange.endpoint
        assert endpoint is not None
        return InjectedAnswer(self.loop, endpoint.pool, fault, self.upstream)

    def _choose(self, exchange: Exchange, scope: str) -> Fault | None:
        """The fault of this scope for this request or attempt, if one hits: the request's
        own first, then the drills (newest first), then the configured ones."""
        drills = self.drills
        if drills.faults and drills.next_expiry <= drills.now():
            drills.expire()
        own = exchange.fault
        candidates = (*((own,) if own is not None else ()), *drills.faults, *self.configured)
        default = self.scope
        return pick(
            [f for f in candidates if (f.scope or default) == scope],
            exchange.target,
            exchange.lines,
            self.random,
        )

    def status(self) -> dict[str, Any] | None:
        return {
            "scope": self.scope,
            "headers": self.headers,
            "configured": [f.describe() for f in self.configured],
            "drills": self.drills.active(),
        }


def _fault_error(status: int) -> SidecarError:
    return SidecarError(status, "fault_injected", "an injected fault")


def _header_fault(lines: list[bytes]) -> Fault | None:
    """The X-Sidecar-Fault-* headers of a request, removed from ``lines``."""
    found: dict[bytes, bytes] = {}
    i = 0
    while i < len(lines):
        name = lines[i].lower()
        if name in FAULT_HEADERS:
            found[name] = lines[i + 2]
            del lines[i : i + 4]
        else:
            i += 4
    if not found:
        return None
    try:
        share = percent(found[_PERCENT].decode("latin-1")) if _PERCENT in found else 100.0
        if _ABORT in found:
            return Fault("abort", share, status=abort_status(found[_ABORT].decode("latin-1")))
        if _DELAY in found:
            return Fault("delay", share, delay=duration(found[_DELAY].decode("latin-1")))
    except ValueError as error:
        log.warn("fault_header_ignored", reason=str(error))
    return None


class InjectedAnswer(Connection):
    """A ``Connection`` answering an attempt in the upstream's place: the fault's status
    (with a small JSON body and ``X-Sidecar-Fault``), or a reset before any byte."""

    __slots__ = (
        "body",
        "chunked",
        "codings",
        "content_length",
        "exchange",
        "handle",
        "head_only",
        "keep_alive",
        "loop",
        "parts",
        "pool",
        "received",
        "retry_after",
        "reused",
        "status",
        "status_line",
        "upgrade",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: ConnectionPool,
        fault: Fault,
        upstream: str,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.exchange: Exchange | None = None
        self.handle: asyncio.Handle | None = None
        self.status = fault.status if fault.kind == "abort" else 0
        phrase = HTTPStatus(self.status).phrase.encode() if self.status else b""
        self.status_line = b"HTTP/1.1 %d %b\r\n" % (self.status, phrase)
        self.body = orjson.dumps(
            {"error": "fault_injected", "detail": "an injected fault", "upstream": upstream}
        )
        self.parts = [
            b"Content-Type", b": ", b"application/json", b"\r\n",
            b"X-Sidecar-Fault", b": ", fault.kind.encode(), b"\r\n",
        ]  # fmt: skip
        self.content_length: bytes | None = b"%d" % len(self.body)
        self.chunked = False
        self.codings: bytes | None = None
        self.retry_after: bytes | None = None
        self.upgrade: bytes | None = None
        self.keep_alive = False
        self.head_only = False
        self.reused = False
        self.received = False

    def attach(self, exchange: Exchange, head_deadline: float, head_only: bool) -> None:
        self.exchange = exchange
        self.head_only = head_only
        self.handle = self.loop.call_soon(self._play)

    def _play(self) -> None:
        self.handle = None
        exchange = self.exchange
        if exchange is None:
            return
        if not self.status:
            exchange.on_upstream_failure(self, "reset")
            return
        self.received = True
        exchange.on_response_head(self)
        if self.exchange is exchange and not self.head_only:
            exchange.on_response_body(self.body)
        if self.exchange is exchange:
            exchange.on_response_end(self)

    def write(self, data: bytes) -> None:
        return None

    def reuse(self) -> None:
        return None

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        self.exchange = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None
