"""The demo's children as a group: started in order, their piped output pumped, watched for
crashes, and stopped group by group."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from sidecars.demo.processes import Child, ChildFailed, ChildSpec, Stream

READY_TIMEOUT = 20.0
STOP_GRACE = 8.0

# Called with (child name, stream, line) for every line of a piped stream.
LineHandler = Callable[[str, Stream, bytes], Awaitable[None]]


class Supervisor:
    def __init__(self, workdir: Path, on_line: LineHandler) -> None:
        self.workdir = workdir
        self.on_line = on_line
        self.children: dict[str, Child] = {}
        self.pumps: dict[str, list[asyncio.Task[None]]] = {}
        self.stopping = False

    async def start(
        self, session: aiohttp.ClientSession, specs: list[ChildSpec]
    ) -> dict[str, float]:
        """Start ``specs`` together; seconds each took to be ready. Raises ChildFailed."""
        children = [Child(spec, self.workdir) for spec in specs]
        for child in children:
            self.children[child.spec.name] = child
            await child.start()
            self.pumps[child.spec.name] = [
                asyncio.create_task(self._pump(child, stream))
                for stream in sorted(child.spec.piped)
            ]
        seconds = await asyncio.gather(
            *(child.wait_ready(session, READY_TIMEOUT) for child in children)
        )
        return {child.spec.name: s for child, s in zip(children, seconds, strict=True)}

    async def _pump(self, child: Child, stream: Stream) -> None:
        async for line in child.lines(stream):
            await self.on_line(child.spec.name, stream, line)

    async def first_crash(self) -> ChildFailed | None:
        """Wait until a child exits; a ChildFailed unless the demo was stopping it."""
        waits = {
            asyncio.create_task(child.process.wait()): child
            for child in self.children.values()
            if child.process is not None
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        child = waits[next(iter(done))]
        if self.stopping:
            return None
        return child.failure(
            f"exited with code {child.process.returncode if child.process else '?'}"
        )

    async def stop(self, names: list[str]) -> dict[str, int]:
        """SIGTERM these children together, then read their piped output to its end."""
        self.stopping = True
        children = [self.children[n] for n in names if n in self.children]
        started = [child for child in children if child.process is not None]
        codes = await asyncio.gather(*(child.stop(STOP_GRACE) for child in started))
        pumps = [task for child in started for task in self.pumps.get(child.spec.name, [])]
        if pumps:
            _, late = await asyncio.wait(pumps, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pumps, return_exceptions=True)
        return {child.spec.name: code for child, code in zip(started, codes, strict=True)}
