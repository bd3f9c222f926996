"""Orders sent to the example app at a steady rate, and a tally of what came back.

The app's answer names, per dependency, the status it got, the sidecar's
``X-Sidecar-Attempts`` and ``X-Sidecar-Error`` and the latency: the demo shows the
resilience from the app's side (what the user of the sidecars feels) next to the sidecars'
own metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class OrderTally:
    """Counts since the last ``reset`` (one line of the live view) or since the start."""

    counts: Counter[str] = field(default_factory=Counter)
    rejected_ms: list[float] = field(default_factory=list)

    def add(self, outcome: dict[str, Any]) -> None:
        counts = self.counts
        counts["orders"] += 1
        counts["placed" if outcome.get("status") == "placed" else "failed"] += 1
        calls = outcome.get("calls", {})
        inventory = calls.get("inventory")
        if isinstance(inventory, dict):
            counts["inventory_calls"] += 1
            if inventory.get("ok"):
                counts["inventory_ok"] += 1
                if (inventory.get("attempts") or 1) > 1:
                    counts["inventory_ok_after_retries"] += 1
            else:
                counts["inventory_failed"] += 1
        payments = calls.get("payments")
        if isinstance(payments, dict):
            counts["payments_calls"] += 1
            if payments.get("ok"):
                counts["payments_ok"] += 1
            elif payments.get("sidecar_error") == "circuit_open":
                counts["payments_rejected"] += 1
                self.rejected_ms.append(float(payments.get("ms") or 0.0))
            else:
                counts["payments_failed"] += 1

    def add_unreachable(self) -> None:
        self.counts["orders"] += 1
        self.counts["failed"] += 1
        self.counts["app_unreachable"] += 1

    def median_rejected_ms(self) -> float | None:
        return statistics.median(self.rejected_ms) if self.rejected_ms else None

    def reset(self) -> None:
        self.counts.clear()
        self.rejected_ms.clear()


class OrderTraffic:
    """``POST /orders`` at ``rate`` per second until stopped; every answer goes to the tallies."""

    def __init__(self, orders_url: str, rate: float, tallies: tuple[OrderTally, ...]) -> None:
        self.orders_url = orders_url
        self.rate = rate
        self.tallies = tallies
        self.in_flight: set[asyncio.Task[None]] = set()

    async def _order(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(self.orders_url) as response:
                outcome = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            for tally in self.tallies:
                tally.add_unreachable()
            return
        for tally in self.tallies:
            tally.add(outcome if isinstance(outcome, dict) else {})

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(self._order(session))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=10)
