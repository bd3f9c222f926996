"""The two ends of the app's logs in the demo.

``DockerLogDriver`` plays Docker's fluentd log driver: each line the app prints becomes one
Forward protocol *Message* event ``[tag, EventTime, record]`` with the driver's record fields
(``container_id``, ``container_name``, ``source``, ``log``), sent to the adapter's forward
port. It is written here, independent of the adapter's own codec, so the demo proves the
adapter against the wire format rather than against itself.

``NormalisedRecords`` reads what the adapter prints: one JSON record per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

EVENT_TIME_EXT = 0


def event_time(now: float) -> msgpack.ExtType:
    """Forward protocol EventTime: ext type 0, uint32 seconds + uint32 nanoseconds."""
    seconds = int(now)
    return msgpack.ExtType(EVENT_TIME_EXT, struct.pack(">II", seconds, int((now - seconds) * 1e9)))


class DockerLogDriver:
    """Ships one container's stdout/stderr lines to a Forward input, in order."""

    def __init__(self, host: str, port: int, container_name: str) -> None:
        self.host = host
        self.port = port
        self.tag = container_name
        self.record_base = {
            "container_id": hashlib.sha256(container_name.encode()).hexdigest(),
            "container_name": "/" + container_name,
        }
        self.writer: asyncio.StreamWriter | None = None
        self.shipped = 0
        self.failed = 0

    async def ship(self, source: str, line: bytes) -> None:
        text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
        record = {**self.record_base, "source": source, "log": text}
        event = msgpack.packb([self.tag, event_time(time.time()), record])
        try:
            if self.writer is None:
                _, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(event)
            await self.writer.drain()
            self.shipped += 1
        except OSError:
            # The adapter is stopping or gone: count the loss (the summary shows it) and
            # reconnect on the next line, as the real driver does.
            self.failed += 1
            await self.close()

    async def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def record_kind(record: dict[str, Any]) -> str:
    """A word for what a normalised record shows: a joined stack trace, an access log..."""
    if isinstance(record.get("error"), dict):
        return "stack trace"
    if isinstance(record.get("http"), dict):
        return "access log"
    return "event"


def sample_kind(record: dict[str, Any]) -> str | None:
    """Which of the four kinds worth showing once this record is, if any: the order traffic's
    JSON event, logfmt warning, joined traceback and access log (not start-up or probes)."""
    http = record.get("http")
    if isinstance(http, dict):
        return None if http.get("path") == "/healthz" else "access log"
    if isinstance(record.get("error"), dict):
        return "stack trace"
    if record.get("level") == "warn":
        return "warning"
    if record.get("trace_id"):
        return "traced event"
    return None


@dataclass
class NormalisedRecords:
    """Counts the adapter's output records and keeps the first one of each sample kind."""

    count: int = 0
    invalid: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    sampled: set[str] = field(default_factory=set)
    to_show: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: bytes) -> None:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.invalid += 1
            return
        if not isinstance(record, dict):
            self.invalid += 1
            return
        self.count += 1
        self.kinds[record_kind(record)] += 1
        kind = sample_kind(record)
        if kind is not None and kind not in self.sampled:
            self.sampled.add(kind)
            self.to_show.append(record)

    def take_to_show(self) -> list[dict[str, Any]]:
        shown, self.to_show = self.to_show, []
        return shown
