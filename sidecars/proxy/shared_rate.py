"""One rate limit for every replica of a service (``P_RATE_LIMIT_REDIS_URL``), decided in
Redis by one atomic Lua script: GCRA (the generic cell rate algorithm, as redis-cell and
Stripe's limiter), which keeps a single timestamp per limit, the "theoretical arrival time",
and reads the time from the Redis server, so replicas' clocks do not matter.

The same script notes the replica in a sorted set (last seen within 10 s), so each answer says
how many replicas share the limit. When Redis is unreachable the route's local bucket decides
at the limit divided by the replicas last seen (the whole limit if none was seen yet): every
such request is counted in ``sidecar_rate_limit_fallback_total``, one warning is logged per
outage and one info event when Redis answers again (tried again every second meanwhile).

The redis client is imported only when the setting is used (the ``redis`` extra).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sidecars.envparse import mask_url
from sidecars.observability import get_logger
from sidecars.policies.window import Clock

log = get_logger("sidecars.proxy.shared_rate")

# KEYS: the limit's timestamp, the replicas' set. ARGV: seconds per request (1 / rate), the
# tolerance (burst - 1 requests' worth of seconds), this replica's id.
# Answers {admitted (1/0), seconds to wait (text), replicas seen}.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 10)
redis.call('EXPIRE', KEYS[2], 60)
local replicas = redis.call('ZCARD', KEYS[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then
  return {0, tostring(wait), replicas}
end
local new_tat = tat + emission
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0', replicas}
"""
# Seconds between attempts to reach Redis again while it is unreachable.
RETRY_INTERVAL = 1.0
TIMEOUT = 0.25


class SharedRateLimit:
    """``decide()``: None when Redis is not to be asked now (unreachable: the caller decides
    locally), else the seconds to wait (0.0: admitted)."""

    def __init__(self, url: str, key: str, rate: float, burst: int, *, clock: Clock) -> None:
        self.url = url
        # No retries inside the client: a failed call falls back at once (and Redis is tried
        # again RETRY_INTERVAL later).
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._script: Any = self._client.register_script(GCRA)
        self._keys = [f"{key}:gcra", f"{key}:replicas"]
        replica = f"{socket.gethostname()}:{os.getpid()}"
        self._args = [repr(1.0 / rate), repr((burst - 1) / rate), replica]
        self._clock = clock
        self.replicas = 0  # replicas seen by the last answer
        self.down_until = 0.0
        self.unavailable = False
        self.errors = 0
        self.decided = 0

    def available(self) -> bool:
        return not self.unavailable or self._clock() >= self.down_until

    async def decide(self) -> float | None:
        try:
            admitted, wait, replicas = await self._script(keys=self._keys, args=self._args)
        except (RedisError, OSError) as error:
            self.errors += 1
            self.down_until = self._clock() + RETRY_INTERVAL
            if not self.unavailable:
                self.unavailable = True
                log.warn(
                    "rate_limit_redis_unavailable", redis=mask_url(self.url), error=repr(error)
                )
            return None
        if self.unavailable:
            self.unavailable = False
            log.info("rate_limit_redis_recovered", redis=mask_url(self.url))
        self.replicas = int(replicas)
        self.decided += 1
        return 0.0 if int(admitted) else float(wait)

    async def close(self) -> None:
        await self._client.aclose()

    def snapshot(self) -> dict[str, Any]:
        return {
            "redis": mask_url(self.url),
            "available": not self.unavailable,
            "replicas": self.replicas,
            "decided": self.decided,
            "errors": self.errors,
        }
