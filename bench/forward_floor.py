"""The Python floor for the Forward input: unpack PackedForward frames, write JSON lines.

An asyncio (uvloop) server that feeds received bytes to a msgpack ``Unpacker``, unpacks each
PackedForward entry stream and writes ``{"tag", "time", **record}`` as one JSON line to stdout.
No acks, partial stitching, parsing of ``log`` or buffering: the least a Forward input can do.
It serves one connection and exits when that connection closes.

    python -m bench.forward_floor --listen PORT
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgpack
import orjson
import uvloop


def event_time(value: Any) -> float:
    if isinstance(value, msgpack.ExtType) and value.code == 0:
        return int.from_bytes(value.data[:4], "big") + int.from_bytes(value.data[4:], "big") / 1e9
    return float(value)


async def serve(port: int) -> int:
    done = asyncio.get_running_loop().create_future()
    write = sys.stdout.buffer.write
    newline = orjson.OPT_APPEND_NEWLINE
    written = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        received = False
        frames = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
        entries = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
        while chunk := await reader.read(256 * 1024):
            received = True
            frames.feed(chunk)
            for frame in frames:
                tag, packed = frame[0], frame[1]
                entries.feed(packed)
                for when, record in entries:
                    write(
                        orjson.dumps(
                            {"tag": tag, "time": event_time(when), **record}, option=newline
                        )
                    )
                    written += 1
        writer.close()
        # A readiness probe connects and closes without a byte: keep serving after it.
        if received and not done.done():
            done.set_result(None)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await done
    sys.stdout.buffer.flush()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    args = parser.parse_args()
    written = uvloop.run(serve(args.listen))
    print(f"forward_floor wrote {written} records", file=sys.stderr)


if __name__ == "__main__":
    main()
