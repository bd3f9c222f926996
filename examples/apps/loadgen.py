"""Steady order traffic for the example stack: ``python -m sidecars_examples.loadgen``.

``LOADGEN_TARGET`` (http://app:8080), ``LOADGEN_RATE`` (orders per second, 5) and
``LOADGEN_REPORT_EVERY`` (10s). Every report is one JSON line: orders placed and failed, and
what the sidecars did for them (calls that needed retries, answers from an open circuit).
Flip the dependencies with their ``/control`` endpoint to watch the numbers move.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from typing import Any

import aiohttp

from .envconfig import duration, env, positive_number


def tally(counts: Counter[str], status: int, outcome: dict[str, Any]) -> None:
    """Count one order's answer from the app."""
    counts["placed" if status == 201 else "failed"] += 1
    for name, call in outcome.get("calls", {}).items():
        if (call.get("attempts") or 1) > 1:
            counts[f"{name}_retried"] += 1
        if call.get("sidecar_error"):
            counts[f"{name}_{call['sidecar_error']}"] += 1


async def send_order(session: aiohttp.ClientSession, url: str, counts: Counter[str]) -> None:
    try:
        async with session.post(url) as response:
            outcome = await response.json(content_type=None)
            tally(counts, response.status, outcome if isinstance(outcome, dict) else {})
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        counts[f"app_unreachable:{type(error).__name__}"] += 1


async def run(target: str, rate: float, report_every: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    url = target.rstrip("/") + "/orders"
    next_report = time.monotonic() + report_every
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not stop.is_set():
            task = asyncio.create_task(send_order(session, url, counts))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if time.monotonic() >= next_report:
                print(json.dumps({"event": "traffic", "target": url, **counts}), flush=True)
                counts.clear()
                next_report += report_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 / rate)
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)


def main() -> None:
    asyncio.run(
        run(
            target=env("LOADGEN_TARGET", str, "http://app:8080"),
            rate=env("LOADGEN_RATE", positive_number, "5"),
            report_every=env("LOADGEN_REPORT_EVERY", duration, "10s"),
        )
    )


if __name__ == "__main__":
    main()
