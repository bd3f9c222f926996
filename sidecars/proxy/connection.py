"""What the exchange and the filters ask of an upstream connection, whatever its protocol
(httpcore's ``AsyncConnectionInterface`` is the model). ``UpstreamConnection`` is the HTTP/1
implementation and ``filters.faults.InjectedAnswer`` a made-up one; an HTTP/2 stream would be
another, without a change to the exchange.

A mypyc trait, not a ``typing.Protocol``: an implementation names it as a base, and the
compiled exchange then reads its fields and calls its methods natively (through a Protocol
each was a Python attribute lookup, some twenty per request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import trait

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange
    from sidecars.proxy.pool import ConnectionPool


@trait
class Connection:
    __slots__ = ()

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

    def attach(self, exchange: Exchange, head_deadline: float, head_only: bool) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def reuse(self) -> None:
        """The response is over and the connection may serve another: back to its pool."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError
