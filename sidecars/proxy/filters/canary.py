"""Canary routing as a filter: the share of requests steered to the canary cluster, the
header that forces a version or keeps a user on one, the retry of a failed canary attempt on
the stable cluster, and the counts the rollout judge reads.

The filter steers by setting ``exchange.cluster`` and returning ``None``, so the filters after
it still see the request (the breaker guards only its own cluster, so a canary attempt takes
no permit of it). It is placed right after the retry filter.

The rollout itself (weight, steps, the judge) is ``sidecars.policies.canary``; this module
runs its timer, applies its transitions (gauge, counter, a ``canary_transition`` event with
the figures) and serves the admin actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from sidecars import observability as obs
from sidecars.admin import AdminError, Resource, ResourceRequest
from sidecars.observability import get_logger
from sidecars.policies.canary import PROGRESSING, ROLLED_BACK, Rollout, Transition
from sidecars.proxy.filters import Filter

if TYPE_CHECKING:
    from sidecars.policies.retry import RetryDecision
    from sidecars.proxy.cluster import Cluster
    from sidecars.proxy.connection import Connection
    from sidecars.proxy.exchange import Exchange

log: Final = get_logger("sidecars.proxy")

CANARY, STABLE = b"canary", b"stable"


class CanaryFilter(Filter):
    name = "canary"

    def __init__(
        self,
        rollout: Rollout,
        stable: Cluster,
        canary: Cluster,
        *,
        header: str | None,
        sidecar: str,
        upstream: str,
        randrange: Callable[[int], int],
    ) -> None:
        self.rollout = rollout
        self.stable = stable
        self.canary = canary
        self.header = header.encode("latin-1") if header is not None else None
        self.upstream = upstream
        self.weight = rollout.weight
        self.times_calls = bool(rollout.steps)  # the judge compares latencies
        self._randrange = randrange
        # Attempts by (version, code), read at scrape time (sidecar_canary_requests_total).
        self.counts: dict[tuple[str, int | str], int] = {}
        self.sidecar = sidecar
        base = (sidecar, upstream)
        self._base = base
        self._weight_gauge = obs.CANARY_WEIGHT.labels(*base)
        self._weight_gauge.set(self.weight)
        self._task: asyncio.Task[None] | None = None
        self._handle = obs.WeakHandle(self)
        FILTERS.add(self._handle)
        # Told of every transition this replica makes itself (the shared state's news), with
        # whether an operator made it (it then wins over what other replicas did meanwhile).
        self.on_local_transition: Callable[[bool], None] | None = None

    # -- the request path -------------------------------------------------------------------

    def on_request(self, exchange: Exchange) -> None:
        if exchange.attempt:
            if exchange.cluster is self.canary:
                exchange.cluster = self.stable  # a failed canary attempt is retried on stable
            return
        weight = self.weight
        header = self.header
        if header is not None:
            value = _header_value(exchange.lines, header)
            if value is not None:
                forced = value.lower()
                if forced == CANARY:
                    exchange.cluster = self.canary
                    return
                if forced == STABLE:
                    return
                # Sticky: the same value lands on the same side on every replica.
                if zlib.crc32(value) % 100 < weight and self.canary.serving:
                    exchange.cluster = self.canary
                return
        if weight and (weight >= 100 or self._randrange(100) < weight) and self.canary.serving:
            exchange.cluster = self.canary

    def on_response_head(
        self, exchange: Exchange, conn: Connection, failed: bool, elapsed: float
    ) -> RetryDecision | None:
        self._count(exchange.cluster, conn.status, failed, elapsed)
        return None

    def on_failure(
        self,
        exchange: Exchange,
        conn: Connection | None,
        kind: str,
        sent: bool,
        elapsed: float,
    ) -> RetryDecision | None:
        self._count(exchange.cluster, kind, True, elapsed)
        return None

    def _count(self, cluster: Cluster, code: int | str, failed: bool, elapsed: float) -> None:
        if cluster is self.canary:
            version = "canary"
        elif cluster is self.stable:
            version = "stable"
        else:
            return  # the fallback
        key = (version, code)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if self.rollout.state == PROGRESSING:
            self.rollout.record(version == "canary", failed, elapsed)

    # -- the rollout ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and self.rollout.steps:
            self._task = asyncio.get_running_loop().create_task(self._judge())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _judge(self) -> None:
        period = min(1.0, self.rollout.interval / 10)
        while True:
            await asyncio.sleep(period)
            self.judge_once()

    def judge_once(self) -> None:
        transition = self.rollout.tick()
        if transition is not None:
            self.apply(transition)

    def act(self, action: str, weight: int | None = None) -> Transition:
        """An operator's action: promote, rollback, pause, resume, weight."""
        rollout = self.rollout
        if action == "weight":
            assert weight is not None
            transition = rollout.set_weight(weight)
        else:
            transition = getattr(rollout, action)()
        self.apply(transition)
        return transition

    def apply(self, transition: Transition) -> None:
        """Make a transition effective and report it (a shared one is not published again)."""
        self.weight = transition.weight
        self._weight_gauge.set(transition.weight)
        obs.CANARY_TRANSITIONS.labels(*self._base, transition.state, transition.reason).inc()
        emit = log.warn if transition.state == ROLLED_BACK else log.info
        emit(
            "canary_transition",
            upstream=self.upstream,
            to=transition.state,
            weight=transition.weight,
            reason=transition.reason,
            **transition.figures,
        )
        if transition.reason != "shared" and self.on_local_transition is not None:
            self.on_local_transition(transition.reason == "operator")

    def status(self) -> dict[str, Any]:
        return {
            **self.rollout.snapshot(),
            "canary_serving": self.canary.serving,
            "header": self.header.decode("latin-1") if self.header is not None else None,
        }


