"""Idle keep-alive connections: many clients that each send one request, then wait.

Used by ``bench.proxy``'s ``idle`` scenario to measure what a proxy keeps per idle
connection (RSS delta / connections) and whether it gives the memory back once they close.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator

from bench.common import BenchError

RESPONSE_TIMEOUT = 5.0


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (the hard limit permitting);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def read_response(sock: socket.socket) -> int:
    """Read one HTTP/1.1 response framed by Content-Length; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise BenchError(f"response without Content-Length: {head[:200]!r}")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed inside the response body")
        body += chunk
    return int(lines[0].split()[1])


@contextlib.contextmanager
def idle_connections(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections, opened one after the other, each having had one 200 answered
    and then left open; all closed on exit."""
    raise_fd_limit(count + 256)
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=RESPONSE_TIMEOUT)
            sockets.append(sock)
            sock.sendall(request)
            status = read_response(sock)
            if status != 200:
                raise BenchError(f"an idle connection's request got {status}")
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_descriptors_below(pid: int, limit: int, timeout: float = 15.0) -> bool:
    """Poll until ``pid`` holds at most ``limit`` descriptors (it has seen the closes)."""
    deadline = time.monotonic() + timeout
    while open_descriptors(pid) > limit:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling interval
    return True
