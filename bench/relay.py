"""A bare uvloop TCP relay: the reference for what Python can move with no HTTP parsing at all.

Each client connection gets its own upstream connection; bytes are copied both ways with
transport-level backpressure. ``python -m bench.relay --listen PORT --upstream PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop


class RelayPipe(asyncio.Protocol):
    """One side of a relayed connection; writes what it receives to its ``peer`` transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: RelayPipe | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            # The upstream connection is still being made: hold the bytes until it is.
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class ClientPipe(RelayPipe):
    """The client side: opens the upstream connection when the client connects."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(RelayPipe, "127.0.0.1", self.upstream_port)
        except OSError:
            self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()


async def serve(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ClientPipe(upstream_port), "127.0.0.1", listen_port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
