"""What the exchange and the filters ask of an upstream connection, whatever its protocol
(httpcore's ``AsyncConnectionInterface`` is the model). ``UpstreamConnection`` is the HTTP/1
implementation; an HTTP/2 stream would be another, without a change to the exchange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.pool import ConnectionPool


class Connection(Protocol):
    # The response to the request in progress, as its head was parsed.
    status: int
    status_line: bytes
    parts: list[bytes]  # header lines to relay: name, b": ", value, b"\r\n", ...
    content_length: bytes | None
    chunked: bool
    codings: bytes | None  # transfer codings other than a final chunked (b"gzip")
    retry_after: bytes | None
    upgrade: bytes | None
    keep_alive: bool
    head_only: bool
    # Whether it served a request before (pooled), and whether any byte came back this time.
    reused: bool
    received: bool
    pool: ConnectionPool

    def attach(self, exchange: Exchange, head_deadline: float, head_only: bool) -> None: ...

    def write(self, data: bytes) -> None: ...

    def reuse(self) -> None:
        """The response is over and the connection may serve another: back to its pool."""

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...
