"""The log adapter's inputs: stdin, tail, the Forward protocol server and syslog."""

from __future__ import annotations

from typing import Any, Protocol


class Source(Protocol):
    """One input. ``start`` binds and begins reading; ``stop`` stops accepting and reading
    (work already read is finished and handed on); ``close`` runs once outputs are drained."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
