"""Bytes to lines for the byte-stream inputs (stdin, tail, syslog over TCP).

Sans-IO. Bytes after the last newline wait for more, however long the line grows, up to
``line_cap`` bytes (``LOGADAPTER_LINE_HARD_CAP``): the processor then cuts a line over
``LOGADAPTER_MAX_LINE_BYTES`` into marked parts, every byte kept. Past the cap the rest of
the line, up to its newline, is dropped: its first ``line_cap`` bytes go on once its newline
comes (or at the end of the stream), followed by ``cut_marker``, which says how many bytes
were dropped; the cut is counted (``logadapter_records_truncated_total{reason=
"line_hard_cap"}``) and logged at most once a minute per input. Memory per stream stays
bounded by the cap, whatever the input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidecars.observability import LOG_INPUT_ERRORS, LOG_TRUNCATED, get_logger

_LOG_EVERY = 60.0
_logged: dict[str, float] = {}
log = get_logger("sidecars.logs.lines")


def decode(raw: bytes, input_name: str) -> str:
    """UTF-8, with invalid bytes replaced by U+FFFD and counted."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        LOG_INPUT_ERRORS.labels(input_name, "invalid_utf8").inc()
        return raw.decode(errors="replace")


def cut_marker(dropped: int) -> bytes:
    """What follows the kept bytes of a line cut at the hard cap."""
    return b" [truncated: %d bytes dropped]" % dropped


def kept_bytes(raw: bytes, cap: int) -> int:
    """How many bytes of ``raw`` to keep under ``cap``: not ending inside a UTF-8 sequence."""
    end = cap
    while end > 0 and end < len(raw) and (raw[end] & 0xC0) == 0x80:
        end -= 1
    return end or cap


def count_cut(input_name: str, dropped: int, cap: int) -> None:
    """A line cut at the hard cap: counted, logged at most once a minute per input."""
    LOG_TRUNCATED.labels("line_hard_cap").inc()
    now = time.monotonic()
    last = _logged.get(input_name)
    if last is None or now - last >= _LOG_EVERY:
        _logged[input_name] = now
        log.warning(
            "log_line_cut", input=input_name, reason="line_hard_cap", limit_bytes=cap,
            dropped_bytes=dropped,
        )


@dataclass(frozen=True, slots=True)
class _Taken:
    cut: bytes | None
    """A line that went past the cap, completed by a newline in this block: first."""
    cut_start: int
    complete: bytes | None
    """Complete lines joined by newlines, the final newline dropped; None when there is none."""
    complete_start: int
    capped: list[tuple[int, bytes]] | None = None
    """Instead of ``complete`` when one of its lines is over the cap (a block longer than the
    cap, which the inputs' reads never are by default): each line with its offset, those
    over the cap cut (``cut_marker``)."""


