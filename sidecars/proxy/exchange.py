"""One client request through the policy chain: deadline -> retry -> breaker -> upstream.

An exchange is a state machine driven by callbacks from the client connection (request body,
client gone) and the upstream connection (response head, body, end, failure), in the style of
h11's ``_connection.py``: no task per request, no futures on the hot path. The per-request
path is: acquire a breaker permit, take a pooled connection, write the head, judge the
response head, stream the body, record the verdict, release the connection.

States::

    NEW -> WAITING (permit taken; dialling or backing off) -> SENT (head written)
        -> STREAMING (response head given to the client) -> DONE
    any state before STREAMING -> ANSWERED (sidecar-made answer sent; draining the request
        body) -> DONE;  SENT -> TUNNEL (101 Switching Protocols) -> DONE
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sidecars.observability import get_logger
from sidecars.policies.retry import IDEMPOTENT_METHODS, RetryDecision, parse_retry_after
from sidecars.proxy import errors
from sidecars.proxy.errors import SidecarError
from sidecars.proxy.headers import ATTEMPTS_LINES, attempts_line
from sidecars.proxy.pool import ConnectFailure, ConnectionPool
from sidecars.proxy.request import RequestHead
from sidecars.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from sidecars.policies.breaker import Permit
    from sidecars.proxy.client import ClientConnection
    from sidecars.proxy.route import Route

log = get_logger("sidecars.proxy")

NEW, WAITING, SENT, STREAMING, ANSWERED, TUNNEL, DONE = range(7)

# Failure kinds as the retry policy names them (P_RETRY_ON).
_RETRY_KIND = {
    "connect": "connect-failure",
    "dns": "connect-failure",
    "tls": "connect-failure",
    "timeout": "timeout",
    "reset": "reset",
    "bad_response": "reset",
}
_FAILURE_ANSWERS = {"timeout": errors.UPSTREAM_TIMEOUT, "dns": errors.UPSTREAM_UNRESOLVED}
# A failed answer kept while a retry is tried, returned if the circuit then opens.
_SAVED_BODY_MAX = 64 * 1024
# Status recorded in the access log when the client left before its answer (nginx's 499).
CLIENT_GONE = 499
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _SavedResponse:
    """An upstream answer read whole while a retry goes ahead (its head parts and body)."""

    __slots__ = ("body", "complete", "parts", "size", "status", "status_line")

    def __init__(self, conn: UpstreamConnection) -> None:
        self.status = conn.status
        self.status_line = conn.status_line
        self.parts = conn.parts
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False


class Exchange(RequestHead):
    """A client request: its head (parsed into the RequestHead fields) and the work of
    answering it. One object per request, since allocating is a large part of its cost."""

    __slots__ = (
        "attempt",
        "attempt_started",
        "body",
        "body_kept",
        "body_size",
        "bytes_sent",
        "chunked_out",
        "client",
        "conn",
        "continued",
        "fallback",
        "pending",
        "permit",
        "request_done",
        "route",
        "saved",
        "sent_all",
        "stale_retried",
        "started",
        "state",
        "status",
    )

    def __init__(self, client: ClientConnection, route: Route) -> None:
        RequestHead.__init__(self)
        self.client = client
        self.route = route
        self.state = NEW
        self.started = 0.0
        self.attempt = 0
        self.attempt_started = 0.0
        self.permit: Permit | None = None
        self.conn: UpstreamConnection | None = None
        self.pending: asyncio.Task[UpstreamConnection] | asyncio.Handle | None = None
        self.fallback = False
        self.stale_retried = False
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

    # -- driven by the client connection ----------------------------------------------------

    def start(self) -> None:
        route = self.route
        self.started = self.attempt_started = time.monotonic()
        route.in_flight += 1
        if self.error is not None:
            self.answer_error(self.error)
            return
        if route.max_attempts > 1:
            route.budget.record_request()
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
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)
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
                conn.write(b"0\r\n\r\n")
        if state == ANSWERED:
            self._finish(self.status)

    def on_client_gone(self) -> None:
        """The client connection closed before the answer was complete."""
        state = self.state
        if state == NEW:
            self.state = DONE
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
        self.attempt_started = time.monotonic()
        self._attempt()

    def _attempt(self) -> None:
        route = self.route
        pool = route.pool
        breaker = route.breaker
        if self.fallback and route.fallback_pool is not None:
            pool = route.fallback_pool
        elif breaker is not None:
            permit = breaker.acquire()
            if permit is None:
                route.metrics.circuit_rejected()
                if route.fallback_pool is None:
                    self._answer_rejected()
                    return
                self.fallback = True
                route.metrics.fallback_requests.inc()
                pool = route.fallback_pool
            self.permit = permit
        self.state = WAITING
        self.attempt += 1
        if self.expect_continue and not self.continued and not self.request_done:
            # Answered here, not by the upstream: Expect is not forwarded (Envoy does the same),
            # so the body is read only once the request will be tried.
            self.continued = True
            self.client.send(_CONTINUE)
            self.client.flush()
        if self.attempt == 1:
            budget = route.first_try_timeout
        else:
            remaining = self._remaining()
            per_try = route.per_try_timeout
            budget = remaining if per_try is None or per_try > remaining else per_try
        head_deadline = route.loop.time() + budget
        conn = pool.take()
        if conn is not None:
            self._send(conn, head_deadline)
        else:
            self._dial(pool, min(budget, route.connect_timeout), head_deadline)

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
                self._attempt_failed(error.kind, sent=False, detail=str(error))
            else:
                log.error("dial_failed", upstream=self.route.name, error=repr(error))
                self._attempt_failed("connect", sent=False, detail=repr(error))

        task.add_done_callback(connected)

    def _send(self, conn: UpstreamConnection, head_deadline: float) -> None:
        self.conn = conn
        self.state = SENT
        conn.attach(self, head_deadline, self.is_head)
        if self.client.write_paused:
            conn.pause_reading()
        pool = conn.pool
        parts = self.upstream_head(pool.path_prefix, pool.authority, self.client.peer, self.attempt)
        if self.body:
            if self.chunked:
                parts += [b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in self.body]
            else:
                parts += self.body
        if self.request_done:
            self.sent_all = True
            if self.chunked:
                parts.append(b"0\r\n\r\n")
        conn.write(b"".join(parts))
        if self.body_size and self.body_size > self.route.max_retry_body:
            # Streamed once: what was held for the dial is gone, and so is the replay.
            self.body = None
            self.body_kept = False
            self.client.resume_reading(self.client.PAUSED_BY_BODY)

    def _attempt_failed(self, kind: str, *, sent: bool, detail: str = "") -> None:
        route = self.route
        elapsed = time.monotonic() - self.attempt_started
        route.metrics.upstream_errors[kind].inc()
        route.metrics.attempt_failure.inc()
        permit = self.permit
        if permit is not None and route.breaker is not None:
            self.permit = None
            route.breaker.record_failure(permit, kind, elapsed)
        decision = self._decide(_RETRY_KIND[kind], sent, None)
        self._log_attempt_failed(kind, decision, detail=detail)
        if decision is not None and decision.retry:
            self._retry_after(decision)
        elif self.saved is not None and self.saved.complete:
            self._respond_saved()
        else:
            self.answer_error(_FAILURE_ANSWERS.get(kind, errors.UPSTREAM_UNAVAILABLE))

    def _log_attempt_failed(
        self, kind: str, decision: RetryDecision | None, **fields: object
    ) -> None:
        """One event per failed attempt: its number, what went wrong, and what comes next
        (a retry after ``backoff`` seconds, or why not)."""
        retry = decision is not None and decision.retry
        log.warn(
            "upstream_attempt_failed",
            upstream=self.route.name,
            attempt=self.attempt,
            kind=kind,
            retry=retry,
            reason=decision.reason if decision else "max_attempts",
            backoff=round(decision.delay, 4) if decision is not None and retry else None,
            request_id=self.request_id.decode("latin-1"),
            **fields,
        )

    def _decide(
        self, failure: str | int, sent: bool, retry_after: bytes | None
    ) -> RetryDecision | None:
        """Ask the retry policy (None when this route makes one attempt only)."""
        route = self.route
        if route.max_attempts <= self.attempt:
            return None
        decision = route.retry.decide(
            attempt=self.attempt,
            failure=failure,
            method=self.method,
            has_idempotency_key=self.idempotency_key,
            request_sent=sent,
            body_replayable=self.body_kept,
            retry_after=(
                parse_retry_after(retry_after, time.time()) if retry_after is not None else None
            ),
            remaining=self._remaining(),
        )
        if not decision.retry:
            reason = decision.reason
            if reason == "budget":
                route.metrics.retry_budget_exhausted.inc()
            elif reason not in ("success", "not_retryable", "max_attempts"):
                route.metrics.retries_skipped[reason].inc()
        return decision

    def _remaining(self) -> float:
        """Seconds left of the overall deadline (P_TIMEOUT from the request's start)."""
        return max(0.0, self.route.timeout - (time.monotonic() - self.started))

    def _retry_after(self, decision: RetryDecision) -> None:
        route = self.route
        route.metrics.retries[decision.reason].inc()
        route.retries += 1
        self.state = WAITING
        if decision.delay > 0:
            self.pending = route.loop.call_later(decision.delay, self._retry)
        else:
            self.pending = route.loop.call_soon(self._retry)

    # -- driven by the upstream connection --------------------------------------------------

    def on_response_head(self, conn: UpstreamConnection) -> None:
        route = self.route
        status = conn.status
        if status == 101 and self.upgrade is None:
            self.on_upstream_failure(conn, "bad_response")
            return
        breaker = route.breaker
        failed = status in route.failure_statuses
        permit = self.permit
        if permit is not None and breaker is not None:
            self.permit = None
            # Only a slow-call limit reads the duration: the clock is spared otherwise.
            elapsed = time.monotonic() - self.attempt_started if breaker.times_calls else 0.0
            if failed:
                breaker.record_failure(permit, "status", elapsed)
            else:
                breaker.record_success(permit, elapsed)
        if failed:
            route.metrics.attempt_failure.inc()
        else:
            route.metrics.attempt_succeeded()
        if status in route.retry_statuses:
            decision = self._decide(status, True, conn.retry_after)
            self._log_attempt_failed("status", decision, status=status)
            if decision is not None and decision.retry:
                self._save_and_retry(conn, decision)
                return
        self._respond(conn)

    def _respond(self, conn: UpstreamConnection) -> None:
        self.state = STREAMING
        self.saved = None
        client = self.client
        status = self.status = conn.status
        # The answer's head is built on the upstream's relayed header lines.
        parts = conn.parts
        parts.insert(0, conn.status_line)
        if status == 101:
            parts += (b"Connection: upgrade\r\nUpgrade: ", conn.upgrade or b"", b"\r\n")
            self.state = TUNNEL
        elif conn.content_length is not None:
            if status != 204:
                parts += (b"Content-Length: ", conn.content_length, b"\r\n")
        elif self.is_head or status in (204, 304):
            pass
        elif conn.codings is not None:
            # The body's codings (gzip) are the client's to undo; chunked framing follows
            # them, or the body ends with the connection as the upstream's did.
            if conn.chunked and self.http11:
                parts += (b"Transfer-Encoding: ", conn.codings, b", chunked\r\n")
                self.chunked_out = True
            else:
                parts += (b"Transfer-Encoding: ", conn.codings, b"\r\n")
                client.close_after = True
        elif self.http11:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked_out = True
        else:
            client.close_after = True  # HTTP/1.0: the body ends when the connection does
        attempt = self.attempt
        parts.append(
            ATTEMPTS_LINES[attempt] if attempt < len(ATTEMPTS_LINES) else attempts_line(attempt)
        )
        if not self.keep_alive or client.draining:
            client.close_after = True
        if status == 101:
            parts.append(b"\r\n")
        elif client.close_after:
            parts.append(b"Connection: close\r\n\r\n")
        elif self.http11:
            parts.append(b"\r\n")
        else:
            parts.append(b"Connection: keep-alive\r\n\r\n")  # HTTP/1.0 asked to keep it
        client.out.append(b"".join(parts))

    def on_response_body(self, chunk: bytes) -> None:
        if self.state == STREAMING:
            self.bytes_sent += len(chunk)
            if self.chunked_out:
                self.client.out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.client.out.append(chunk)
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

    def on_response_end(self, conn: UpstreamConnection) -> None:
        self.conn = None
        if conn.keep_alive and self.sent_all:
            conn.pool.put(conn)
        else:
            conn.close()
        if self.state != STREAMING:
            if self.saved is not None:
                self.saved.complete = True
            return
        if self.chunked_out:
            self.client.out.append(b"0\r\n\r\n")
        if self.request_done:
            self._finish(self.status)
        else:
            self.state = ANSWERED
            self.client.flush()

    def on_upstream_failure(self, conn: UpstreamConnection, kind: str) -> None:
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
                request_id=self.request_id.decode("latin-1"),
            )
            self.client.close_after = True
            self.client.abort()
            self._finish(self.status)
            return
        if kind == "timeout" and not self.request_done:
            # The upstream waited for a body the client never finished sending.
            self._release_permit()
            self.answer_error(errors.BODY_TIMEOUT)
            return
        if (
            kind == "reset"
            and conn.reused
            and not conn.received
            and not self.stale_retried
            and self.body_kept
            and self.request_done
            and (self.method in IDEMPOTENT_METHODS or self.idempotency_key)
        ):
            # Likely a pooled connection the upstream closed meanwhile: try once more on a
            # fresh one, not counted as an attempt. Only for requests safe to repeat, since
            # the upstream may have read it before the reset (Go's transport does the same).
            self.stale_retried = True
            self.state = WAITING
            remaining = self._remaining()
            head_deadline = self.route.loop.time() + remaining
            self._dial(conn.pool, min(remaining, self.route.connect_timeout), head_deadline)
            return
        self._attempt_failed(kind, sent=True)

    def on_upstream_upgrade(self, conn: UpstreamConnection, data: bytes) -> None:
        """101 Switching Protocols: from now on both connections relay raw bytes."""
        self.conn = None
        self.client.flush()
        self.client.start_tunnel(conn, data)
        self._finish(101, client_gone=True)

    # -- answers ----------------------------------------------------------------------------

    def _save_and_retry(self, conn: UpstreamConnection, decision: RetryDecision) -> None:
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
            b"%b%b%b%b%b\r\n%b"
            % (
                saved.status_line,
                b"".join(saved.parts),
                b"Content-Length: %d\r\n" % len(body),
                attempts_line(self.attempt),
                b"Connection: close\r\n" if close else b"",
                b"" if self.is_head else body,
            )
        )
        self.status = saved.status
        self.bytes_sent = len(body)
        self._answered()

    def _answer_rejected(self) -> None:
        if self.saved is not None and self.saved.complete:
            self._respond_saved()
            return
        route = self.route
        breaker = route.breaker
        assert breaker is not None
        # Whole seconds rounded up, at least 1 (cheaper than max(1, math.ceil(...))).
        retry_after = int(-(-breaker.retry_after() // 1)) or 1
        client = self.client
        # The hot case of an open circuit (a first attempt on a connection kept alive, as
        # _must_close() would judge): the answer is pre-built but for the request id.
        if (
            self.attempt
            or not self.keep_alive
            or not self.http11
            or self.is_head
            or self.expect_continue
            or client.draining
        ):
            self.answer_error(errors.CIRCUIT_OPEN, retry_after)
            return
        client.out.append(route.errors.circuit_open(retry_after, self.request_id))
        self.status = 503
        if self.request_done:
            self._finish(503)
        else:
            self.state = ANSWERED
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
            self.state = ANSWERED
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
        """Stop the attempt under way without a verdict for the breaker."""
        self._cancel_pending()
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()
        self._release_permit()

    def _release_permit(self) -> None:
        permit = self.permit
        breaker = self.route.breaker
        if permit is not None and breaker is not None:
            self.permit = None
            breaker.release(permit)

    def _cancel_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending.cancel()

    def _finish(self, status: int, *, client_gone: bool = False) -> None:
        self.state = DONE
        route = self.route
        route.in_flight -= 1
        duration = time.monotonic() - self.started
        if status != CLIENT_GONE:
            route.metrics.answered(status, duration)
        if route.access_log is not None:
            route.access_log.write(self, status, duration)
        if not client_gone:
            self.client.on_exchange_done(self)
