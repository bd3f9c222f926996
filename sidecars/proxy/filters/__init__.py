"""The per-route filter chain: each per-request policy is one ``Filter`` owning its whole
decision, asked by the exchange at fixed points of an attempt.

Hooks (override only the ones a policy needs; the chain keeps, per hook, just the filters
that override it, so a hook no filter implements costs nothing per request):

``on_request(exchange)``
    Before every attempt (``exchange.attempt`` is the number of attempts made so far).
    Return ``None`` to admit, an ``Answer`` to answer without an attempt (``CUT``: close the
    client's connection without an answer, recorded as status 444), or a cluster to
    send this attempt (and the later ones) to instead. The first non-None verdict wins and
    the filters after it are not asked. To steer without stopping the chain, set
    ``exchange.cluster`` and return ``None`` (the canary filter does).
    ``PARK`` means "not yet": the filter keeps the
    exchange (a queue waiting for a slot, a Redis round trip) and later calls
    ``exchange.resume(self)`` (the filters after it are asked, then the attempt is made) or
    ``exchange.reject(answer)``; meanwhile the exchange is WAITING, and if it ends (the client
    left) ``on_done`` is called as usual, so the filter drops it.
``on_attempt(exchange)``
    An endpoint was picked for this attempt (``exchange.endpoint``), nothing sent yet. Return
    ``None`` to go on, a ``Delay`` to hold the attempt that long first (within its deadline),
    or a ``Connection`` (a compiled class naming the trait as a base: an interpreted class
    cannot, in the compiled build) that answers in the upstream's place (``attach`` it is given the
    exchange, then drives ``on_response_head``/``on_upstream_failure`` like a real one), so
    every other filter judges that answer as the endpoint's. Fault injection uses it; the
    first non-None verdict wins.
``on_response_head(exchange, conn, failed, elapsed)``
    The response head of an attempt arrived. ``failed``: the route's failure statuses say so;
    ``elapsed``: seconds since the attempt began (0.0 unless ``times_calls`` of some filter
    asked for the clock). Return a ``RetryDecision`` to say whether to retry; every filter
    is told.
``on_failure(exchange, conn, kind, sent, elapsed)``
    The attempt failed without a response (``kind``: connect, tls, timeout, reset,
    bad_response; ``sent``: the request reached the connection). A ``REPLAY`` verdict ends the
    round at once: the attempt did not count, and it is made again on a fresh connection.
``on_done(exchange)``
    The attempt was abandoned or the exchange ended: release what was taken. Called more than
    once per exchange, so it must be idempotent.

Filters are built once per route (aiohttp's and uvicorn's middleware are the model) and hold
no per-request state of their own: what one request needs is kept on the exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from sidecars.policies.retry import RetryDecision

if TYPE_CHECKING:
    from sidecars.proxy.cluster import Cluster
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.errors import SidecarError
    from sidecars.proxy.exchange import Exchange

# The attempt is made again on a fresh connection without counting as one (a pooled
# connection the upstream had closed).
REPLAY: Final = RetryDecision(True, 0.0, "replay")


class Park:
    """``on_request``'s verdict that the filter holds the exchange and resumes it later."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PARK"


PARK: Final = Park()


