"""The log adapter's outputs: stdout, file:///path, forward://host:port, http(s):// (NDJSON),
otlp+http(s):// and cloudwatch://<log-group>."""

from __future__ import annotations

from typing import Any, Protocol

from sidecars.logs.buffer import Batch


class OutputClosed(Exception):
    """The output can never deliver again (stdout's reader went away)."""


class RetryLater(OSError):
    """The destination did not take the batch but may later (throttled, 5xx, unreachable):
    retry after ``delay`` seconds, which the output chose (its backoff, or the destination's
    ``Retry-After``)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Sink(Protocol):
    """Writes batches of JSON lines somewhere. ``write`` raises (``OSError``, ``TimeoutError``,
    a protocol error) when the batch was not delivered; the delivery loop retries it."""

    name: str
    max_batch_bytes: int

    async def write(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
