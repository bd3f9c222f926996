"""Bytes to lines for the byte-stream inputs (stdin, tail, syslog over TCP).

Sans-IO. Bytes after the last newline wait for more; a line that grows past
``max_line_bytes`` without a newline is cut: its first ``max_line_bytes + 1`` bytes go on as a
line (so the processor sees it is over the limit, marks and counts the cut) and the rest, up to
its newline, is skipped. Memory per stream stays bounded by the limit, whatever the input.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecars.observability import LOG_INPUT_ERRORS


def decode(raw: bytes, input_name: str) -> str:
    """UTF-8, with invalid bytes replaced by U+FFFD and counted."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        LOG_INPUT_ERRORS.labels(input_name, "invalid_utf8").inc()
        return raw.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class _Taken:
    complete: bytes | None
    """Complete lines joined by newlines, the final newline dropped; None when there is none."""
    complete_start: int
    cut: bytes | None
    cut_start: int


class LineSplitter:
    """Splits one byte stream into lines, tracking stream offsets for the tail input."""

    def __init__(self, max_line_bytes: int, input_name: str, position: int = 0) -> None:
        self.max_line_bytes = max_line_bytes
        self.input_name = input_name
        self.position = position
        """Offset of the first byte not yet returned in a line (where a re-read would start)."""
        self._carry = b""
        self._skipping = False

    @property
    def read_position(self) -> int:
        """Offset of the next byte to feed."""
        return self.position + len(self._carry)

    def _take(self, data: bytes) -> _Taken:
        block = self._carry + data if self._carry else data
        if self._skipping:
            newline = block.find(b"\n")
            if newline < 0:
                self.position += len(block)
                self._carry = b""
                return _Taken(None, self.position, None, 0)
            self.position += newline + 1
            block = block[newline + 1 :]
            self._skipping = False
        last = block.rfind(b"\n")
        complete_start = self.position
        complete = None
        if last >= 0:
            complete = block[:last]
            block = block[last + 1 :]
            self.position += last + 1
        cut, cut_start = None, self.position
        if len(block) > self.max_line_bytes:
            cut = block[: self.max_line_bytes + 1]
            self.position += len(block)
            block = b""
            self._skipping = True
        self._carry = block
        return _Taken(complete, complete_start, cut, cut_start)

    def split_raw(self, data: bytes) -> list[bytes]:
        """Lines as bytes, without their newline or a carriage return before it (CRLF)."""
        taken = self._take(data)
        lines: list[bytes] = []
        if taken.complete is not None:
            complete = taken.complete
            if b"\r" in complete:
                complete = complete.replace(b"\r\n", b"\n").removesuffix(b"\r")
            lines = complete.split(b"\n")
        if taken.cut is not None:
            lines.append(taken.cut)
        return lines

    def split_text(self, data: bytes) -> list[str]:
        """Fast path (stdin): one decode for the whole block. A carriage return before a
        newline (CRLF) is dropped, the last line's too (its newline was cut off the block)."""
        taken = self._take(data)
        lines: list[str] = []
        if taken.complete is not None:
            text = decode(taken.complete, self.input_name)
            if "\r" in text:
                text = text.replace("\r\n", "\n").removesuffix("\r")
            lines = text.split("\n")
        if taken.cut is not None:
            lines.append(taken.cut.decode(errors="replace"))
        return lines

    def split_with_offsets(self, data: bytes) -> list[tuple[int, str]]:
        """Lines with the offset where each starts (tail saves offsets below pending lines)."""
        taken = self._take(data)
        lines: list[tuple[int, str]] = []
        if taken.complete is not None:
            offset = taken.complete_start
            for raw in taken.complete.split(b"\n"):
                text = decode(raw, self.input_name)
                lines.append((offset, text[:-1] if text.endswith("\r") else text))
                offset += len(raw) + 1
        if taken.cut is not None:
            lines.append((taken.cut_start, taken.cut.decode(errors="replace")))
        return lines

    def finish(self) -> tuple[int, str] | None:
        """At end of stream: the last line, even without its newline."""
        if not self._carry:
            return None
        offset, raw = self.position, self._carry
        self.position += len(raw)
        self._carry = b""
        return offset, decode(raw, self.input_name).removesuffix("\r")
