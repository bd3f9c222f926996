"""Process lifecycle shared by every sidecar: event loop, signals, readiness, drain."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from sidecars.observability import get_logger

State = Literal["starting", "serving", "draining"]
log = get_logger("sidecars.runtime")


class Lifecycle:
    """Readiness and the stop request: what /readyz reports and what SIGTERM sets."""

    def __init__(self) -> None:
        self.state: State = "starting"
        self.started_at = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.stop_signal: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "serving"

    def serving(self) -> None:
        self.state = "serving"
        log.info("ready", seconds_to_ready=round(time.monotonic() - self.started_at, 4))

    def request_stop(self, signal_name: str) -> None:
        if self.stop_requested.is_set():
            return
        self.stop_signal = signal_name
        self.state = "draining"
        log.info("draining", signal=signal_name)
        self.stop_requested.set()


def install_event_loop_policy() -> None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(serve: Callable[[Lifecycle], Awaitable[None]]) -> int:
    """Run ``serve`` until it returns; SIGTERM/SIGINT ask it to drain. Returns the exit code."""
    install_event_loop_policy()

    async def main() -> None:
        lifecycle = Lifecycle()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lifecycle.request_stop, sig.name)
        await serve(lifecycle)

    try:
        asyncio.run(main())
    except Exception as error:
        log.error("fatal", error=f"{type(error).__name__}: {error}", exc_info=True)
        return 1
    log.info("stopped")
    return 0


async def wait_drained(
    in_flight: Callable[[], int], within: float, poll: float = 0.02
) -> bool:
    """Wait until ``in_flight()`` is zero or ``within`` seconds pass; True when drained."""
    deadline = time.monotonic() + within
    while in_flight() > 0:
        if time.monotonic() >= deadline:
            log.warn("drain_timeout", in_flight=in_flight(), timeout=within)
            return False
        await asyncio.sleep(poll)
    return True
