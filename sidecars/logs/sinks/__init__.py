"""The log adapter's outputs: stdout, file:///path and forward://host:port."""

from __future__ import annotations

from typing import Any, Protocol

from sidecars.logs.buffer import Batch


class OutputClosed(Exception):
    """The output can never deliver again (stdout's reader went away)."""


class Sink(Protocol):
    """Writes batches of JSON lines somewhere. ``write`` raises (``OSError``, ``TimeoutError``,
    a protocol error) when the batch was not delivered; the delivery loop retries it."""

    name: str
    max_batch_bytes: int

    async def write(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
