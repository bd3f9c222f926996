"""Lines from every input -> the processor -> the buffer.

One processor serves every input: it keeps its state per ``stream_key``. ``push`` and
``append`` run with no ``await`` between them, so records reach the buffer in the order the
processor made them, and a line is either still pending in the processor or its record is in
the buffer (what the tail input relies on to save offsets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sidecars.logs.buffer import BufferWriteError, RecordBuffer
from sidecars.logs.model import LogLine, Record
from sidecars.logs.record_metrics import RecordMetrics
from sidecars.observability import LOG_RECORDS_DROPPED, LOG_RECORDS_IN, get_logger

log = get_logger("sidecars.logs.pipeline")


class LineProcessor(Protocol):
    """What the pipeline needs of ``sidecars.logs.processor.LogProcessor``."""

    totals: dict[str, dict[str, int]]
    """Counts since start (formats, redactions, truncations, multi-line groups)."""

    def push(self, lines: Iterable[LogLine]) -> list[Record]: ...

    def push_lines(
        self,
        texts: Sequence[str],
        like: LogLine,
        *,
        times: Sequence[float | None] | None = None,
        extra: dict[str, Any] | None = None,
        unwrap: bool = True,
    ) -> list[Record]: ...

    def flush_idle(self) -> list[Record]: ...

    def flush(self) -> list[Record]: ...

    def flush_streams(self, stream_keys: Iterable[str]) -> list[Record]: ...

    def first_pending(self, stream_key: str) -> LogLine | None: ...

    @property
    def pending_lines(self) -> int: ...


@dataclass(slots=True)
class LineRun:
    """Consecutive lines of one stream that differ only by their text (and input time):
    ``LogProcessor.push_lines``' arguments."""

    texts: list[str]
    like: LogLine
    times: list[float | None] | None = None
    extra: dict[str, Any] | None = None
    unwrap: bool = True


class Pipeline:
    def __init__(
        self,
        processor: LineProcessor,
        buffer: RecordBuffer,
        record_metrics: RecordMetrics | None = None,
    ) -> None:
        self.processor = processor
        self.buffer = buffer
        self.record_metrics = record_metrics or RecordMetrics()
        self._records_in: dict[str, Any] = {}

    @property
    def full(self) -> bool:
        return self.buffer.full

    async def ingest(self, lines: Sequence[LogLine], input_name: str) -> int:
        """Wait for buffer space, then process and store; returns the buffer position after.

        Space is awaited *before* the lines are processed, so a cancelled wait loses nothing.
        """
        await self.buffer.wait_space()
        return self.ingest_nowait(lines, input_name)

    def ingest_nowait(self, lines: Sequence[LogLine], input_name: str) -> int:
        """Process and store now, whatever the bound (callers check ``full`` first)."""
        if not lines:
            return self.buffer.end
        self._count_in(input_name, len(lines))
        try:
            records = self.processor.push(lines)
        except Exception:
            self._processor_failed(input_name, len(lines))
            return self.buffer.end
        return self._append(records)

    async def ingest_lines(self, texts: Sequence[str], like: LogLine, input_name: str) -> int:
        """``ingest`` for lines of one stream that differ only by their text
        (``LogProcessor.push_lines``: no LogLine per line)."""
        await self.buffer.wait_space()
        if not texts:
            return self.buffer.end
        self._count_in(input_name, len(texts))
        try:
            records = self.processor.push_lines(texts, like)
        except Exception:
            self._processor_failed(input_name, len(texts))
            return self.buffer.end
        return self._append(records)

    async def ingest_parts(self, parts: Sequence[list[LogLine] | LineRun], input_name: str) -> int:
        """``ingest`` for lines given in parts: LogLines, or runs of one stream
        (``push_lines``); processed in order, stored as one batch."""
        await self.buffer.wait_space()
        count = sum(len(part.texts) if isinstance(part, LineRun) else len(part) for part in parts)
        if not count:
            return self.buffer.end
        self._count_in(input_name, count)
        records: list[Record] = []
        done = 0
        try:
            for part in parts:
                if isinstance(part, LineRun):
                    records += self.processor.push_lines(
                        part.texts, part.like, times=part.times, extra=part.extra,
                        unwrap=part.unwrap,
                    )
                    done += len(part.texts)
                else:
                    records += self.processor.push(part)
                    done += len(part)
        except Exception:
            self._processor_failed(input_name, count - done)  # earlier parts are kept
        return self._append(records)

    def _count_in(self, input_name: str, lines: int) -> None:
        counter = self._records_in.get(input_name)
        if counter is None:
            counter = self._records_in[input_name] = LOG_RECORDS_IN.labels(input_name)
        counter.inc(lines)

    def _processor_failed(self, input_name: str, lines: int) -> None:
        # A processor bug must not take every input down with it: count, log, carry on.
        LOG_RECORDS_DROPPED.labels("processor_error").inc(lines)
        log.error("processor_error", input=input_name, lines=lines, exc_info=True)

    def flush_idle(self) -> int:
        try:
            return self._append(self.processor.flush_idle())
        except BufferWriteError:
            return self.buffer.end

    def flush_streams(self, stream_keys: Iterable[str]) -> int:
        """Emit what the streams of these keys hold (their sender is gone)."""
        try:
            return self._append(self.processor.flush_streams(stream_keys))
        except BufferWriteError:
            return self.buffer.end

    def flush(self) -> int:
        try:
            return self._append(self.processor.flush())
        except BufferWriteError:
            return self.buffer.end

    def first_pending(self, stream_key: str) -> LogLine | None:
        return self.processor.first_pending(stream_key)

    def _append(self, records: list[Record]) -> int:
        """Raises ``BufferWriteError`` (counted, logged) so that nothing lost is acknowledged."""
        try:
            position = self.buffer.append(records)
        except BufferWriteError as error:
            LOG_RECORDS_DROPPED.labels("buffer_write_error").inc(len(records))
            log.error("buffer_write_failed", records=len(records), error=str(error))
            raise
        self.record_metrics.count(records)
        return position
