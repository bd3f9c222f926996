"""Where records wait between the processor and the outputs: in memory, or on disk
(``sidecars.logs.disk_buffer``).

Records are stored once, serialised as JSON lines, in one append-only stream. A position is a
byte offset in that stream (a log sequence number): ``append`` returns the position after the
new records, each output has its own cursor (the position it delivered up to), and storage is
released once every cursor has passed it. A down collector therefore holds back only its own
cursor, never stdout; the bound (``buffer_max`` bytes not yet delivered by every output) slows
the inputs down, it never drops.

Two questions a source asks after ``append``:
- ``wait_accepted(position)``: may a Forward ``chunk`` be acknowledged? Memory: at once (the
  records are in the buffer). Disk: once the segment is fsynced.
- ``wait_stored(position)``: would the records survive a crash of this process, so that a tail
  offset may be saved past them? Disk: fsynced. Memory: only once every output delivered them.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sidecars.logs.model import Record
from sidecars.observability import (
    LOG_BUFFER_BYTES,
    LOG_BUFFER_RECORDS,
    LOG_RECORDS_DROPPED,
    get_logger,
)

log = get_logger("sidecars.logs.buffer")

_LINE = orjson.OPT_APPEND_NEWLINE
_ANY_KEYS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


class BufferWriteError(OSError):
    """The disk buffer could not store a batch (disk full, I/O error)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records of the stream: ``data`` is ``count`` JSON lines."""

    start: int
    end: int
    count: int
    data: bytes


def _json_safe(value: Any) -> Any:
    """Repair what orjson refuses: lone surrogates (undecodable input bytes), huge integers."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {str(_json_safe(key)): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _encode_unusual(record: Record) -> bytes:
    """A record with non-string keys (Forward records may have them), lone surrogates or
    integers past 64 bits. One that cannot be encoded even so (nothing the inputs make:
    their records are bounded in depth) is dropped, counted and logged: never its batch."""
    try:
        return orjson.dumps(record, default=str, option=_ANY_KEYS)
    except TypeError:
        pass
    try:
        return orjson.dumps(_json_safe(record), default=str, option=_ANY_KEYS)
    except (TypeError, ValueError, RecursionError) as error:
        LOG_RECORDS_DROPPED.labels("unencodable").inc()
        log.error("record_unencodable", error=f"{type(error).__name__}: {str(error)[:200]}")
        return b""


def encode_records(records: Iterable[Record]) -> bytes:
    """JSON lines; a record orjson refuses is repaired rather than lost.

    Each line is appended to one ``bytearray`` and dropped at once: keeping a batch's
    thousands of ``bytes`` alive until a ``join`` was measured at 2-5 times the cost of
    encoding them. ``OPT_NON_STR_KEYS`` makes orjson half as fast again, so only the records
    that need it get it (``JSONEncodeError`` is a ``TypeError``).
    """
    out = bytearray()
    dumps = orjson.dumps
    for record in records:
        try:
            out += dumps(record, default=str, option=_LINE)
        except TypeError:
            out += _encode_unusual(record)
    return bytes(out)


