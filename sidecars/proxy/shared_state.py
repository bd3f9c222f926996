"""One route's breaker state (and canary rollout) shared across replicas through Redis, off
the request path.

The engine asks its local ``CircuitBreaker`` per request and never waits on Redis. Every
``interval`` a background task exchanges news with the store in pybreaker's own Redis layout
(``CircuitRedisStorage``, one namespace per route key), on a thread of its own:

- local transitions are published (a pybreaker machine on the Redis storage makes them, so
  the keys look as any pybreaker client expects), and local failures are added to the shared
  consecutive-failure counter (a local success resets it);
- a remote state change is adopted (reason ``shared``), an open period keeping its age, so
  replicas open together; a shared count at the threshold trips a replica that saw fewer.

A canary rollout (``SharedRollout``) is shared the same way: its state, weight and a
generation in one Redis hash, written by compare-and-set on the generation.

When Redis is unreachable the replica keeps serving on its local state: the unpublished news
is kept for later, each failed exchange is counted in
``sidecar_circuit_shared_state_errors_total``, one warning is logged per outage and one info
event when the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sidecars.envparse import mask_url
from sidecars.observability import (
    CANARY_SHARED_STATE_ERRORS,
    CIRCUIT_SHARED_STATE_ERRORS,
    get_logger,
)
from sidecars.policies.breaker import CircuitBreaker, SharedDelta

if TYPE_CHECKING:
    from sidecars.proxy.filters.canary import CanaryFilter

log = get_logger("sidecars.proxy.shared_state")

_FROM_PYBREAKER = {
    pybreaker.STATE_CLOSED: "closed",
    pybreaker.STATE_OPEN: "open",
    pybreaker.STATE_HALF_OPEN: "half_open",
}
_NO_NEWS = SharedDelta(None, 0, False)


@dataclass(frozen=True, slots=True)
class _RemoteView:
    state: str
    failures: int
    open_elapsed: float


class _StorageErrors(logging.Handler):
    """pybreaker's Redis storage logs and swallows Redis errors (answering "closed" when it
    cannot read the state). Given to the storage as its logger, this keeps them instead, so a
    failed exchange is noticed, not mistaken for news."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.errors.append(error or RuntimeError(record.getMessage()))

    def raise_first(self) -> None:
        errors, self.errors = self.errors, []
        if errors:
            raise errors[0]


