"""Real parts for tests of the proxy sidecars: scripted aiohttp upstreams that misbehave on
request, and a running ``sidecars breaker|ambassador`` process with its admin plane."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from support import LOOPBACK, Sidecar, free_port, metric_value

Behaviour = str | Callable[[web.Request], Awaitable[web.StreamResponse]]
Answer = tuple[int, CIMultiDictProxy[str], bytes]


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (10 s at most): waits for events, never guesses."""
    deadline = time.monotonic() + 10.0
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)  # polling interval


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body_sha256: str
    body_size: int
    at: float


@dataclass
class ScriptedUpstream:
    """An aiohttp upstream that behaves as told: ``script`` is consumed one behaviour per
    request, then ``mode`` applies. Behaviours: "ok", a status ("503"), "503 retry-after=N",
    "hang" (answers 200 once ``gate`` is set), "reset" (TCP RST), "close" (closes without a
    response), or a handler coroutine. stop() makes the port refuse connections; start()
    brings it back on the same port."""

    name: str
    mode: Behaviour = "ok"
    script: list[Behaviour] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    host: str = LOOPBACK
    health: int = 200  # the answer to GET /healthz (health checks are not in ``seen``)
    health_checks: int = 0
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def hits(self) -> int:
        return len(self.seen)

    async def start(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await self._site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_hits(self, count: int) -> None:
        await eventually(lambda: self.hits >= count, f"{count} hits on {self.name}")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/healthz":
            self.health_checks += 1
            return web.Response(status=self.health, text=f"health of {self.name}")
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                CIMultiDict(request.headers),
                hashlib.sha256(body).hexdigest(),
                len(body),
                time.monotonic(),
            )
        )
        behaviour = self.script.pop(0) if self.script else self.mode
        if not isinstance(behaviour, str):
            return await behaviour(request)
        if behaviour == "ok":
            return web.Response(text=f"ok from {self.name}")
        if behaviour == "hang":
            await self.gate.wait()
            return web.Response(text=f"late from {self.name}")
        if behaviour in ("reset", "close"):
            transport = request.transport
            assert transport is not None
            if behaviour == "reset":
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response()  # never written: the connection is gone
        status, _, option = behaviour.partition(" ")
        headers = {}
        if option.startswith("retry-after="):
            headers["Retry-After"] = option.removeprefix("retry-after=")
        return web.Response(status=int(status), text=f"{status} from {self.name}", headers=headers)


@dataclass
class RunningProxy:
    """A ``sidecars breaker|ambassador`` process, its data URL and its admin plane."""

    sidecar: Sidecar
    url: str
    port: int

    async def metric(self, name: str, **labels: str) -> float:
        text = await asyncio.to_thread(self.sidecar.metrics)
        return metric_value(text, name, **labels)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sidecar.status)

    async def breaker(self, route: str | None = None) -> dict[str, Any]:
        """The breaker snapshot of a route (the only one when not named) in /status."""
        routes = (await self.status())["routes"]
        if route is None:
            (route,) = routes
        return dict(routes[route]["breaker"])

    async def wait_breaker(self, state: str, route: str | None = None) -> dict[str, Any]:
        """Poll /status until the breaker is in ``state`` (reading it also moves an open
        circuit whose period is over to half-open)."""
        snapshots: list[dict[str, Any]] = []

        async def reached() -> bool:
            snapshots.append(await self.breaker(route))
            return bool(snapshots[-1]["state"] == state)

        await eventually(reached, f"breaker {state}")
        return snapshots[-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.sidecar.log_events() if event.get("event") == name]

    def transitions(self) -> list[tuple[str, str, str]]:
        """(from, to, reason) of every circuit transition logged."""
        return [(e["from"], e["to"], e["reason"]) for e in self.events("circuit_transition")]


async def start_proxy(command: str, env: dict[str, str]) -> RunningProxy:
    """Start ``sidecars <command>`` on free loopback ports and wait for /readyz."""
    prefix = command.upper()
    port, admin_port = free_port(), free_port()
    full_env = {
        f"{prefix}_LISTEN": f"{LOOPBACK}:{port}",
        f"{prefix}_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        **env,
    }
    sidecar = Sidecar([command], full_env, admin_port).start()
    proxy = RunningProxy(sidecar, f"http://{LOOPBACK}:{port}", port)
    try:
        await sidecar.wait_ready()
    except BaseException:
        sidecar.close()
        raise
    return proxy


def breaker_env(upstream: ScriptedUpstream | str, **settings: str) -> dict[str, str]:
    """``sidecars breaker`` settings for the tests: 3 failures trip, 30 s open; ``settings``
    by lower-case name without the prefix (``open_seconds="1"``)."""
    return {
        "BREAKER_UPSTREAM": upstream if isinstance(upstream, str) else upstream.url,
        "BREAKER_FAILURE_THRESHOLD": "3",
        "BREAKER_OPEN_SECONDS": "30",
        **{f"BREAKER_{key.upper()}": value for key, value in settings.items()},
    }


def ambassador_env(upstream: ScriptedUpstream | str, **settings: str) -> dict[str, str]:
    """``sidecars ambassador`` settings for the tests: millisecond backoffs keep them fast (the
    schedule itself is unit-tested)."""
    return {
        "AMBASSADOR_UPSTREAM": upstream if isinstance(upstream, str) else upstream.url,
        "AMBASSADOR_BACKOFF_BASE": "1ms",
        "AMBASSADOR_BACKOFF_MAX": "5ms",
        **{f"AMBASSADOR_{key.upper()}": value for key, value in settings.items()},
    }


async def send(
    session: aiohttp.ClientSession,
    proxy: RunningProxy,
    method: str = "GET",
    path: str = "/",
    **kwargs: Any,
) -> Answer:
    """Status, headers and body of one request through the proxy."""
    async with session.request(method, proxy.url + path, **kwargs) as response:
        return response.status, response.headers, await response.read()


def assert_circuit_open(answer: Answer, open_seconds: int) -> None:
    """The contract's answer while the circuit is open."""
    status, headers, body = answer
    assert status == 503
    assert headers["X-Sidecar-Error"] == "circuit_open"
    retry_after = headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= open_seconds
    document = json.loads(body)
    assert document["error"] == "circuit_open"
    assert document["detail"]
    assert document["upstream"]


Upstreams = Callable[..., Awaitable[ScriptedUpstream]]
"""The ``upstreams`` fixture: ``await upstreams(name, mode)`` starts a scripted upstream."""
Proxies = Callable[[str, dict[str, str]], Awaitable[RunningProxy]]
"""The ``proxies`` fixture: ``await proxies("breaker", env)`` starts a sidecar."""


# A typical nginx answer (8 headers, a 612-byte body), for tests of upstream response reading.
NGINX_BODY = b"<html>" + b"x" * 599 + b"</html>"
NGINX_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: 612\r\n"
    b"Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "5f0c-264"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
) + NGINX_BODY


def breaker_process_env(upstream: str, **extra: str) -> tuple[int, int, dict[str, str]]:
    """Free listen and admin ports and the environment of a ``sidecars breaker`` started by
    hand (a test that owns its process, its stdout say) in front of ``upstream``."""
    port, admin_port = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "BREAKER_UPSTREAM": upstream,
        "BREAKER_LISTEN": f"{LOOPBACK}:{port}",
        "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        **extra,
    }
    return port, admin_port, env
