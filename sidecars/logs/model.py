"""What flows through the log adapter: lines in, records out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
"""One normalised output record, shaped as CONTRACT.md's log record schema."""


@dataclass(slots=True)
class LogLine:
    """One physical line (or one structured event) as an input received it.

    ``stream_key`` groups lines for multi-line joining and partial reassembly: lines of one
    file, one container's stdout, one syslog peer. ``offset`` is where the line starts in its
    file (tail input), so that a source knows which offsets are safe to save.
    """

    text: str
    received_at: float
    input: str
    stream_key: str
    stream: str | None = None
    fields: dict[str, Any] | None = None
    container_id: str | None = None
    container_name: str | None = None
    tag: str | None = None
    timestamp: float | None = None
    format_hint: str | None = None
    offset: int | None = None
