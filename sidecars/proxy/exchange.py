"""One client request, driven through its attempts: the exchange is the attempt driver, and
the route's filter chain (``sidecars.proxy.filters``) makes every per-request decision.

An exchange is a state machine driven by callbacks from the client connection (request body,
client gone) and the upstream connection (response head, body, end, failure), in the style of
h11's ``_connection.py``: no task per request, no futures on the hot path. Per attempt: ask the
filters (``on_request``: admit, answer, or another cluster), pick an endpoint of the cluster,
take a pooled connection or dial one, write the head (``http1``), ask the filters about the
response head or the failure (retry or not), stream the body, release the endpoint.

States and the only legal moves between them (``_LEGAL``; any other is an error, as in h11's
``_state.py``)::

    NEW -> WAITING (admitted; dialling or backing off) -> SENT (head written)
        -> STREAMING (response head given to the client) -> ANSWERED (request body still
        coming) | DONE
    SENT -> WAITING (a retry or a replay);  SENT/STREAMING -> TUNNEL (101) -> DONE
    NEW/WAITING/SENT -> ANSWERED (sidecar-made answer; draining the request body) | DONE
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from sidecars.observability import get_logger
from sidecars.proxy import errors, http1
from sidecars.proxy.errors import SidecarError
from sidecars.proxy.filters import REPLAY, Answer, Delay, Park
from sidecars.proxy.pool import ConnectFailure, ConnectionPool
from sidecars.proxy.request import RequestHead
from sidecars.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from sidecars.policies.breaker import Permit
    from sidecars.policies.faults import Fault
    from sidecars.policies.retry import RetryDecision
    from sidecars.proxy.client import ClientConnection
    from sidecars.proxy.cluster import Cluster, Endpoint
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.filters import Filter
    from sidecars.proxy.route import Route

log: Final = get_logger("sidecars.proxy")

NEW: Final = 0
WAITING: Final = 1
SENT: Final = 2
STREAMING: Final = 3
ANSWERED: Final = 4
TUNNEL: Final = 5
DONE: Final = 6
STATE_NAMES: Final = ("NEW", "WAITING", "SENT", "STREAMING", "ANSWERED", "TUNNEL", "DONE")
_MOVES: Final = {
    NEW: (WAITING, ANSWERED, DONE),
    WAITING: (WAITING, SENT, ANSWERED, DONE),
    SENT: (WAITING, STREAMING, ANSWERED, DONE),
    STREAMING: (TUNNEL, ANSWERED, DONE),
    ANSWERED: (DONE,),
    TUNNEL: (DONE,),
    DONE: (),
}
# As one int per move (old * 8 + new): a set lookup per transition.
_LEGAL: Final = frozenset(old * 8 + new for old, targets in _MOVES.items() for new in targets)
# The answer to an attempt that failed without a response, by failure kind.
_FAILURE_ANSWERS: Final = {"timeout": errors.UPSTREAM_TIMEOUT, "dns": errors.UPSTREAM_UNRESOLVED}
# A failed answer kept while a retry is tried, returned if the circuit then opens.
_SAVED_BODY_MAX: Final = 64 * 1024
# Status recorded in the access log when the client left before its answer (nginx's 499).
CLIENT_GONE: Final = 499
# Status recorded when a filter cut the client's connection without an answer (nginx's 444).
NO_RESPONSE: Final = 444


class IllegalTransition(Exception):
    """The exchange was told to move where its state machine does not go: a bug."""


class _SavedResponse:
    """An upstream answer read whole while a retry goes ahead (its head parts and body)."""

    __slots__ = ("body", "complete", "parts", "size", "status", "status_line")

    def __init__(self, conn: Connection) -> None:
        self.status = conn.status
        self.status_line = conn.status_line
        self.parts = conn.parts
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False


class Exchange(RequestHead):
    """A client request: its head (parsed into the RequestHead fields) and the work of
    answering it. A client connection reuses the one whose request ended cleanly for its next
    request (``reusable``, then ``reset``: cheaper than a new object); pipelined requests
    waiting behind an active one get their own. Filters keep their per-request state here
    (``permit``: the breaker's; ``replayed``: the retry filter's; ``fault``: the fault
    filter's; ``limit_slot`` and ``retry_slot``: the concurrency filter's)."""

    __slots__ = (
        "attempt",
        "attempt_started",
        "body",
        "body_kept",
        "body_size",
        "bytes_sent",
        "chunked_out",
        "client",
        "cluster",
        "conn",
        "continued",
        "endpoint",
        "failure_detail",
        "fault",
        "limit_slot",
        "pending",
        "permit",
        "replayed",
        "request_done",
        "retry_slot",
        "route",
        "saved",
        "sent_all",
        "started",
        "state",
        "status",
        "tried",
    )

    def __init__(self, client: ClientConnection, route: Route) -> None:
        self.client = client
        self.route = route
        self.reset()

    def reset(self) -> None:
        """Every field but the connection and the route back to a new exchange's (for the
        next request on the same client connection; see ``reusable``)."""
        self.clear_head()
        self.cluster: Cluster = self.route.cluster
        self.state = NEW
        self.started = 0.0
        self.attempt = 0
        self.attempt_started = 0.0
        self.permit: Permit | None = None
        self.conn: Connection | None = None
        self.endpoint: Endpoint | None = None  # of the attempt under way
        self.tried: list[Endpoint] | None = None  # endpoints whose attempt failed
        self.pending: asyncio.Task[UpstreamConnection] | asyncio.Handle | None = None
        self.replayed = False
        self.limit_slot = False
        self.retry_slot = False
        self.failure_detail = ""
        self.fault: Fault | None = None  # the fault filter's: this request's own fault
        self.continued = False
        self.body: list[bytes] | None = None  # the request body held for a dial or a replay
        self.body_size = 0
        self.body_kept = True
        self.request_done = False
        self.sent_all = False  # the whole request went to the current connection
        self.status = 0
        self.chunked_out = False
        self.bytes_sent = 0
        self.saved: _SavedResponse | None = None

    @property
    def reusable(self) -> bool:
        """Whether this exchange may be reset for the next request: it ended, and nothing
        (an upstream connection, a dial, a timer) still holds it."""
        return self.state == DONE and self.conn is None and self.pending is None

    def _enter(self, new: int) -> None:
        if self.state * 8 + new not in _LEGAL:
            self._illegal(new)
        self.state = new

    def _illegal(self, new: int) -> None:
        raise IllegalTransition(f"{STATE_NAMES[self.state]} -> {STATE_NAMES[new]}")

    # -- driven by the client connection ----------------------------------------------------

    def start(self) -> None:
        route = self.route
        self.started = self.attempt_started = route.clock()
        route.in_flight += 1
        if self.error is not None:
            self.answer_error(self.error)
            return
        self._attempt()

    def on_request_body(self, chunk: bytes) -> None:
        state = self.state
        if (state >= STREAMING and self.conn is None) or self.error is not None:
            return  # answered already, or to be refused: the body is read and dropped
        self.body_size += len(chunk)
        route = self.route
        if route.max_body is not None and self.body_size > route.max_body:
            if state == NEW:
                self.error = errors.BODY_TOO_LARGE  # answered when its turn comes
            else:
                self._body_too_large()
            return
        conn = self.conn
        if conn is not None and state in (SENT, STREAMING):
            conn.write(http1.chunk(chunk) if self.chunked else chunk)
            if self.body_kept:
                if self.body_size <= route.max_retry_body:
                    self._keep_body(chunk)
                else:
                    self.body = None
                    self.body_kept = False
            return
        # No connection yet (dialling, backing off): keep the bytes for it, but stop reading
        # once they pass what a retry may replay.
        self._keep_body(chunk)
        if self.body_size > route.max_retry_body:
            self.client.pause_reading(self.client.PAUSED_BY_BODY)

    def _keep_body(self, chunk: bytes) -> None:
        if self.body is None:
            self.body = [chunk]
        else:
            self.body.append(chunk)

    def on_request_end(self) -> None:
        self.request_done = True
        state = self.state
        conn = self.conn
        if conn is not None and state in (SENT, STREAMING):
            self.sent_all = True
            if self.chunked:
                conn.write(http1.LAST_CHUNK)
        if state == ANSWERED:
            self._finish(self.status)

    def on_client_gone(self) -> None:
        """The client connection closed before the answer was complete."""
        state = self.state
        if state == NEW:
            self._enter(DONE)
            return
        if state in (DONE, TUNNEL):
            return
        self._abandon_attempt()
        if state != ANSWERED:
            self.route.metrics.bad_requests["client_disconnected"].inc()
        self._finish(CLIENT_GONE, client_gone=True)

    def on_request_failed(self, error: SidecarError) -> None:
        """The request broke off: a malformed or stalled body. The connection will close."""
        self.request_done = True
        state = self.state
        if state == NEW:
            self.error = error  # answered when its turn comes
            return
        if state in (DONE, TUNNEL):
            return
        client = self.client
        client.close_after = True
        if state in (ANSWERED, STREAMING):
            self.route.metrics.bad_requests[error.reason].inc()
            if state == STREAMING:
                self._abandon_attempt()
                client.abort()
            self._finish(self.status)
            return
        self._abandon_attempt()
        self.answer_error(error)

    def on_client_paused(self) -> None:
        if self.conn is not None and self.state == STREAMING:
            self.conn.pause_reading()

    def on_client_resumed(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    # -- the attempt loop -------------------------------------------------------------------

    def _retry(self) -> None:
        """The next attempt, once the backoff is over (a loop callback)."""
        self.pending = None
        if self.conn is not None:
            # The previous answer was still being saved: the next attempt goes ahead.
            self.conn.abort()
            self.conn = None
            self.saved = None
        self.sent_all = False
        self.attempt_started = self.route.clock()
        self._attempt()

    def resume(self, parked_by: Filter) -> None:
        """A filter that parked this exchange lets it go on: the filters after it are asked,
        then the attempt is made (nothing if the exchange ended meanwhile)."""
        if self.state == WAITING and self.pending is None:
            self._attempt(self.route.chain.request_filters_after[parked_by])

    def reject(self, answer: Answer) -> None:
        """A filter that parked this exchange answers it instead."""
        if self.state == WAITING and self.pending is None:
            self._answer_rejected(answer)

    def _attempt(self, filters: tuple[Filter, ...] | None = None) -> None:
        route = self.route
        for filter_ in route.chain.request_filters if filters is None else filters:
            verdict = filter_.on_request(self)
            if verdict is not None:
                if isinstance(verdict, Answer):
                    self._answer_rejected(verdict)
                    return
                if isinstance(verdict, Park):
                    self._enter(WAITING)  # the filter resumes or rejects it
                    return
                self.cluster = verdict
                break
        # _enter(WAITING), inlined on the per-request path
        if self.state * 8 + WAITING not in _LEGAL:
            self._illegal(WAITING)
        self.state = WAITING
        self.attempt += 1
        if self.expect_continue and not self.continued and not self.request_done:
            # Answered here, not by the upstream: Expect is not forwarded (Envoy does the same),
            # so the body is read only once the request will be tried.
            self.continued = True
            self.client.send(http1.CONTINUE)
            self.client.flush()
        if self.attempt == 1:
            budget = route.first_try_timeout
        else:
            remaining = self.remaining()
            per_try = route.per_try_timeout
            budget = remaining if per_try is None or per_try > remaining else per_try
        head_deadline = route.timer_clock() + budget
        endpoint = self.endpoint = self.cluster.pick(self.tried)
        if endpoint is None:
            # No endpoint at all: the names of the cluster did not resolve (yet).
            self._attempt_failed(None, "dns", sent=False, detail=self.cluster.discovery_error)
            return
        for filter_ in route.chain.attempt_filters:
            instead = filter_.on_attempt(self)
            if instead is not None:
                if isinstance(instead, Delay):
                    self._hold(instead, head_deadline)
                else:
                    self._send(instead, head_deadline)
                return
        pool = endpoint.pool
        conn = pool.take()
        if conn is not None:
            self._send(conn, head_deadline)
        else:
            self._dial(pool, min(budget, route.connect_timeout), head_deadline)

    def _hold(self, delay: Delay, head_deadline: float) -> None:
        """A filter's ``Delay``: the attempt goes on after it (still WAITING meanwhile)."""
        route = self.route
        loop = route.loop
        if not delay.in_attempt:
            head_deadline += delay.seconds
        else:
            left = head_deadline - route.timer_clock()
            if delay.seconds >= left:
                # Held past its deadline: the attempt times out as a slow upstream's would.
                self.pending = loop.call_later(max(0.0, left), self._held_too_long)
                return
        self.pending = loop.call_later(delay.seconds, self._go_on, delay, head_deadline)

    def _held_too_long(self) -> None:
        self.pending = None
        self._attempt_failed(None, "timeout", sent=True)

    def _go_on(self, delay: Delay, head_deadline: float) -> None:
        self.pending = None
        route = self.route
        if not delay.in_attempt:
            self.attempt_started = route.clock()
        endpoint = self.endpoint
        assert endpoint is not None
        conn = endpoint.pool.take()
        if conn is not None:
            self._send(conn, head_deadline)
            return
        budget = max(0.0, head_deadline - route.timer_clock())
        self._dial(endpoint.pool, min(budget, route.connect_timeout), head_deadline)

    def _dial(self, pool: ConnectionPool, timeout: float, head_deadline: float) -> None:
        task = self.route.loop.create_task(pool.connect(timeout))
        self.pending = task

        def connected(task: asyncio.Task[UpstreamConnection]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            if self.pending is not task:
                # The exchange ended while dialling: a good connection still serves others.
                if error is None:
                    pool.put(task.result())
                return
            self.pending = None
            if error is None:
                self._send(task.result(), head_deadline)
            elif isinstance(error, ConnectFailure):
                self._attempt_failed(None, error.kind, sent=False, detail=str(error))
            else:
                log.error("dial_failed", upstream=self.route.name, error=repr(error))
                self._attempt_failed(None, "connect", sent=False, detail=repr(error))

        task.add_done_callback(connected)

    def _send(self, conn: Connection, head_deadline: float) -> None:
        self.conn = conn
        # _enter(SENT), inlined on the per-request path
        if self.state * 8 + SENT not in _LEGAL:
            self._illegal(SENT)
        self.state = SENT
        conn.attach(self, head_deadline, self.is_head)
        if self.client.write_paused:
            conn.pause_reading()
        pool = conn.pool
        parts = http1.request_head(
            self, pool.path_prefix, pool.authority, self.client.peer, self.attempt
        )
        if self.body:
            parts += http1.chunks(self.body) if self.chunked else self.body
        if self.request_done:
            self.sent_all = True
            if self.chunked:
                parts.append(http1.LAST_CHUNK)
        conn.write(b"".join(parts))
        if self.body_size and self.body_size > self.route.max_retry_body:
            # Streamed once: what was held for the dial is gone, and so is the replay.
            self.body = None
            self.body_kept = False
            self.client.resume_reading(self.client.PAUSED_BY_BODY)

    def _attempt_failed(
        self, conn: Connection | None, kind: str, *, sent: bool, detail: str = ""
    ) -> None:
        """An attempt ended without a response: the filters judge it and say what is next."""
        route = self.route
        elapsed = route.clock() - self.attempt_started
        route.metrics.upstream_errors[kind].inc()
        route.metrics.attempt_failure.inc()
        self.failure_detail = detail
        decision: RetryDecision | None = None
        for filter_ in route.chain.failure_filters:
            verdict = filter_.on_failure(self, conn, kind, sent, elapsed)
            if verdict is REPLAY:
                self._replay()
                return
            if verdict is not None and decision is None:
                decision = verdict
        self._release_endpoint(failed=True)
        if decision is not None and decision.retry:
            self._retry_after(decision)
        elif self.saved is not None and self.saved.complete:
            self._respond_saved()
        else:
            self.answer_error(_FAILURE_ANSWERS.get(kind, errors.UPSTREAM_UNAVAILABLE))

    def _replay(self) -> None:
        """The same attempt again, on a fresh connection to the same endpoint."""
        endpoint = self.endpoint
        assert endpoint is not None
        self._enter(WAITING)
        remaining = self.remaining()
        route = self.route
        self._dial(
            endpoint.pool, min(remaining, route.connect_timeout), route.timer_clock() + remaining
        )

    def remaining(self) -> float:
        """Seconds left of the overall deadline (P_TIMEOUT from the request's start)."""
        route = self.route
        return max(0.0, route.timeout - (route.clock() - self.started))

    def endpoint_name(self) -> str | None:
        endpoint = self.endpoint
        return endpoint.name if endpoint is not None else None

    def _retry_after(self, decision: RetryDecision) -> None:
        route = self.route
        self._enter(WAITING)
        if decision.delay > 0:
            self.pending = route.loop.call_later(decision.delay, self._retry)
        else:
            self.pending = route.loop.call_soon(self._retry)

    def _release_endpoint(self, *, failed: bool) -> None:
        """The attempt on ``endpoint`` is over; a failed one is not tried again if another
        endpoint is left."""
        endpoint = self.endpoint
        if endpoint is not None:
            self.endpoint = None
            # Endpoint.released(), inlined on the per-request path.
            endpoint.in_flight -= 1
            if endpoint.removed and not endpoint.in_flight:
                endpoint.cluster.forget(endpoint)
            if failed:
                tried = self.tried
                if tried is None:
                    self.tried = [endpoint]
                else:
                    tried.append(endpoint)

    # -- driven by the upstream connection --------------------------------------------------

    def on_response_head(self, conn: Connection) -> None:
        route = self.route
        status = conn.status
        if status == 101 and self.upgrade is None:
            self.on_upstream_failure(conn, "bad_response")
            return
        chain = route.chain
        failed = status in chain.failure_statuses
        # Only a filter that reads durations (slow calls, latency) costs a clock read.
        elapsed = route.clock() - self.attempt_started if chain.times_calls else 0.0
        if failed:
            route.metrics.attempt_failure.inc()
        else:
            route.metrics.attempt_succeeded()
        endpoint = self.endpoint
        if endpoint is not None and (failed or endpoint.cluster.measures_latency):
            endpoint.responded(failed, elapsed)
        decision: RetryDecision | None = None
        for filter_ in chain.response_head_filters:
            verdict = filter_.on_response_head(self, conn, failed, elapsed)
            if verdict is not None and decision is None:
                decision = verdict
        if decision is not None and decision.retry:
            self._release_endpoint(failed=True)
            self._save_and_retry(conn, decision)
            return
        self._respond(conn)

    def _respond(self, conn: Connection) -> None:
        # _enter(STREAMING), inlined on the per-request path
        if self.state * 8 + STREAMING not in _LEGAL:
            self._illegal(STREAMING)
        self.state = STREAMING
        self.saved = None
        client = self.client
        status = self.status = conn.status
        # The codec's response_framing(), inlined on the per-request path for the common case.
        if conn.content_length is not None and status != 101:
            framing = http1.LENGTH
        else:
            framing = http1.response_framing(conn, self.is_head, self.http11)
            if framing in (http1.CHUNKED, http1.CODED_CHUNKED):
                self.chunked_out = True
            elif framing in (http1.UNTIL_CLOSE, http1.CODED_UNTIL_CLOSE):
                client.close_after = True
        if not self.keep_alive or client.draining:
            client.close_after = True
        client.out.append(
            http1.response_head(conn, framing, self.attempt, client.close_after, self.http11)
        )
        if framing == http1.TUNNEL:
            self._enter(TUNNEL)

    def on_response_body(self, chunk: bytes) -> None:
        if self.state == STREAMING:
            self.bytes_sent += len(chunk)
            self.client.out.append(http1.chunk(chunk) if self.chunked_out else chunk)
            return
        saved = self.saved
        if saved is not None:
            saved.size += len(chunk)
            if saved.size > _SAVED_BODY_MAX and self.conn is not None:
                self.conn.abort()
                self.conn = None
                self.saved = None
            else:
                saved.body.append(chunk)

    def on_response_end(self, conn: Connection) -> None:
        self.conn = None
        if conn.keep_alive and self.sent_all:
            conn.reuse()
        else:
            conn.close()
        if self.state != STREAMING:
            if self.saved is not None:
                self.saved.complete = True
            return
        self._release_endpoint(failed=False)
        if self.chunked_out:
            self.client.out.append(http1.LAST_CHUNK)
        if self.request_done:
            self._finish(self.status)
        else:
            self._enter(ANSWERED)
            self.client.flush()

    def on_upstream_failure(self, conn: Connection, kind: str) -> None:
        """The connection failed (reset, timeout, garbage) before the response ended."""
        self.conn = None
        conn.abort()
        state = self.state
        if state == WAITING:
            self.saved = None  # the answer being saved is lost; the retry goes ahead
            return
        if state == STREAMING:
            # Bytes of the answer went out already: nothing to retry, the client must see the
            # cut (a truncated body, or a chunked body without its last chunk).
            self.route.metrics.upstream_errors[kind].inc()
            log.warn(
                "upstream_failed_mid_response",
                upstream=self.route.name,
                kind=kind,
                endpoint=self.endpoint_name(),
                request_id=self.request_id.decode("latin-1"),
            )
            self._release_endpoint(failed=True)
            self.client.close_after = True
            self.client.abort()
            self._finish(self.status)
            return
        if kind == "timeout" and not self.request_done:
            # The upstream waited for a body the client never finished sending.
            self._abandon_attempt()
            self.answer_error(errors.BODY_TIMEOUT)
            return
        self._attempt_failed(conn, kind, sent=True)

    def on_upstream_upgrade(self, conn: UpstreamConnection, data: bytes) -> None:
        """101 Switching Protocols: from now on both connections relay raw bytes."""
        self.conn = None
        self._release_endpoint(failed=False)
        self.client.flush()
        self.client.start_tunnel(conn, data)
        self._finish(101, client_gone=True)

    # -- answers ----------------------------------------------------------------------------

    def _save_and_retry(self, conn: Connection, decision: RetryDecision) -> None:
        """Retry, keeping this failed answer meanwhile: it is the client's answer if the
        circuit opens before another upstream answer comes."""
        self.saved = _SavedResponse(conn)
        if conn.head_only or conn.status in (204, 304):
            self.saved.complete = True
        self._retry_after(decision)

    def _respond_saved(self) -> None:
        saved = self.saved
        assert saved is not None
        self.saved = None
        body = b"".join(saved.body)
        close = self._must_close()
        self.client.close_after = self.client.close_after or close
        self.client.send(
            http1.whole_response(
                saved.status_line,
                saved.parts,
                body,
                self.attempt,
                close=close,
                is_head=self.is_head,
            )
        )
        self.status = saved.status
        self.bytes_sent = len(body)
        self._answered()

    def _answer_rejected(self, answer: Answer) -> None:
        """A filter answered instead of an attempt (an open circuit, an overload...)."""
        if self.saved is not None and self.saved.complete:
            self._respond_saved()
            return
        client = self.client
        if answer.error is None:  # CUT: no answer at all
            self._abandon_attempt()
            client.close_after = True
            client.abort()
            self._finish(NO_RESPONSE)
            return
        # The hot case of an open circuit (a first attempt on a connection kept alive, as
        # _must_close() would judge): the answer is pre-built but for the request id.
        if (
            answer.error is not errors.CIRCUIT_OPEN
            or answer.retry_after is None
            or self.attempt
            or not self.keep_alive
            or not self.http11
            or self.is_head
            or self.expect_continue
            or client.draining
        ):
            self.answer_error(answer.error, answer.retry_after)
            return
        client.out.append(self.route.errors.circuit_open(answer.retry_after, self.request_id))
        self.status = answer.error.status
        if self.request_done:
            self._finish(self.status)
        else:
            self._enter(ANSWERED)
            client.flush()

    def answer_error(self, error: SidecarError, retry_after: int | None = None) -> None:
        """Answer with a sidecar-made response (none of it has gone out yet)."""
        route = self.route
        client = self.client
        if error.reason:
            route.metrics.bad_requests[error.reason].inc()
            log.warn(
                "bad_request",
                upstream=route.name,
                reason=error.reason,
                status=error.status,
                remote_addr=client.remote_addr,
            )
        # A refused request (a client fault) ends the connection: its framing is not trusted.
        close = bool(error.reason) or self._must_close()
        if close:
            client.close_after = True
        client.send(
            route.errors.render(
                error,
                attempts=self.attempt,
                close=close,
                request_id=self.request_id,
                retry_after=retry_after,
            )
        )
        self.status = error.status
        self._answered()

    def _must_close(self) -> bool:
        """Whether a sidecar-made answer ends the connection: the client asked for it, the
        process is draining, a HEAD answer carries a body, or a client waiting for 100
        Continue will not send its body."""
        return (
            not self.keep_alive
            or not self.http11  # HTTP/1.0 kept alive: only relayed answers say keep-alive
            or self.client.draining
            or self.is_head
            or (self.expect_continue and not self.continued and not self.request_done)
        )

    def _answered(self) -> None:
        if self.request_done or self.client.close_after:
            self._finish(self.status)
        else:
            self._enter(ANSWERED)
            self.client.flush()

    def _body_too_large(self) -> None:
        self.request_done = True  # nothing more is taken: the connection closes
        self.client.pause_reading(self.client.PAUSED_FOR_GOOD)
        self._abandon_attempt()
        if self.state == STREAMING:
            self.client.abort()
            self._finish(self.status)
        else:
            self.answer_error(errors.BODY_TOO_LARGE)

    # -- the end ----------------------------------------------------------------------------

    def _abandon_attempt(self) -> None:
        """Stop the attempt under way without a verdict: the filters release what they took."""
        self._cancel_pending()
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        self._release_endpoint(failed=False)
        for filter_ in self.route.chain.done_filters:
            filter_.on_done(self)

    def _cancel_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending.cancel()

    def _finish(self, status: int, *, client_gone: bool = False) -> None:
        # _enter(DONE), inlined on the per-request path
        if self.state * 8 + DONE not in _LEGAL:
            self._illegal(DONE)
        self.state = DONE
        route = self.route
        for filter_ in route.chain.done_filters:
            filter_.on_done(self)
        route.in_flight -= 1
        duration = route.clock() - self.started
        if status != CLIENT_GONE:
            route.metrics.answered(status, duration)
        if route.access_log is not None:
            route.access_log.write(self, status, duration)
        if not client_gone:
            self.client.on_exchange_done(self)
