"""Upstream name resolution with a short cache, never a permanent one.

Containers come and go behind a service name (ECS service discovery, Kubernetes headless
services), so names are looked up again once ``ttl`` seconds passed; only new connections
resolve, and pooled connections die by their idle timeout, so traffic follows the DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

Address = tuple[int, tuple[Any, ...]]  # (family, sockaddr)


class Resolver:
    def __init__(self, loop: asyncio.AbstractEventLoop, ttl: float) -> None:
        self._loop = loop
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, list[Address]]] = {}

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Addresses for ``host``, in the resolver's order; raises OSError when there are none."""
        literal = _literal(host, port)
        if literal is not None:
            return [literal]
        now = self._loop.time()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[Address] = [
            (int(family), tuple(sockaddr)) for family, _, _, _, sockaddr in infos
        ]
        if not addresses:
            raise OSError(f"no address for {host}")
        if self._ttl > 0:
            self._cache[(host, port)] = (now + self._ttl, addresses)
        return addresses


def _literal(host: str, port: int) -> Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return socket.AF_INET6, (host, port, 0, 0)
    return socket.AF_INET, (host, port)
