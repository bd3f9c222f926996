"""``sidecars demo``: start the stack, play the script, show what happens, stop every child.

Exit codes: 0 after ``--duration`` or Ctrl-C with every child stopped cleanly, 1 when a port
is taken or a child fails, 2 for a bad ``--duration``/``SIDECARS_DEMO_*`` value.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sidecars.demo import stack
from sidecars.demo.logship import DockerLogDriver, NormalisedRecords
from sidecars.demo.observe import CircuitWatch, Scrape, scrape
from sidecars.demo.ports import LOOPBACK, DemoPorts, base_port, taken_ports
from sidecars.demo.processes import ChildFailed, Stream
from sidecars.demo.script import (
    BREAKER_OPEN_SECONDS,
    ORDERS_PER_SECOND,
    SCRIPT,
    apply,
    scaled,
    speed_factor,
    start_drill,
)
from sidecars.demo.supervisor import Supervisor
from sidecars.demo.terminal import DemoSummary, Terminal
from sidecars.demo.traffic import OrderTally, OrderTraffic

TICK_SECONDS = 1.0
WATCH_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration: float | None
    ports: DemoPorts
    speed: float

    @classmethod
    def from_environment(cls, duration: float | None) -> DemoOptions:
        if duration is not None and not duration > 0:
            raise ValueError(f"--duration {duration:g} is invalid: expected seconds above 0")
        return cls(
            duration=duration,
            ports=DemoPorts(base_port(os.environ.get("SIDECARS_DEMO_BASE_PORT"))),
            speed=speed_factor(os.environ.get("SIDECARS_DEMO_SPEED")),
        )


def main(duration: float | None) -> int:
    """Run the demo; ``duration`` seconds of traffic, or until Ctrl-C when None."""
    try:
        options = DemoOptions.from_environment(duration)
    except ValueError as error:
        print(f"sidecars demo: {error}", file=sys.stderr)
        return 2
    taken = taken_ports(options.ports)
    if taken:
        for name, port in taken:
            print(
                f"sidecars demo: port {port} on {LOOPBACK} ({name}) is already in use",
                file=sys.stderr,
            )
        print(
            "sidecars demo: stop what listens there, or move the demo's port block, e.g. "
            "SIDECARS_DEMO_BASE_PORT=19000 sidecars demo",
            file=sys.stderr,
        )
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="sidecars-demo-"))
    code = asyncio.run(DemoRun(options, workdir, Terminal.for_stdout()).run())
    if code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


class DemoRun:
    def __init__(self, options: DemoOptions, workdir: Path, terminal: Terminal) -> None:
        self.options = options
        self.ports = options.ports
        self.workdir = workdir
        self.terminal = terminal
        self.script = scaled(SCRIPT, options.speed)
        self.supervisor = Supervisor(workdir, self.on_line)
        self.failure: ChildFailed | None = None
        self.totals = OrderTally()
        self.interval = OrderTally()
        self.records = NormalisedRecords()
        self.log_driver = DockerLogDriver(LOOPBACK, self.ports.adapter_forward, stack.APP_SERVICE)
        self.circuits = {"breaker": CircuitWatch(), "ambassador": CircuitWatch()}
        self.phases_played = 0
        self.started_at = time.monotonic()
        self.played_seconds = 0.0
        self.admin_token = secrets.token_urlsafe(16)  # for the drill, this run's only

    async def on_line(self, name: str, stream: Stream, line: bytes) -> None:
        """The adapter's output is counted; everything the app prints goes to the adapter."""
        if name == "log-adapter":
            self.records.add(line)
        else:
            await self.log_driver.ship(stream, line)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            try:
                try:
                    await self.start_stack(session)
                    await self.play(session, stop)
                except ChildFailed as failure:
                    self.failure = failure
                final = {
                    name: result
                    for name, url in stack.admin_urls(self.ports).items()
                    if (result := await scrape(session, url)) is not None
                }
            finally:  # even on a bug in the demo itself, no child outlives it
                exit_codes = await self.stop_stack()
        if self.failure is not None:
            self.terminal.failure(self.failure, str(self.workdir))
            return 1
        self.terminal.summary(self.summary(final, exit_codes))
        return 0 if all(code == 0 for code in exit_codes.values()) else 1

    async def start_stack(self, session: aiohttp.ClientSession) -> None:
        ports, workdir, speed = self.ports, self.workdir, self.options.speed
        stack.log_directory(workdir).mkdir()
        self.terminal.banner(stack.describe(ports), sum(p.seconds for p in SCRIPT), speed)
        open_seconds = BREAKER_OPEN_SECONDS / speed
        ready = await self.supervisor.start(
            session,
            [
                *stack.sidecars(ports, workdir, open_seconds, self.admin_token),
                *stack.dependencies(ports),
            ],
        )
        ready.update(await self.supervisor.start(session, [stack.app(ports, workdir)]))
        self.terminal.started(ready)
        self.terminal.legend()

    async def play(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Traffic, the script and the live view until the duration, Ctrl-C or a crash."""
        self.started_at = time.monotonic()
        traffic_stop = asyncio.Event()
        traffic = OrderTraffic(
            f"http://{LOOPBACK}:{self.ports.app}/orders",
            ORDERS_PER_SECOND * self.options.speed,
            (self.totals, self.interval),
        )
        traffic_task = asyncio.create_task(traffic.run(session, traffic_stop))
        script = asyncio.create_task(self.play_script(session))
        watch = asyncio.create_task(self.watch(session))
        crash = asyncio.create_task(self.supervisor.first_crash())
        stopped = asyncio.create_task(stop.wait())
        endings: list[asyncio.Task[Any]] = [script, watch, crash, stopped]
        try:
            await asyncio.wait(
                endings, timeout=self.options.duration, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.played_seconds = self.elapsed()
            self.supervisor.stopping = True
            traffic_stop.set()
            await traffic_task
            for task in endings:
                task.cancel()
            await asyncio.gather(*endings, return_exceptions=True)
        crashed = crash.result() if crash.done() and not crash.cancelled() else None
        if crashed is not None:
            raise crashed
        for task in (script, watch):
            error = None if task.cancelled() else task.exception()
            if error is not None:  # e.g. a dependency refused its /control change
                raise ChildFailed("demo", f"{type(error).__name__}: {error}", "")

    async def play_script(self, session: aiohttp.ClientSession) -> None:
        control = stack.control_urls(self.ports)
        for index in itertools.count():
            phase = self.script[index % len(self.script)]
            await apply(phase, session, control)
            if phase.drill:
                await start_drill(phase, stack.drill_admin(self.ports), self.admin_token)
            self.phases_played += 1
            self.terminal.phase(
                index % len(self.script) + 1, len(self.script), phase, self.elapsed()
            )
            await asyncio.sleep(phase.seconds)

    async def watch(self, session: aiohttp.ClientSession) -> None:
        """Circuit transitions and sample records as they happen; a table row every second."""
        admin = stack.admin_urls(self.ports)
        last_retries = 0.0
        last_records = 0
        next_tick = time.monotonic() + TICK_SECONDS
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            scrapes = {name: await scrape(session, admin[name]) for name in self.circuits}
            for name, result in scrapes.items():
                if result is not None:
                    for edge in self.circuits[name].update(result):
                        self.terminal.transition(self.elapsed(), name, edge)
            for record in self.records.take_to_show():
                self.terminal.record(record)
            if time.monotonic() < next_tick:
                continue
            next_tick += TICK_SECONDS
            ambassador = scrapes["ambassador"]
            retries = ambassador.total("sidecar_retries_total") if ambassador else last_retries
            self.terminal.tick(
                self.elapsed(),
                self.interval,
                int(retries - last_retries),
                self.circuits["breaker"].state,
                self.records.count - last_records,
            )
            last_retries, last_records = retries, self.records.count
            self.interval.reset()

    async def stop_stack(self) -> dict[str, int]:
        """The app first (its last lines still reach the adapter), the log adapter last."""
        codes = await self.supervisor.stop(["app"])
        await self.log_driver.close()
        codes.update(await self.supervisor.stop(["ambassador", "breaker", "inventory", "payments"]))
        codes.update(await self.supervisor.stop(["log-adapter"]))
        return codes

    def summary(self, final: dict[str, Scrape], exit_codes: dict[str, int]) -> DemoSummary:
        ambassador = final.get("ambassador", Scrape())
        breaker = final.get("breaker", Scrape())
        adapter = final.get("log-adapter", Scrape())
        return DemoSummary(
            seconds=self.played_seconds,
            phases=self.phases_played,
            orders=self.totals,
            retries=int(ambassador.total("sidecar_retries_total")),
            budget_exhausted=int(ambassador.total("sidecar_retry_budget_exhausted_total")),
            transitions=breaker.transitions() or self.circuits["breaker"].seen,
            circuit_state=breaker.circuit_state() or self.circuits["breaker"].state,
            records=self.records,
            formats=adapter.by_label("logadapter_records_format_total", "format"),
            lines_shipped=self.log_driver.shipped,
            lines_lost=self.log_driver.failed,
            exit_codes=exit_codes,
        )
