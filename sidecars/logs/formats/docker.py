"""Docker json-file log lines: ``{"log":"message\\n","stream":"stdout","time":"..."}``.

Docker splits lines over 16 KiB into several entries; every entry but the last lacks the
trailing newline, which is how a partial entry is told apart.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class DockerLine(NamedTuple):
    time: str | None
    stream: str | None
    partial: bool
    content: str
    attrs: dict[str, Any] | None


def unwrap(data: dict[str, Any]) -> DockerLine | None:
    """The parts of a json-file entry (already decoded), or None when it is not one."""
    content = data.get("log")
    if not isinstance(content, str) or "stream" not in data or len(data) > 4:
        return None
    if not set(data) <= {"log", "stream", "time", "attrs"}:
        return None
    time = data.get("time")
    attrs = data.get("attrs")
    stream = data.get("stream")
    partial = not content.endswith("\n")
    if not partial:
        content = content[:-2] if content.endswith("\r\n") else content[:-1]
    return DockerLine(
        time if isinstance(time, str) else None,
        stream if isinstance(stream, str) else None,
        partial,
        content,
        attrs if isinstance(attrs, dict) and attrs else None,
    )
