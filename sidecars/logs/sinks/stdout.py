"""The ``stdout`` output: JSON lines, one write per batch.

A pipe (what a container runtime reads) or a terminal may block when its reader is slow: those
writes run in a thread, so that they slow this output down, not the event loop. A regular file
or a character device such as ``/dev/null`` does not block for long, so those writes are made
in place: no hand-over to a thread and back for every batch, which costs more than the write
when records come fast (the output then kept only a third of the pace of the Forward input).
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks import OutputClosed
from sidecars.logs.sinks.writer_thread import WriterThread, write_all


def writes_never_block(fd: int) -> bool:
    """A regular file or a character device that is not a terminal."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not os.isatty(fd))


class StdoutSink:
    name = "stdout"
    max_batch_bytes = 1024 * 1024

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._writer = None if writes_never_block(fd) else WriterThread("stdout-writer")

    async def write(self, batch: Batch) -> None:
        try:
            if self._writer is None:
                write_all(self._fd, batch.data)
                await asyncio.sleep(0)  # let the inputs run between batches
            else:
                await self._writer.run(write_all, self._fd, batch.data)
        except BrokenPipeError as error:
            raise OutputClosed("stdout was closed by its reader") from error

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()

    def status(self) -> dict[str, Any]:
        return {"writes": "in place" if self._writer is None else "thread"}
