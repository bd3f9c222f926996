"""An upstream for the overload-protection tests and benchmarks: it counts the requests it
serves at once."""

from __future__ import annotations

import asyncio

from aiohttp import web


class CountingUpstream:
    """A handler that serves at most ``capacity`` requests at once (a semaphore; the rest wait
    inside the upstream), each for ``service`` seconds, counting the concurrency it sees."""

    def __init__(self, service: float, capacity: int | None = None) -> None:
        self.service = service
        self.capacity = capacity
        self._slots = asyncio.Semaphore(capacity) if capacity is not None else None
        self.current = 0
        self.highest = 0
        self.served = 0

    def resize(self, capacity: int) -> None:
        """More capacity from now on (the upstream scaled out)."""
        assert self._slots is not None and self.capacity is not None
        for _ in range(capacity - self.capacity):
            self._slots.release()
        self.capacity = capacity

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.current += 1
        self.highest = max(self.highest, self.current)
        try:
            if self._slots is None:
                await asyncio.sleep(self.service)  # the service time
            else:
                async with self._slots:
                    await asyncio.sleep(self.service)  # the service time
        finally:
            self.current -= 1
        self.served += 1
        return web.Response(text="served")