class RecordBuffer:
    """Cursors, bounds and wake-ups shared by the memory and the disk buffer."""

    kind = "abstract"

    def __init__(self, outputs: Sequence[str], max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._end = 0
        self._cursors: dict[str, int] = dict.fromkeys(outputs, 0)
        self._pending: dict[str, int] = dict.fromkeys(outputs, 0)
        self._readable = {output: asyncio.Event() for output in outputs}
        self._space = asyncio.Event()
        self._space.set()
        self._released = asyncio.Event()
        self._input_closed = False

    # --- storage, provided by subclasses ---------------------------------------------------

    def _store(self, start: int, data: bytes, count: int) -> None:
        raise NotImplementedError

    def _read(self, cursor: int, max_bytes: int) -> Batch:
        raise NotImplementedError

    def _release(self, low: int) -> None:
        raise NotImplementedError

    async def wait_accepted(self, position: int) -> None:
        raise NotImplementedError

    async def wait_stored(self, position: int) -> None:
        raise NotImplementedError

    def is_stored(self, position: int) -> bool:
        raise NotImplementedError

    # --- shared bookkeeping ------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._end

    @property
    def low(self) -> int:
        """The lowest cursor: everything below it was delivered by every output."""
        return min(self._cursors.values(), default=self._end)

    @property
    def bytes(self) -> int:
        return self._end - self.low

    @property
    def records(self) -> int:
        return max(self._pending.values(), default=0)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    async def wait_space(self) -> None:
        """Slow an input down while the buffer is full (the bound may be passed by one batch)."""
        while self.full and not self._input_closed:
            self._space.clear()
            await self._space.wait()

    def append(self, records: Sequence[Record]) -> int:
        """Store records for every output; returns the position after them."""
        if not records:
            return self._end
        if self._input_closed:
            LOG_RECORDS_DROPPED.labels("closed").inc(len(records))
            log.error("records_after_close", records=len(records))
            return self._end
        data = encode_records(records)
        self._store(self._end, data, len(records))
        self._end += len(data)
        for output, event in self._readable.items():
            self._pending[output] += len(records)
            event.set()
        self._update_gauges()
        return self._end

    async def read(self, output: str, max_bytes: int) -> Batch | None:
        """The next records for ``output`` (waiting for some); None once input closed and done."""
        event = self._readable[output]
        while self._cursors[output] >= self._end:
            if self._input_closed:
                return None
            event.clear()
            await event.wait()
        return self._read(self._cursors[output], max_bytes)

    def commit(self, output: str, batch: Batch) -> None:
        """``output`` delivered ``batch``: move its cursor, release what no one needs."""
        before = self.low
        self._cursors[output] = batch.end
        self._pending[output] -= batch.count
        self._advance(before)

    def detach(self, output: str, reason: str) -> None:
        """An output that can never deliver again stops holding records back (counted)."""
        if output not in self._cursors:
            return
        before = self.low
        lost = self._pending.pop(output)
        del self._cursors[output]
        self._readable.pop(output).set()
        if lost:
            LOG_RECORDS_DROPPED.labels(reason).inc(lost)
            log.error("output_records_dropped", output=output, records=lost, reason=reason)
        self._advance(before)

    def _advance(self, before: int) -> None:
        low = self.low
        if low > before:
            self._release(low)
            self._released.set()
        if not self.full:
            self._space.set()
        self._update_gauges()

    async def _wait_released(self, position: int) -> None:
        while self.low < position and self._cursors:
            self._released.clear()
            await self._released.wait()

    def close_input(self) -> None:
        """No more appends: readers finish what is left, then get None."""
        self._input_closed = True
        self._space.set()
        for event in self._readable.values():
            event.set()

    def cursor(self, output: str) -> int:
        return self._cursors.get(output, self._end)

    def pending(self, output: str) -> int:
        return self._pending.get(output, 0)

    def _update_gauges(self) -> None:
        LOG_BUFFER_RECORDS.set(self.records)
        LOG_BUFFER_BYTES.set(self.bytes)

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "records": self.records,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "position": self._end,
            "cursors": dict(self._cursors),
        }

    async def close(self) -> None:
        """Release resources; the disk buffer persists cursors for the next start."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    end: int
    count: int
    data: bytes


class MemoryBuffer(RecordBuffer):
    """A deque of appended chunks; bounded by ``max_bytes`` not yet delivered everywhere."""

    kind = "memory"

    def __init__(self, outputs: Sequence[str], max_bytes: int) -> None:
        super().__init__(outputs, max_bytes)
        self._chunks: deque[_Chunk] = deque()

    def _store(self, start: int, data: bytes, count: int) -> None:
        self._chunks.append(_Chunk(start, start + len(data), count, data))

    def _read(self, cursor: int, max_bytes: int) -> Batch:
        index = bisect.bisect_left(self._chunks, cursor, key=lambda chunk: chunk.start)
        chunk = self._chunks[index]
        parts, count, end = [chunk.data], chunk.count, chunk.end
        for following in range(index + 1, len(self._chunks)):
            chunk = self._chunks[following]
            if end - cursor + len(chunk.data) > max_bytes:
                break
            parts.append(chunk.data)
            count += chunk.count
            end = chunk.end
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return Batch(cursor, end, count, data)

    def _release(self, low: int) -> None:
        while self._chunks and self._chunks[0].end <= low:
            self._chunks.popleft()

    async def wait_accepted(self, position: int) -> None:
        return None

    async def wait_stored(self, position: int) -> None:
        await self._wait_released(position)

    def is_stored(self, position: int) -> bool:
        return self.low >= position