class _RedisSync:
    """A background exchange with Redis every ``interval`` on a thread of its own, and the
    bookkeeping of outages (``errors_metric``, one warning per outage, one info when back).
    Subclasses implement ``sync_once()``."""

    kind = "shared"
    detail = ""

    def __init__(
        self,
        redis_url: str,
        key: str,
        errors_metric: Any,
        *,
        interval: float,
        redis_timeout: float,
    ) -> None:
        self.key = key
        self.interval = interval
        self._redis_url = mask_url(redis_url)
        # No retries inside the client: the next exchange is the retry, and a dead Redis must
        # cost one short timeout per exchange, not a backoff ladder.
        self._client = redis.Redis.from_url(
            redis_url,
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._errors_metric = errors_metric
        # One thread per route: a hung Redis call never holds up the loop's default executor
        # (DNS lookups run there).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-{key}")
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._ever_connected = False
        self._republish = False
        self._outage_since: float | None = None
        self._failed_exchanges = 0
        self._last_error: str | None = None
        self._last_sync: float | None = None

    async def start(self) -> None:
        """Start syncing in the background; an unreachable Redis does not fail start-up."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.kind}-{self.key}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(redis.RedisError, OSError):
            await loop.run_in_executor(self._executor, self._client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "redis": self._redis_url,
            "key": self.key,
            "connected": self._connected,
            "last_error": self._last_error,
            "last_sync_age": (
                None if self._last_sync is None else round(time.monotonic() - self._last_sync, 3)
            ),
            "failed_exchanges": self._failed_exchanges,
            "interval": self.interval,
        }

    async def sync_once(self) -> bool:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self.interval)

    # -- bookkeeping on the loop ------------------------------------------------------------

    def _exchange_failed(self, error: BaseException) -> None:
        self._failed_exchanges += 1
        self._errors_metric.inc()
        self._connected = False
        self._republish = self._ever_connected
        self._last_error = f"{type(error).__name__}: {error}"
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "shared_state_unavailable",
                key=self.key,
                redis=self._redis_url,
                error=self._last_error,
                detail=self.detail,
            )

    def _exchange_succeeded(self) -> None:
        self._last_sync = time.monotonic()
        self._connected = True
        if self._outage_since is not None:
            log.info(
                "shared_state_recovered",
                key=self.key,
                redis=self._redis_url,
                outage_seconds=round(self._last_sync - self._outage_since, 3),
                failed_exchanges=self._failed_exchanges,
            )
            self._outage_since = None
        elif not self._ever_connected:
            log.info("shared_state_connected", key=self.key, redis=self._redis_url)
        self._ever_connected = True


class SharedCircuitState(_RedisSync):
    """Shares ``breaker``'s state under ``key`` in the Redis at ``redis_url``."""

    kind = "shared-breaker"
    detail = "serving on local breaker state until Redis answers"

    def __init__(
        self,
        breaker: CircuitBreaker,
        redis_url: str,
        key: str,
        sidecar: str,
        upstream: str,
        *,
        interval: float = 0.1,
        redis_timeout: float = 0.5,
    ) -> None:
        super().__init__(
            redis_url,
            key,
            CIRCUIT_SHARED_STATE_ERRORS.labels(sidecar=sidecar, upstream=upstream),
            interval=interval,
            redis_timeout=redis_timeout,
        )
        self._breaker = breaker
        self._storage_errors = _StorageErrors()
        self._storage_logger = logging.Logger(f"sidecars.shared_state.{key}")
        self._storage_logger.addHandler(self._storage_errors)
        self._storage: pybreaker.CircuitRedisStorage | None = None
        self._remote_machine: pybreaker.CircuitBreaker | None = None
        self._unpublished = _NO_NEWS
        self._seen_remote: str | None = None

    async def sync_once(self) -> bool:
        """One exchange with the store; True when it succeeded."""
        # Read first: an open period that is over becomes half-open, news for this exchange.
        local_state = self._breaker.state
        self._unpublished = self._unpublished.then(self._breaker.take_shared_delta())
        news = self._unpublished
        if self._republish and news.transition is None and local_state != "closed":
            # Back after an outage: the store may have lost or missed what this replica knows
            # (a restarted Redis reads as closed), so an open or half-open state is said again.
            news = SharedDelta(local_state, news.failures, news.reset)
        loop = asyncio.get_running_loop()
        try:
            view = await loop.run_in_executor(self._executor, self._exchange, news)
        except Exception as error:  # any failure of the store is an outage, never a crash
            self._exchange_failed(error)
            return False
        self._unpublished = _NO_NEWS
        self._republish = False
        self._exchange_succeeded()
        if view.state != self._seen_remote or view.state == "closed":
            self._breaker.adopt_shared(
                view.state, open_elapsed=view.open_elapsed, failures=view.failures
            )
        self._seen_remote = view.state
        return True

    # -- on the store's thread --------------------------------------------------------------

    def _exchange(self, news: SharedDelta) -> _RemoteView:
        storage, machine = self._connect()
        if news.transition == "open":
            machine.open()
        elif news.transition == "half_open":
            machine.half_open()
        elif news.transition == "closed":
            machine.close()
        if news.reset:
            storage.reset_counter()
        # Past the threshold more increments change nothing: someone trips either way.
        for _ in range(min(news.failures, self._breaker.settings.failure_threshold)):
            storage.increment_counter()
        raw_state = storage.state
        failures = storage.counter
        opened_at = storage.opened_at if raw_state == pybreaker.STATE_OPEN else None
        self._storage_errors.raise_first()
        if raw_state not in _FROM_PYBREAKER:
            raise ValueError(f"unknown circuit state {raw_state!r} in Redis")
        # opened_at is kept in whole seconds: take the end of that second, so no replica
        # half-opens before the one that opened.
        open_elapsed = (
            0.0 if opened_at is None else max(0.0, time.time() - opened_at.timestamp() - 1)
        )
        return _RemoteView(_FROM_PYBREAKER[raw_state], failures, open_elapsed)

    def _connect(self) -> tuple[pybreaker.CircuitRedisStorage, pybreaker.CircuitBreaker]:
        if self._storage is None or self._remote_machine is None:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, self._client, namespace=self.key
            )
            storage.logger = self._storage_logger
            settings = self._breaker.settings
            self._remote_machine = pybreaker.CircuitBreaker(
                fail_max=settings.failure_threshold,
                reset_timeout=settings.open_seconds,
                success_threshold=settings.half_open_requests,
                state_storage=storage,
            )
            self._storage = storage
        return self._storage, self._remote_machine


