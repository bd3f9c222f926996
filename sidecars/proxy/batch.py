"""Work deferred to the end of the current event loop iteration.

A loop iteration of a busy proxy answers many requests. Its socket writes are collected and
made back to back at the end of the iteration (``Outbox``); bookkeeping that need not be
instant (the access log's writes) is deferred too, and always runs *after* every socket write
of the iteration, so that no client waits for a log line. Both run before the loop polls for
new I/O again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final


class EndOfIteration:
    """Two lanes, run once at the end of the iteration: the sends first, then the
    bookkeeping, whatever order they were deferred in."""

    __slots__ = ("_after", "_loop", "_scheduled", "_sends")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sends: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self._scheduled = False

    def defer_send(self, flush: Callable[[], None]) -> None:
        """Run ``flush`` (socket writes) at the end of this iteration, before any bookkeeping;
        callers defer once per batch."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)
        self._sends.append(flush)

    def defer(self, work: Callable[[], None]) -> None:
        """Run ``work`` at the end of this iteration, after every send; once per batch."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)
        self._after.append(work)

    def _run(self) -> None:
        self._scheduled = False
        sends = self._sends
        if sends:
            self._sends = []
            for flush in sends:
                flush()
        after = self._after
        if after:
            self._after = []
            for work in after:
                work()


_WRITE: Final = 0
_CLOSE: Final = 1
_WRITE_EOF: Final = 2
# Past this many bytes queued the outbox writes at once: a large body then meets the client's
# backpressure (pause_writing, which pauses the upstream) within the read that brought it,
# instead of after the loop read every upstream socket dry into memory.
_WRITE_AT_ONCE: Final = 64 * 1024


class Outbox:
    """Socket writes made at the end of the loop iteration instead of at once.

    Each write to a socket wakes its reader (nginx, the client); done in the middle of an
    iteration, that wake-up often preempts the proxy before it has handled the other events
    it already has, costing a context switch per request. Collected, the writes of an
    iteration go out back to back. Closing and half-closing go through the outbox too, so
    they happen after the writes queued before them.
    """

    __slots__ = ("_end_of_iteration", "_queue", "_queued")

    def __init__(self, end_of_iteration: EndOfIteration) -> None:
        self._end_of_iteration = end_of_iteration
        self._queue: list[tuple[asyncio.WriteTransport, int, bytes]] = []
        self._queued = 0  # bytes in the queue

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if not self._queue:
            self._end_of_iteration.defer_send(self._flush)
        self._queue.append((transport, _WRITE, data))
        self._queued += len(data)
        if self._queued >= _WRITE_AT_ONCE:
            self._flush()

    def close(self, transport: asyncio.WriteTransport) -> None:
        if not self._queue:
            self._end_of_iteration.defer_send(self._flush)
        self._queue.append((transport, _CLOSE, b""))

    def write_eof(self, transport: asyncio.WriteTransport) -> None:
        if not self._queue:
            self._end_of_iteration.defer_send(self._flush)
        self._queue.append((transport, _WRITE_EOF, b""))

    def _flush(self) -> None:
        queue = self._queue
        self._queue = []
        self._queued = 0
        for transport, action, data in queue:
            if transport.is_closing():
                continue  # aborted meanwhile: what it still had to say is dropped
            if action == _WRITE:
                transport.write(data)
            elif action == _CLOSE:
                transport.close()
            elif transport.can_write_eof():
                transport.write_eof()
