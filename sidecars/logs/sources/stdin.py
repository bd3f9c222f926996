"""The ``stdin`` input: what the app pipes in (``app | sidecars log-adapter``).

Reads large chunks and stops reading while the buffer is full, so a fast producer is slowed
through the pipe rather than held in memory. A pipe, a terminal or a socket is read through the
event loop; a regular file (``sidecars log-adapter < app.log``) is read directly, since reading
a file never blocks for long. At end of input the last line (even without a newline) is handed
on and ``finished`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from typing import Any

from sidecars.logs.buffer import BufferWriteError
from sidecars.logs.model import LogLine
from sidecars.logs.pipeline import Pipeline
from sidecars.logs.sources.lines import LineSplitter
from sidecars.observability import LOG_INPUT_ERRORS, get_logger

CHUNK_BYTES = 1024 * 1024
STREAM_KEY = "stdin"
log = get_logger("sidecars.logs.stdin")


class StdinSource:
    name = "stdin"

    def __init__(self, pipeline: Pipeline, line_cap: int, fd: int = 0) -> None:
        self._pipeline = pipeline
        self._fd = fd
        self._splitter = LineSplitter(line_cap, self.name)
        self._task: asyncio.Task[None] | None = None
        self._reading = False
        self._stopping = False
        self._transport: asyncio.BaseTransport | None = None
        self.finished = asyncio.Event()
        self.lines = 0
        self.bytes = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stdin")

    async def _run(self) -> None:
        try:
            mode = os.fstat(self._fd).st_mode
        except OSError:
            log.info("stdin_closed")
            self.finished.set()
            return
        try:
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(self._fd):
                await self._read_stream()
            else:  # a file, or a device such as /dev/null: never blocks, cannot be polled
                await self._read_file()
            if not self._stopping:
                last = self._splitter.finish()
                if last is not None:
                    await self._hand_on([last[1]])
                log.info("stdin_eof", lines=self.lines, bytes=self.bytes)
        except OSError as error:  # an unreadable stdin ends like EOF, counted and logged
            LOG_INPUT_ERRORS.labels(self.name, "read_failed").inc()
            log.error("stdin_read_failed", error=f"{type(error).__name__}: {error}")
        finally:
            self.finished.set()

    async def _read_file(self) -> None:
        """Read what cannot be polled: epoll refuses regular files and /dev/null (uvloop aborts
        the process on them), and reading them never blocks."""
        while not self._stopping:
            data = os.read(self._fd, CHUNK_BYTES)
            if not data:
                return
            await self._feed(data)
            await asyncio.sleep(0)  # a file never blocks: let outputs and admin run

    async def _read_stream(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK_BYTES)
        pipe = os.fdopen(self._fd, "rb", buffering=0, closefd=False)
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            while not self._stopping:
                self._reading = True
                try:
                    data = await reader.read(CHUNK_BYTES)
                finally:
                    self._reading = False
                if not data:
                    return
                await self._feed(data)
        finally:
            self._transport.close()

    async def _feed(self, data: bytes) -> None:
        self.bytes += len(data)
        await self._hand_on(self._splitter.split_text(data))

    async def _hand_on(self, texts: list[str]) -> None:
        if not texts:
            return
        like = LogLine("", time.time(), "stdin", STREAM_KEY)
        self.lines += len(texts)
        with contextlib.suppress(BufferWriteError):  # counted and logged by the pipeline
            await self._pipeline.ingest_lines(texts, like, self.name)

    async def stop(self) -> None:
        """Stop reading; a chunk already read is still handed on."""
        self._stopping = True
        if self._task is None:
            return
        if self._reading:
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "bytes": self.bytes,
            "eof": self.finished.is_set() and not self._stopping,
        }
