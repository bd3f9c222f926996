"""Memory bounds of the real process: many idle connections, and a client slower than its
upstream (backpressure keeps the sidecar from holding the whole body)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from pathlib import Path
from typing import Any

from support import LOOPBACK

BODY = 64 << 20  # 64 MiB: far more than the sidecar may hold for one slow client
HELD_AT_MOST = 16 << 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_reads_nothing_holds_the_upstream(proxy: Any, payload: Any) -> None:
    pid = proxy.sidecar.process.pid
    before = rss_bytes(pid)
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.connect((LOOPBACK, proxy.port))
        client.sendall(f"GET /big?size={BODY} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        client.settimeout(30)
        first = client.recv(65536)  # the answer has begun; now nothing is read for a while
        assert first.startswith(b"HTTP/1.1 200")
        # The upstream sends as fast as loopback allows: with no backpressure the sidecar
        # takes the whole body well within the time the client reads nothing.
        samples = []
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            samples.append(rss_bytes(pid) - before)
            time.sleep(0.05)
        assert max(samples) < HELD_AT_MOST, max(samples)
        _, _, body = first.partition(b"\r\n\r\n")
        digest = hashlib.sha256(body)
        received = len(body)
        while received < BODY:
            chunk = client.recv(1 << 20)
            assert chunk
            digest.update(chunk)
            received += len(chunk)
        assert digest.hexdigest() == hashlib.sha256(payload(BODY)).hexdigest()
        assert rss_bytes(pid) - before < HELD_AT_MOST


async def test_many_idle_connections_are_all_served(proxy: Any, connect: Any) -> None:
    connections = [await connect(proxy.port) for _ in range(300)]
    for conn in connections[::2]:  # half spoke once, half never did
        await conn.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await conn.response()).status == 200
    for conn in connections:
        await conn.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = await asyncio.gather(*(conn.response() for conn in connections))
    assert [answer.status for answer in answers] == [200] * len(connections)
