"""Entry point of the proxy sidecars (``sidecars breaker`` and ``sidecars ambassador``)."""

from __future__ import annotations

import sys

from sidecars.runtime import Lifecycle
from sidecars.settings import ProxySettings


async def serve(settings: ProxySettings, lifecycle: Lifecycle) -> None:
    """Serve every route until the lifecycle asks to stop, then drain."""
    _skip_unused_redis(settings)
    # Imported after the decision above: the breaker policy imports pybreaker.
    from sidecars.proxy.process import run  # noqa: PLC0415

    await run(settings, lifecycle)


def _skip_unused_redis(settings: ProxySettings) -> None:
    """pybreaker imports the redis client whenever it is installed (about 5 MB of memory and
    40 ms of start-up); with no route sharing its breaker state or its rate limit through
    Redis, tell it redis is absent."""
    if "redis" not in sys.modules and not any(
        route.breaker.state_redis_url or route.overload.rate_limit_redis_url
        for route in settings.routes
    ):
        sys.modules["redis"] = None  # type: ignore[assignment]
