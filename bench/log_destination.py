"""A destination for the log adapter's outputs that takes everything at once, so that the
benchmark measures the output, not the destination.

- ``--mode forward``: a Forward server that reads PackedForward requests and answers each
  ``chunk`` with its ack (without unpacking the entries).
- ``--mode http``: an HTTP/1.1 keep-alive server that reads each POST body and answers 200 with
  ``--body`` (``{}``: what PutLogEvents and an OTLP receiver may answer).

    python -m bench.log_destination --mode http --listen PORT
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import msgpack
import uvloop

MAX_HEAD = 64 * 1024
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve_forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    requests = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
    while chunk := await reader.read(256 * 1024):
        requests.feed(chunk)
        for request in requests:
            options = request[2] if len(request) > 2 and isinstance(request[2], dict) else {}
            if "chunk" in options:
                writer.write(msgpack.packb({"ack": options["chunk"]}))
        await writer.drain()
    writer.close()


def http_handler(body: bytes) -> Handler:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return serve_http


async def main_async(mode: str, port: int, body: bytes) -> None:
    handler = serve_forward if mode == "forward" else http_handler(body)
    server = await asyncio.start_server(handler, "127.0.0.1", port, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("forward", "http"), required=True)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--body", default="{}")
    args = parser.parse_args()
    uvloop.run(main_async(args.mode, args.listen, args.body.encode()))


if __name__ == "__main__":
    main()