class Answer:
    """``on_request``'s verdict to answer with a sidecar-made response, not an attempt
    (``error`` None: no answer at all, the client's connection is cut: ``CUT``)."""

    __slots__ = ("error", "retry_after")

    def __init__(self, error: SidecarError | None, retry_after: int | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


CUT: Final = Answer(None)


class Refusals:
    """The answers refusing with ``error``, by Retry-After seconds: one object each, not one
    per refused request (at most ``kept``; past it the cache starts again)."""

    __slots__ = ("_answers", "_error", "_kept")

    def __init__(self, error: SidecarError, kept: int = 64) -> None:
        self._error = error
        self._kept = kept
        self._answers: dict[int, Answer] = {}

    def get(self, retry_after: int) -> Answer:
        answers = self._answers
        answer = answers.get(retry_after)
        if answer is None:
            if len(answers) >= self._kept:
                answers.clear()
            answer = answers[retry_after] = Answer(self._error, retry_after)
        return answer


class Delay:
    """``on_attempt``'s verdict to hold the attempt ``seconds`` before it goes on. With
    ``in_attempt`` the time counts in the attempt (its deadline and its duration, as a slow
    upstream would); without, the attempt starts afresh after it."""

    __slots__ = ("in_attempt", "seconds")

    def __init__(self, seconds: float, *, in_attempt: bool = True) -> None:
        self.seconds = seconds
        self.in_attempt = in_attempt


if TYPE_CHECKING:
    from typing import TypeAlias

    # What on_request answers.
    Verdict: TypeAlias = Answer | Cluster | Park | None


class Filter:
    """A per-request policy. Subclasses override the hooks they need (see the module doc)."""

    name = "filter"  # its key in the route's /status
    # Whether on_response_head/on_failure read ``elapsed`` (the clock is spared otherwise).
    times_calls = False
    # Hooks this instance overrides but has nothing to do in, as configured (not called;
    # a change after the chain is built needs FilterChain.refresh()).
    idle_hooks: tuple[str, ...] = ()

    def on_request(self, exchange: Exchange) -> Verdict:
        return None

    def on_attempt(self, exchange: Exchange) -> Delay | Connection | None:
        return None

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        return None

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        return None

    def on_done(self, exchange: Exchange) -> None:
        return None

    def status(self) -> dict[str, Any] | None:
        """This filter's part of the route's /status (None: nothing to show)."""
        return None


def _overrides(filter_: Filter, hook: str) -> bool:
    return getattr(type(filter_), hook) is not getattr(Filter, hook) and (
        hook not in filter_.idle_hooks
    )


class FilterChain:
    """A route's filters in order, and per hook the filters overriding it. The exchange calls
    each hook as a method of the filter (a native method call in the compiled build, where a
    stored bound method would be a Python-level call with its arguments parsed again)."""

    __slots__ = (
        "attempt_filters",
        "done_filters",
        "failure_filters",
        "failure_statuses",
        "filters",
        "request_filters",
        "request_filters_after",
        "response_head_filters",
        "times_calls",
    )

    def __init__(
        self,
        filters: Sequence[Filter],
        *,
        failure_statuses: frozenset[int],
        times_calls: bool = False,
    ) -> None:
        """``failure_statuses``: the route's classification of a response head as a failure
        (``P_FAILURE_STATUSES``), given to every filter; ``times_calls``: attempts are timed
        even when no filter asks (the cluster's latency-aware balancer does)."""
        self.filters = tuple(filters)
        self.failure_statuses = failure_statuses
        self.times_calls = times_calls or any(f.times_calls for f in self.filters)
        self.refresh()

    def refresh(self) -> None:
        """Gather each hook's filters again (a filter's ``idle_hooks`` changed)."""

        def overriding(hook: str) -> tuple[Filter, ...]:
            return tuple(f for f in self.filters if _overrides(f, hook))

        self.request_filters: tuple[Filter, ...] = overriding("on_request")
        self.attempt_filters: tuple[Filter, ...] = overriding("on_attempt")
        # For a parked exchange resumed by a filter: the on_request filters after that one.
        self.request_filters_after: dict[Filter, tuple[Filter, ...]] = {
            f: tuple(g for g in self.filters[i + 1 :] if _overrides(g, "on_request"))
            for i, f in enumerate(self.filters)
        }
        self.response_head_filters: tuple[Filter, ...] = overriding("on_response_head")
        self.failure_filters: tuple[Filter, ...] = overriding("on_failure")
        self.done_filters: tuple[Filter, ...] = overriding("on_done")

    def status(self) -> dict[str, Any]:
        """Each filter's part of the route's /status, under the filter's name."""
        parts: dict[str, Any] = {}
        for filter_ in self.filters:
            part = filter_.status()
            if part is not None:
                parts[filter_.name] = part
        return parts
