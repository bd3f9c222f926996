"""What one stream holds between lines: a partial line being stitched, and the group of lines
that the next line may still continue.

Most groups are a single line waiting to see whether a stack trace follows it, so that
case is a plain tuple (``Single``); a ``Group`` object is made only once a second line
joins, or when a group starts as a trace.
"""

from __future__ import annotations

from typing import Any

from sidecars.logs.model import LogLine
from sidecars.logs.multiline import TRACE_STATES

Moment = str | float | None
"""When a line happened by its envelope (CRI, Docker json-file: text) or by its input (a
Forward event time: epoch seconds); None when neither says."""
Single = tuple[LogLine, str, Moment, dict[str, Any] | None, dict[str, Any] | None, bool]
"""A one-line group: the LogLine, its text (envelope removed), its ``Moment``, the JSON
object already decoded from it, extra attributes (Docker attrs, truncation marks), and
whether the text may hold a secret (``Redactor.suspects``)."""


def byte_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


class Group:
    """Several lines joined so far (or a trace that started on its own line)."""

    __slots__ = ("data", "extra", "head", "size", "state", "texts", "time", "trace_start")

    def __init__(self, single: Single, state: int) -> None:
        self.head, text, self.time, self.data, self.extra, _ = single
        self.texts = [text]
        self.size = byte_length(text)
        self.state = state
        self.trace_start = 0 if state in TRACE_STATES else -1
        """Index of the line where a stack trace starts (-1: none)."""

    def add(self, text: str, size: int, state: int) -> None:
        self.texts.append(text)
        self.size = size
        if state != self.state:
            if self.trace_start < 0 and state in TRACE_STATES:
                self.trace_start = len(self.texts) - 1
            self.state = state


class StreamState:
    """One stream: ``(stream_key, stream name)``."""

    __slots__ = (
        "group",
        "name",
        "partial",
        "partial_head",
        "partial_id",
        "partial_size",
        "partial_time",
        "single",
        "touched",
    )

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.touched = 0.0
        self.single: Single | None = None
        self.group: Group | None = None
        # Partial line: parts so far, the LogLine and envelope time of the first part.
        self.partial: list[str] | None = None
        self.partial_head: LogLine | None = None
        self.partial_time: Moment = None
        self.partial_id: Any = None
        self.partial_size = 0

    @property
    def lines(self) -> int:
        """Lines held: in the group and in the partial line."""
        grouped = 1 if self.single is not None else len(self.group.texts) if self.group else 0
        return grouped + len(self.partial or ())

    def oldest(self) -> LogLine | None:
        """The first line of whatever is pending here (partial parts come before a group
        only when they arrived first: compared by the caller)."""
        if self.single is not None:
            return self.single[0]
        return None if self.group is None else self.group.head

    def start_partial(self, line: LogLine, text: str, when: Moment, key: Any) -> None:
        self.partial, self.partial_head, self.partial_time = [text], line, when
        self.partial_id, self.partial_size = key, len(text)

    def take_partial(self) -> tuple[LogLine, str, Moment]:
        """The partial line so far (first part's LogLine, joined text, first part's time)."""
        assert self.partial is not None and self.partial_head is not None
        whole = (self.partial_head, "".join(self.partial), self.partial_time)
        self.partial = self.partial_head = self.partial_time = self.partial_id = None
        self.partial_size = 0
        return whole


def split_line(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, on character boundaries."""
    encoded = text.encode("utf-8", "replace")
    pieces: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and end > start + 1 and (encoded[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(encoded[start:end].decode("utf-8", "replace"))
        start = end
    return pieces
