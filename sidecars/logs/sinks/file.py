"""The ``file:///path`` output: JSON lines appended to a file, rotated by size.

Rotation renames: when the next batch would take the file past ``max_bytes``, the file is
fsynced and closed, ``path.N`` becomes ``path.N+1`` (the oldest, ``path.<keep>``, is
replaced), ``path`` becomes ``path.1``, and a new ``path`` is opened. A file is renamed only
once it is complete, and a batch is never split across two files, so whatever follows
``path`` by inode (this adapter's own tail input, Fluent Bit, ``tail -F``) reads it whole.
Defaults: 100 MiB x 5 rotated files. With the disk buffer each batch is fsynced before the
buffer lets go of it; otherwise it is written to the page cache (it survives a crash of the
process, not of the machine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks.writer_thread import WriterThread, write_all
from sidecars.observability import get_logger

ROTATE_BYTES = 100 * 1024 * 1024
ROTATE_KEEP = 5
log = get_logger("sidecars.logs.file")


def path_from_url(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


class FileSink:
    max_batch_bytes = 1024 * 1024

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        fsync: bool = False,
        max_bytes: int = ROTATE_BYTES,
        keep: int = ROTATE_KEEP,
    ) -> None:
        self.name = name
        self.path = path
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.keep = keep
        self._fd: int | None = None
        self._size = 0
        self.rotations = 0
        self._writer = WriterThread("file-writer")

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(fd).st_size
        self._fd = fd
        return fd

    def _rotate(self, fd: int) -> None:
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        log.info("file_output_rotated", path=str(self.path), rotations=self.rotations)

    def _append(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None else self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate(fd)
            fd = self._open()
        try:
            write_all(fd, data)
        except OSError:
            # Whatever part was written is unknown to the next attempt: reopen, and let the
            # retry append the whole batch again (at-least-once).
            os.close(fd)
            self._fd = None
            raise
        self._size += len(data)
        if self.fsync:
            os.fsync(fd)

    async def write(self, batch: Batch) -> None:
        await self._writer.run(self._append, batch.data)

    async def close(self) -> None:
        def finish() -> None:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

        await self._writer.run(finish)
        self._writer.stop()

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self._size, "rotations": self.rotations}
