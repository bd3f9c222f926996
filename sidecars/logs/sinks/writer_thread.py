"""A daemon thread that runs blocking writes in order, off the event loop.

Writing to a pipe blocks while its reader is slow; that must slow the stdout output down,
not the event loop (inputs, admin, other outputs). Non-blocking mode on fd 1 is not an option:
it is shared with stderr when both go to one pipe (``2>&1``), and the structured logger would
then fail with EAGAIN. A daemon thread also lets the process exit after the drain timeout
even when a reader never reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WriterThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, loop, future = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = function(*args)
            except BaseException as caught:  # handed to the awaiting coroutine
                error = caught
            with contextlib.suppress(RuntimeError):  # the loop closed while we wrote
                loop.call_soon_threadsafe(_resolve, future, result, error)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((function, args, loop, future))
        return await future

    def stop(self) -> None:
        self._jobs.put(None)