def _header_value(lines: list[bytes], name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) among the request's forwarded lines."""
    for index in range(0, len(lines), 4):
        if lines[index].lower() == name:
            return lines[index + 2].strip()
    return None


# Every canary filter of the process, for the scrape-time request counts (observability).
FILTERS: Final[weakref.WeakSet[obs.WeakHandle[CanaryFilter]]] = weakref.WeakSet()


def _samples() -> Iterator[obs.CanarySample]:
    for handle in list(FILTERS):
        canary = handle.owner
        yield canary.sidecar, canary.upstream, dict(canary.counts)


obs.CANARY_REQUESTS.source = _samples

ACTIONS: Final = ("promote", "rollback", "pause", "resume", "weight")


def admin_resource(filters: Mapping[str, CanaryFilter]) -> Resource:
    """POST /canary/<action> (token-guarded): every route's canary, or the one named by
    ``?route=``; /canary/weight takes ``{"weight": N}``."""

    async def serve(request: ResourceRequest) -> tuple[int, Any]:
        action = request.rest.removeprefix("/")
        if action not in ACTIONS:
            raise AdminError(404, "not_found", f"no canary action {action!r}: {', '.join(ACTIONS)}")
        if request.method != "POST":
            raise AdminError(405, "method_not_allowed", f"{request.method} /canary/{action}")
        wanted = request.query.get("route")
        chosen = {name: f for name, f in filters.items() if wanted is None or name == wanted}
        if not chosen:
            raise AdminError(404, "not_found", f"no route with a canary named {wanted!r}")
        weight = _weight(request.body) if action == "weight" else None
        views: dict[str, Any] = {}
        for name, canary in chosen.items():
            canary.act(action, weight)
            views[name] = canary.status()
        return 200, {"canary": action, "routes": views}

    return serve


def _weight(body: bytes) -> int:
    try:
        weight = orjson.loads(body).get("weight")
    except (orjson.JSONDecodeError, AttributeError):
        weight = None
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
        raise AdminError(400, "bad_request", 'expected a JSON body {"weight": N}, N from 0 to 100')
    return weight
