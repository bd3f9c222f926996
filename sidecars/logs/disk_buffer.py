"""The disk buffer: segment files of JSON lines that survive restarts, SIGKILL included.

See ``sidecars.logs.buffer`` for positions, cursors and the two durability questions.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecars.logs.buffer import Batch, BufferWriteError, RecordBuffer
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger

log = get_logger("sidecars.logs.disk_buffer")

_SEGMENT_NAME = re.compile(r"^(\d{20})\.jsonl$")
_CURSORS_FILE = "cursors.json"


@dataclass(slots=True)
class _Segment:
    start: int
    path: Path
    size: int
    read_fd: int | None = None

    @property
    def end(self) -> int:
        return self.start + self.size


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file, fsync it, rename it over ``path``, fsync the directory."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class DiskBuffer(RecordBuffer):
    """Segment files of JSON lines under ``directory``, named by their start position.

    Appends go to the active segment through the page cache; ``wait_accepted`` fsyncs (one
    fsync in a worker thread covers every append made before it: group commit). Cursors are
    saved to ``cursors.json`` by ``checkpoint`` and at close, so a restart delivers to each
    output only what it had not delivered (plus, after a crash, what it delivered since the last
    checkpoint: at-least-once). A segment is deleted once every output has passed its end.
    """

    kind = "disk"

    def __init__(
        self,
        directory: str | Path,
        outputs: Sequence[str],
        max_bytes: int,
        segment_bytes: int | None = None,
    ) -> None:
        super().__init__(outputs, max_bytes)
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes or min(max(max_bytes // 8, 1024 * 1024), 64 << 20)
        self._segments: list[_Segment] = []
        self._write_fd: int | None = None
        self._unsynced_fds: list[int] = []
        self._directory_dirty = False
        self._synced = 0
        self._sync_task: asyncio.Future[None] | None = None
        self._saved_cursors: dict[str, int] = {}

    def open(self) -> None:
        """Replay what a previous run left: segments, cursors, the records still owed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.directory.iterdir()):
            match = _SEGMENT_NAME.match(entry.name)
            if match:
                segment = _Segment(int(match.group(1)), entry, entry.stat().st_size)
                self._repair_tail(segment)
                if segment.size:
                    self._segments.append(segment)
                else:  # its start would be reused by the next segment's name
                    entry.unlink()
        saved = self._load_cursors()
        first = self._segments[0].start if self._segments else 0
        self._end = max([s.end for s in self._segments] + list(saved.values()) + [0])
        for output in self._cursors:
            cursor = saved.get(output, first)
            self._cursors[output] = min(max(cursor, first), self._end)
            self._pending[output] = self._count_lines_from(self._cursors[output])
        self._saved_cursors = dict(self._cursors)
        self._synced = self._end
        self._release(self.low)
        if self._end > self.low:
            log.info(
                "buffer_replayed",
                records=self.records,
                bytes=self.bytes,
                segments=len(self._segments),
                directory=str(self.directory),
            )
        self._update_gauges()

    def _repair_tail(self, segment: _Segment) -> None:
        """A crash mid-write can leave a partial last line: cut it (counted, logged)."""
        if segment.size == 0:
            return
        with segment.path.open("rb+") as handle:
            handle.seek(segment.size - 1)
            if handle.read(1) == b"\n":
                return
            tail_start = max(segment.size - 1024 * 1024, 0)
            handle.seek(tail_start)
            newline = handle.read().rfind(b"\n")
            keep = tail_start + newline + 1 if newline >= 0 else 0
            handle.truncate(keep)
        LOG_RECORDS_DROPPED.labels("buffer_corrupt").inc()
        log.warn(
            "buffer_segment_repaired", segment=segment.path.name, cut_bytes=segment.size - keep
        )
        segment.size = keep

    def _load_cursors(self) -> dict[str, int]:
        path = self.directory / _CURSORS_FILE
        try:
            data = orjson.loads(path.read_bytes())
            return {str(key): int(value) for key, value in data["outputs"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            log.warn("buffer_cursors_unreadable", path=str(path), error=str(error))
            return {}

    def _count_lines_from(self, position: int) -> int:
        lines = 0
        for segment in self._segments:
            if segment.end <= position:
                continue
            with segment.path.open("rb") as handle:
                handle.seek(max(position - segment.start, 0))
                while block := handle.read(1024 * 1024):
                    lines += block.count(b"\n")
        return lines

    def _active_fd(self) -> int:
        if self._write_fd is not None:
            active = self._segments[-1]
            if active.size < self.segment_bytes:
                return self._write_fd
            self._unsynced_fds.append(self._write_fd)
        path = self.directory / f"{self._end:020d}.jsonl"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append(_Segment(self._end, path, 0))
        self._directory_dirty = True
        return self._write_fd

    def _store(self, start: int, data: bytes, count: int) -> None:
        fd = self._active_fd()
        segment = self._segments[-1]
        try:
            _write_all(fd, data)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, segment.size)
            raise BufferWriteError(error.errno, f"disk buffer write failed: {error}") from error
        segment.size += len(data)

    def _segment_at(self, position: int) -> _Segment:
        index = bisect.bisect_right(self._segments, position, key=lambda s: s.start) - 1
        segment = self._segments[max(index, 0)]
        if position >= segment.end and index + 1 < len(self._segments):
            segment = self._segments[index + 1]  # a cursor in a gap left by a lost segment
        return segment

    def _read(self, cursor: int, max_bytes: int) -> Batch:
        segment = self._segment_at(cursor)
        start = max(cursor, segment.start)
        if segment.read_fd is None:
            segment.read_fd = os.open(segment.path, os.O_RDONLY)
        want = min(max_bytes, segment.end - start)
        data = os.pread(segment.read_fd, want, start - segment.start)
        cut = data.rfind(b"\n")
        while cut < 0 and start + len(data) < segment.end:  # one line longer than max_bytes
            more = os.pread(segment.read_fd, max_bytes, start - segment.start + len(data))
            newline = more.find(b"\n")
            data += more if newline < 0 else more[: newline + 1]
            cut = len(data) - 1 if newline >= 0 else -1
        data = data[: cut + 1]
        return Batch(start, start + len(data), data.count(b"\n"), data)

    def _release(self, low: int) -> None:
        while len(self._segments) > 1 and self._segments[0].end <= low:
            segment = self._segments.pop(0)
            if segment.read_fd is not None:
                os.close(segment.read_fd)
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()
        if self._segments and self._segments[0].end <= low and self._write_fd is None:
            segment = self._segments.pop(0)  # replayed, fully delivered, never appended to
            if segment.read_fd is not None:
                os.close(segment.read_fd)
            segment.path.unlink(missing_ok=True)

    async def _sync(self) -> None:
        """One fsync for everything appended so far; callers arriving meanwhile share it."""
        target = self._end
        fds = list(self._unsynced_fds)
        retired = len(fds)
        if self._write_fd is not None:
            fds.append(self._write_fd)
        directory = self.directory if self._directory_dirty else None
        self._directory_dirty = False

        def sync() -> None:
            for fd in fds:
                os.fsync(fd)
            if directory is not None:
                _fsync_directory(directory)

        try:
            await asyncio.to_thread(sync)
        finally:
            for fd in fds[:retired]:
                os.close(fd)
            del self._unsynced_fds[:retired]
        self._synced = max(self._synced, target)

    async def wait_accepted(self, position: int) -> None:
        while self._synced < position:
            if self._sync_task is None or self._sync_task.done():
                self._sync_task = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._sync_task)

    async def wait_stored(self, position: int) -> None:
        await self.wait_accepted(position)

    def is_stored(self, position: int) -> bool:
        return self._synced >= position

    async def checkpoint(self) -> None:
        """Persist the cursors when they moved (called periodically and at close)."""
        if self._cursors == self._saved_cursors:
            return
        cursors = dict(self._cursors)
        data = orjson.dumps({"version": 1, "outputs": cursors})
        await asyncio.to_thread(write_file_atomically, self.directory / _CURSORS_FILE, data)
        self._saved_cursors = cursors

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "directory": str(self.directory),
            "segments": len(self._segments),
            "synced_position": self._synced,
        }

    async def close(self) -> None:
        await self.wait_accepted(self._end)
        await self.checkpoint()
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        for segment in self._segments:
            if segment.read_fd is not None:
                os.close(segment.read_fd)
                segment.read_fd = None
