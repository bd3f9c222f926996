"""Retries as a filter: every retry rule in one place, asked by the exchange after each
attempt (Envoy's router asking ``RetryState::shouldRetryHeaders``).

It owns the mapping of failure kinds to ``P_RETRY_ON`` names, the retry budget, the log event
of each failed attempt, and the replay of a request cut by a pooled connection that the
upstream had closed meanwhile (not counted as an attempt).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from sidecars.observability import get_logger
from sidecars.policies.retry import (
    IDEMPOTENT_METHODS,
    BackoffSchedule,
    RetryBudget,
    RetryDecision,
    RetryPolicy,
    parse_retry_after,
)
from sidecars.proxy.filters import REPLAY, Filter

if TYPE_CHECKING:
    from sidecars.policies.window import Clock
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.metrics import RouteMetrics
    from sidecars.settings import RetrySettings

log: Final = get_logger("sidecars.proxy")

# Failure kinds as the retry policy names them (P_RETRY_ON).
RETRY_KIND: Final = {
    "connect": "connect-failure",
    "dns": "connect-failure",
    "tls": "connect-failure",
    "timeout": "timeout",
    "reset": "reset",
    "bad_response": "reset",
}


class RetryFilter(Filter):
    name = "retry_budget"

    def __init__(
        self,
        settings: RetrySettings,
        metrics: RouteMetrics,
        upstream: str,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        random: Clock | None = None,
    ) -> None:
        self.metrics = metrics
        self.upstream = upstream
        self.max_attempts = settings.max_attempts
        self.statuses = settings.retry_on.statuses
        self.budget = RetryBudget(
            settings.budget_ratio, settings.budget_min_per_second, clock=clock
        )
        backoff = (
            BackoffSchedule(settings.backoff_base, settings.backoff_max)
            if random is None
            else BackoffSchedule(settings.backoff_base, settings.backoff_max, random)
        )
        self.policy = RetryPolicy(settings, self.budget, backoff)
        self._wall_clock = wall_clock
        self.retries = 0  # retries decided
        if self.max_attempts == 1:
            self.idle_hooks = ("on_request",)  # no budget to count requests for

    def on_request(self, exchange: Exchange) -> None:
        if exchange.attempt == 0:
            self.budget.record_request()

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        status = conn.status
        if status not in self.statuses:
            return None
        decision = self._decide(exchange, status, True, conn.retry_after)
        self._log_attempt_failed(exchange, "status", decision, status=status)
        return decision

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        if (
            kind == "reset"
            and conn is not None
            and conn.reused
            and not conn.received
            and not exchange.replayed
            and exchange.body_kept
            and exchange.request_done
            and (exchange.method in IDEMPOTENT_METHODS or exchange.idempotency_key)
        ):
            # Likely a pooled connection the upstream closed meanwhile: once more on a fresh
            # one, not counted as an attempt. Only for requests safe to repeat, since the
            # upstream may have read it before the reset (Go's transport does the same).
            exchange.replayed = True
            return REPLAY
        decision = self._decide(exchange, RETRY_KIND[kind], sent, None)
        self._log_attempt_failed(exchange, kind, decision, detail=exchange.failure_detail)
        return decision

    def on_connect_failure(self, attempt: int, kind: str, remaining: float) -> RetryDecision | None:
        """TCP mode: a dial (attempt ``attempt``, from 1) failed before any byte was relayed:
        dial another endpoint? The same rule as an HTTP attempt that sent nothing."""
        if self.max_attempts <= attempt:
            return None
        return self._counted(
            self.policy.decide(
                attempt=attempt,
                failure=RETRY_KIND[kind],
                method=b"",
                has_idempotency_key=False,
                request_sent=False,
                body_replayable=True,
                retry_after=None,
                remaining=remaining,
            )
        )

    def _decide(
        self, exchange: Exchange, failure: str | int, sent: bool, retry_after: bytes | None
    ) -> RetryDecision | None:
        """Ask the retry policy (None when this route makes one attempt only)."""
        if self.max_attempts <= exchange.attempt:
            return None
        return self._counted(
            self.policy.decide(
                attempt=exchange.attempt,
                failure=failure,
                method=exchange.method,
                has_idempotency_key=exchange.idempotency_key,
                request_sent=sent,
                body_replayable=exchange.body_kept,
                retry_after=(
                    parse_retry_after(retry_after, self._wall_clock())
                    if retry_after is not None
                    else None
                ),
                remaining=exchange.remaining(),
            )
        )

    def _counted(self, decision: RetryDecision) -> RetryDecision:
        """The policy's decision, counted in the retry metrics."""
        metrics = self.metrics
        if decision.retry:
            metrics.retries[decision.reason].inc()
            self.retries += 1
            return decision
        reason = decision.reason
        if reason == "budget":
            metrics.retry_budget_exhausted.inc()
        elif reason not in ("success", "not_retryable", "max_attempts"):
            metrics.retries_skipped[reason].inc()
        return decision

    def _log_attempt_failed(
        self, exchange: Exchange, kind: str, decision: RetryDecision | None, **fields: object
    ) -> None:
        """One event per failed attempt: its number, what went wrong, and what comes next
        (a retry after ``backoff`` seconds, or why not)."""
        retry = decision is not None and decision.retry
        log.warn(
            "upstream_attempt_failed",
            upstream=self.upstream,
            attempt=exchange.attempt,
            kind=kind,
            retry=retry,
            reason=decision.reason if decision else "max_attempts",
            backoff=round(decision.delay, 4) if decision is not None and retry else None,
            request_id=exchange.request_id.decode("latin-1"),
            endpoint=exchange.endpoint_name(),
            **fields,
        )

    def status(self) -> dict[str, Any] | None:
        return self.budget.snapshot()
