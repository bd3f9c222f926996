"""The ``stdout`` output: JSON lines, one write per batch, off the event loop."""

from __future__ import annotations

from typing import Any

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks import OutputClosed
from sidecars.logs.sinks.writer_thread import WriterThread, write_all


class StdoutSink:
    name = "stdout"
    max_batch_bytes = 1024 * 1024

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._writer = WriterThread("stdout-writer")

    async def write(self, batch: Batch) -> None:
        try:
            await self._writer.run(write_all, self._fd, batch.data)
        except BrokenPipeError as error:
            raise OutputClosed("stdout was closed by its reader") from error

    async def close(self) -> None:
        self._writer.stop()

    def status(self) -> dict[str, Any]:
        return {}