class LineSplitter:
    """Splits one byte stream into lines, tracking stream offsets for the tail input."""

    def __init__(self, line_cap: int, input_name: str, position: int = 0) -> None:
        self.line_cap = line_cap
        self.input_name = input_name
        self.position = position
        """Offset of the first byte not yet returned in a line (where a re-read would start)."""
        self._carry = b""
        self._line_bytes = 0
        """Bytes of the unterminated line read so far: the carry, or kept and dropped."""
        self._kept: bytes | None = None
        """The first ``line_cap`` bytes of a line past the cap, while its rest is dropped."""

    @property
    def read_position(self) -> int:
        """Offset of the next byte to feed."""
        return self.position + self._line_bytes

    def _take(self, data: bytes) -> _Taken:
        cut, cut_start = None, self.position
        if self._kept is not None:
            newline = data.find(b"\n")
            if newline < 0:
                self._line_bytes += len(data)
                return _Taken(None, cut_start, None, self.position)
            cut = self._cut_line(self._line_bytes + newline)
            self.position += self._line_bytes + newline + 1
            self._line_bytes = 0
            data = data[newline + 1 :]
        block = self._carry + data if self._carry else data
        last = block.rfind(b"\n")
        complete_start = self.position
        complete = None
        if last >= 0:
            complete = block[:last]
            block = block[last + 1 :]
            self.position += last + 1
        self._line_bytes = len(block)
        if len(block) > self.line_cap:
            self._kept = block[: kept_bytes(block, self.line_cap)]
            block = b""
        self._carry = block
        if complete is not None and len(complete) > self.line_cap:
            capped = self._capped(complete, complete_start)
            if capped is not None:
                return _Taken(cut, cut_start, None, complete_start, capped)
        return _Taken(cut, cut_start, complete, complete_start)

    def _capped(self, complete: bytes, start: int) -> list[tuple[int, bytes]] | None:
        """``complete``'s lines with their offsets, cut at the cap; None when none is over."""
        raws = complete.split(b"\n")
        if max(len(raw) for raw in raws) <= self.line_cap:
            return None
        lines: list[tuple[int, bytes]] = []
        for raw in raws:
            line = raw
            if len(raw) > self.line_cap:
                line = raw[: kept_bytes(raw, self.line_cap)]
                dropped = len(raw) - len(line)
                count_cut(self.input_name, dropped, self.line_cap)
                line += cut_marker(dropped)
            lines.append((start, line.removesuffix(b"\r")))
            start += len(raw) + 1
        return lines

    def _cut_line(self, length: int) -> bytes:
        """The kept bytes of a line of ``length`` bytes, with the marker (counted)."""
        assert self._kept is not None
        kept, self._kept = self._kept, None
        dropped = length - len(kept)
        count_cut(self.input_name, dropped, self.line_cap)
        return kept + cut_marker(dropped)

    def split_raw(self, data: bytes) -> list[bytes]:
        """Lines as bytes, without their newline or a carriage return before it (CRLF)."""
        taken = self._take(data)
        lines: list[bytes] = [] if taken.cut is None else [taken.cut]
        if taken.capped is not None:
            lines += [raw for _, raw in taken.capped]
        elif taken.complete is not None:
            complete = taken.complete
            if b"\r" in complete:
                complete = complete.replace(b"\r\n", b"\n").removesuffix(b"\r")
            lines += complete.split(b"\n")
        return lines

    def split_text(self, data: bytes) -> list[str]:
        """Fast path (stdin): one decode for the whole block. A carriage return before a
        newline (CRLF) is dropped, the last line's too (its newline was cut off the block)."""
        taken = self._take(data)
        lines: list[str] = [] if taken.cut is None else [decode(taken.cut, self.input_name)]
        if taken.capped is not None:
            lines += [decode(raw, self.input_name) for _, raw in taken.capped]
        elif taken.complete is not None:
            text = decode(taken.complete, self.input_name)
            if "\r" in text:
                text = text.replace("\r\n", "\n").removesuffix("\r")
            lines += text.split("\n")
        return lines

    def split_with_offsets(self, data: bytes) -> list[tuple[int, str]]:
        """Lines with the offset where each starts (tail saves offsets below pending lines)."""
        taken = self._take(data)
        lines: list[tuple[int, str]] = []
        if taken.cut is not None:
            lines.append((taken.cut_start, decode(taken.cut, self.input_name)))
        if taken.capped is not None:
            lines += [(offset, decode(raw, self.input_name)) for offset, raw in taken.capped]
        elif taken.complete is not None:
            offset = taken.complete_start
            for raw in taken.complete.split(b"\n"):
                text = decode(raw, self.input_name)
                lines.append((offset, text[:-1] if text.endswith("\r") else text))
                offset += len(raw) + 1
        return lines

    def finish(self) -> tuple[int, str] | None:
        """At end of stream: the last line, even without its newline."""
        offset = self.position
        if self._kept is not None:
            raw = self._cut_line(self._line_bytes)
        elif self._carry:
            raw = self._carry
        else:
            return None
        self.position += self._line_bytes
        self._carry = b""
        self._line_bytes = 0
        return offset, decode(raw, self.input_name).removesuffix("\r")
