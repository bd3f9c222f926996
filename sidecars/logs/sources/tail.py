"""The ``tail`` input: follow files matching globs (a shared volume), rotation-safe.

- New files are found by globbing every ``poll_seconds`` (no inotify: it misses events on
  network and overlay volumes, and polling a few globs is cheap). A file with no saved state
  is read from its beginning (a documented choice: nothing written before the adapter started
  is lost).
- A file is followed by its inode, not its name. Rename rotation (``app.log`` ->
  ``app.log.1``, new ``app.log``): the old inode is read to its end, and closed once its name
  has been gone for a couple of polls and nothing more arrives; the new file starts at 0.
  Copytruncate (the size drops below what was read), or a file truncated and written again
  between two polls (its first bytes no longer match their fingerprint, whatever its size):
  reading restarts at 0. (A rewrite that begins with the very same bytes is not seen.)
- Offsets are saved per inode, with a fingerprint of the first bytes (an inode number can be
  reused by a new file), atomically under ``state_dir``. An offset is saved only once the
  records of the lines before it survive a crash (fsynced in the disk buffer, or delivered by
  every output with the memory buffer), and never past a line the processor still holds for
  multi-line joining: Fluent Bit saves on read and loses those lines when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecars.logs.buffer import BufferWriteError
from sidecars.logs.disk_buffer import write_file_atomically
from sidecars.logs.model import LogLine
from sidecars.logs.pipeline import Pipeline
from sidecars.logs.sources.lines import LineSplitter
from sidecars.observability import LOG_INPUT_ERRORS, get_logger

CHUNK_BYTES = 1024 * 1024
FINGERPRINT_BYTES = 1024
DETACHED_POLLS_BEFORE_CLOSE = 2
STATE_FILE = "tail-offsets.json"
log = get_logger("sidecars.logs.tail")


@dataclass(frozen=True, slots=True)
class SavedOffset:
    path: str
    offset: int
    fingerprint: str
    fingerprint_bytes: int


def fingerprint(fd: int, length: int = FINGERPRINT_BYTES) -> tuple[str, int]:
    head = os.pread(fd, length, 0)
    return hashlib.sha256(head).hexdigest(), len(head)


def _inode_key(path: str) -> str | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return f"{info.st_dev}:{info.st_ino}"


class FollowedFile:
    """One open inode and how far it was read and handed on."""

    def __init__(self, key: str, path: str, fd: int, start: int, line_cap: int) -> None:
        self.key = key
        self.path = path
        self.fd = fd
        self.line_cap = line_cap
        self.splitter = LineSplitter(line_cap, "tail", start)
        self.handed_on = start
        """End of the last line given to the processor: the highest offset that may be saved."""
        self.generation = 0
        self.detached_polls = 0
        self.fingerprint, self.fingerprint_bytes = fingerprint(fd)

    @property
    def stream_key(self) -> str:
        # A truncated file starts a new stream, so that lines of its old content still pending
        # in the processor cannot pull the saved offset of the new content around.
        return f"tail:{self.key}:{self.generation}"

    def restart(self) -> None:
        self.generation += 1
        self.splitter = LineSplitter(self.line_cap, "tail", 0)
        self.handed_on = 0
        self.fingerprint, self.fingerprint_bytes = fingerprint(self.fd)

    def rewritten(self) -> bool:
        """Whether the first bytes differ from those fingerprinted: the file was truncated and
        written again since the last look, even past where it was read."""
        if not self.fingerprint_bytes:
            return False
        head_hash, head_length = fingerprint(self.fd, self.fingerprint_bytes)
        return head_length < self.fingerprint_bytes or head_hash != self.fingerprint

    def refresh_fingerprint(self, size: int) -> None:
        if self.fingerprint_bytes < FINGERPRINT_BYTES and size > self.fingerprint_bytes:
            self.fingerprint, self.fingerprint_bytes = fingerprint(self.fd)


class TailSource:
    name = "tail"

    def __init__(
        self,
        patterns: tuple[str, ...],
        pipeline: Pipeline,
        line_cap: int,
        state_dir: str | None,
        *,
        poll_seconds: float = 0.25,
        save_seconds: float = 1.0,
    ) -> None:
        self._patterns = patterns
        self._pipeline = pipeline
        self._line_cap = line_cap
        self._state_path = Path(state_dir) / STATE_FILE if state_dir else None
        self._poll_seconds = poll_seconds
        self._save_seconds = save_seconds
        self._files: dict[str, FollowedFile] = {}
        self._saved: dict[str, SavedOffset] = {}
        self._written: dict[str, SavedOffset] = {}
        self._follow_task: asyncio.Task[None] | None = None
        self._save_task: asyncio.Task[None] | None = None
        self._idle = False
        self._stopping = False
        self.lines = 0
        self.rotations = 0
        self.truncations = 0

    async def start(self) -> None:
        if self._state_path is not None:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            self._saved = self._load_state(self._state_path)
            self._written = dict(self._saved)
        self._discover()
        self._follow_task = asyncio.create_task(self._follow(), name="tail")
        if self._state_path is not None:
            self._save_task = asyncio.create_task(self._save_periodically(), name="tail-save")

    # --- discovery ---------------------------------------------------------------------------

    def _discover(self) -> None:
        seen: dict[str, str] = {}
        for pattern in self._patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    seen.setdefault(f"{info.st_dev}:{info.st_ino}", path)
        for key, path in seen.items():
            followed = self._files.get(key)
            if followed is None:
                self._open(key, path)
            else:
                if followed.path != path:
                    log.info("tail_file_renamed", old=followed.path, new=path)
                followed.path = path
                followed.detached_polls = 0
        for key, followed in self._files.items():
            if key not in seen:
                if followed.detached_polls == 0:
                    self.rotations += 1
                    log.info("tail_file_rotated", path=followed.path, inode=key)
                followed.detached_polls += 1

    def _open(self, key: str, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            LOG_INPUT_ERRORS.labels(self.name, "open_failed").inc()
            log.warn("tail_open_failed", path=path, error=str(error))
            return
        info = os.fstat(fd)
        if f"{info.st_dev}:{info.st_ino}" != key:  # replaced between stat and open
            os.close(fd)
            return
        start = self._resume_offset(key, fd, info.st_size, path)
        self._files[key] = FollowedFile(key, path, fd, start, self._line_cap)
        log.info("tail_following", path=path, inode=key, offset=start)

    def _resume_offset(self, key: str, fd: int, size: int, path: str) -> int:
        saved = self._saved.get(key)
        if saved is None:
            return 0
        head_hash, head_length = fingerprint(fd, saved.fingerprint_bytes)
        if head_length != saved.fingerprint_bytes or head_hash != saved.fingerprint:
            log.info("tail_inode_reused", path=path, inode=key)
            return 0
        if saved.offset > size:
            log.info("tail_truncated_while_stopped", path=path, saved=saved.offset, size=size)
            return 0
        return saved.offset

    # --- reading -----------------------------------------------------------------------------

    async def _follow(self) -> None:
        last_glob = time.monotonic()
        while not self._stopping:
            if time.monotonic() - last_glob >= self._poll_seconds:
                self._discover()
                last_glob = time.monotonic()
            if await self._read_round():
                await asyncio.sleep(0)  # reading files never blocks: let outputs and admin run
            elif not self._stopping:
                self._idle = True
                try:
                    await asyncio.sleep(self._poll_seconds)
                finally:
                    self._idle = False

    async def _read_round(self, until: dict[str, int] | None = None) -> bool:
        """One chunk from each file with new data; True when anything was read. ``until``:
        the last reads at stop, each file only up to the size it had then."""
        progressed = False
        for followed in list(self._files.values()):
            if self._stopping and until is None:
                break
            try:
                size = os.fstat(followed.fd).st_size
            except OSError:
                size = followed.splitter.read_position
            if until is not None:
                size = min(size, until.get(followed.key, 0))
            shrunk = size < followed.splitter.read_position
            if shrunk or (size > followed.splitter.read_position and followed.rewritten()):
                self.truncations += 1
                log.info(
                    "tail_file_truncated",
                    path=followed.path,
                    size=size,
                    read=followed.splitter.read_position,
                    seen_by="size" if shrunk else "fingerprint",
                )
                followed.restart()
            position = followed.splitter.read_position
            if size <= position:
                if followed.detached_polls >= DETACHED_POLLS_BEFORE_CLOSE:
                    await self._close_file(followed)
                continue
            try:
                data = os.pread(followed.fd, CHUNK_BYTES, position)
                followed.refresh_fingerprint(size)
            except OSError as error:  # EIO on a shared volume: try again next round
                LOG_INPUT_ERRORS.labels(self.name, "read_failed").inc()
                log.error("tail_read_failed", path=followed.path, error=str(error))
                continue
            if not data:
                continue
            progressed = True
            lines = followed.splitter.split_with_offsets(data)
            await self._hand_on(followed, lines, followed.splitter.position)
        return progressed

    async def _hand_on(
        self, followed: FollowedFile, lines: list[tuple[int, str]], through: int
    ) -> None:
        if lines:
            now = time.time()
            key = followed.stream_key
            batch = [
                LogLine(text, now, "tail", key, offset=offset, tag=followed.path)
                for offset, text in lines
            ]
            with contextlib.suppress(BufferWriteError):  # counted and logged by the pipeline
                await self._pipeline.ingest(batch, self.name)
            self.lines += len(batch)
        followed.handed_on = through

    async def _close_file(self, followed: FollowedFile) -> None:
        """A rotated-away file, read to its end: its last line, even unterminated, goes on."""
        last = followed.splitter.finish()
        await self._hand_on(followed, [last] if last else [], followed.splitter.position)
        os.close(followed.fd)
        del self._files[followed.key]
        self._saved.pop(followed.key, None)
        log.info("tail_file_closed", path=followed.path, inode=followed.key)

    # --- offsets -----------------------------------------------------------------------------

    def _load_state(self, path: Path) -> dict[str, SavedOffset]:
        try:
            data = orjson.loads(path.read_bytes())
            return {key: SavedOffset(**value) for key, value in data["files"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            LOG_INPUT_ERRORS.labels(self.name, "state_unreadable").inc()
            log.warn("tail_state_unreadable", path=str(path), error=str(error))
            return {}

    def _safe_offset(self, followed: FollowedFile) -> int:
        offset = followed.handed_on
        pending = self._pipeline.first_pending(followed.stream_key)
        if pending is not None and pending.offset is not None:
            offset = min(offset, pending.offset)
        return offset

    def _snapshot(self) -> dict[str, SavedOffset]:
        snapshot = {
            key: SavedOffset(
                followed.path,
                self._safe_offset(followed),
                followed.fingerprint,
                followed.fingerprint_bytes,
            )
            for key, followed in self._files.items()
        }
        # Keep what a previous run saved for files not followed yet (a glob matching late), as
        # long as their path still names that inode.
        for key, saved in self._saved.items():
            if key not in snapshot and _inode_key(saved.path) == key:
                snapshot[key] = saved
        return snapshot

    async def save(self, wait: bool = True) -> bool:
        """Save offsets whose records are stored; without ``wait``, only if already stored."""
        if self._state_path is None:
            return False
        snapshot = self._snapshot()
        position = self._pipeline.buffer.end
        if wait:
            await self._pipeline.buffer.wait_stored(position)
        elif not self._pipeline.buffer.is_stored(position):
            log.warn("tail_offsets_not_saved", reason="records not yet stored")
            return False
        if snapshot == self._written:
            return True
        data = orjson.dumps({"version": 1, "files": {k: asdict(v) for k, v in snapshot.items()}})
        await asyncio.to_thread(write_file_atomically, self._state_path, data)
        self._written = snapshot
        return True

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._save_seconds)
            try:
                await self.save()
            except OSError as error:
                LOG_INPUT_ERRORS.labels(self.name, "state_write_failed").inc()
                log.error("tail_state_write_failed", error=str(error))

    # --- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop following. What the followed files hold at this moment is still read (the
        app's last lines before it stopped, a crash trace), up to their size now: not new
        files, not what is written after."""
        self._stopping = True
        if self._save_task is not None:
            self._save_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
        if self._follow_task is None:
            return
        if self._idle:
            self._follow_task.cancel()
        try:
            await self._follow_task
        except asyncio.CancelledError:
            if not self._follow_task.cancelled():
                raise
        until: dict[str, int] = {}
        for key, followed in self._files.items():
            with contextlib.suppress(OSError):
                until[key] = os.fstat(followed.fd).st_size
        while True:
            if not await self._read_round(until):
                break
            await asyncio.sleep(0)  # let outputs and admin run

    async def close(self) -> None:
        """After the outputs drained: save what is stored, close the files."""
        try:
            await self.save(wait=False)
        except OSError as error:
            log.error("tail_state_write_failed", error=str(error))
        for followed in self._files.values():
            os.close(followed.fd)
        self._files.clear()

    def status(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "rotations": self.rotations,
            "truncations": self.truncations,
            "files": [
                {
                    "path": followed.path,
                    "inode": key,
                    "read_offset": followed.splitter.read_position,
                    "handed_on_offset": followed.handed_on,
                    "saved_offset": getattr(self._written.get(key), "offset", None),
                    "rotated": followed.detached_polls > 0,
                }
                for key, followed in self._files.items()
            ],
        }