# Compare-and-set of the shared rollout: news based on the generation the replica last saw is
# written (generation + 1); news based on an older one is refused unless forced (an
# operator's), and the caller adopts what the store holds instead.
_ROLLOUT_SCRIPT = """
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if ARGV[1] == '1' and (ARGV[2] == '1' or tonumber(ARGV[3]) == generation) then
    generation = generation + 1
    redis.call('HSET', KEYS[1], 'state', ARGV[4], 'weight', ARGV[5], 'generation', generation)
end
return {redis.call('HGET', KEYS[1], 'state') or '', redis.call('HGET', KEYS[1], 'weight') or '0',
        generation}
"""


class SharedRollout(_RedisSync):
    """Shares a canary rollout's state and weight under ``key`` (a Redis hash: ``state``,
    ``weight``, ``generation``): a local transition is published, a newer remote one is
    adopted (reason ``shared``), so every replica is at the same step. Each replica judges
    its own traffic; the first to move publishes, the others follow."""

    kind = "shared-canary"
    detail = "serving on the local canary rollout until Redis answers"

    def __init__(
        self,
        canary: CanaryFilter,
        redis_url: str,
        key: str,
        sidecar: str,
        upstream: str,
        *,
        interval: float = 0.1,
        redis_timeout: float = 0.5,
    ) -> None:
        super().__init__(
            redis_url,
            key,
            CANARY_SHARED_STATE_ERRORS.labels(sidecar=sidecar, upstream=upstream),
            interval=interval,
            redis_timeout=redis_timeout,
        )
        self._canary = canary
        self._seen_generation = 0
        self._news = False
        self._forced = False
        canary.on_local_transition = self._local_transition
        self._script: Any = self._client.register_script(_ROLLOUT_SCRIPT)

    def _local_transition(self, forced: bool) -> None:
        self._news = True
        self._forced = self._forced or forced

    async def sync_once(self) -> bool:
        rollout = self._canary.rollout
        news, forced = self._news, self._forced
        self._news = self._forced = False
        args = ("1" if news else "0", "1" if forced else "0", self._seen_generation)
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.run_in_executor(
                self._executor,
                lambda: self._script(keys=[self.key], args=[*args, rollout.state, rollout.weight]),
            )
            state, weight, generation = raw[0].decode(), int(raw[1]), int(raw[2])
        except Exception as error:  # any failure of the store is an outage, never a crash
            self._news = self._news or news
            self._forced = self._forced or forced
            self._exchange_failed(error)
            return False
        self._exchange_succeeded()
        if generation > self._seen_generation:
            self._seen_generation = generation
            if state and (state, weight) != (rollout.state, rollout.weight):
                transition = rollout.adopt(state, weight)
                self._canary.apply(transition)
        return True

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "generation": self._seen_generation}
