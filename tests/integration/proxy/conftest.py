"""Fixtures for the engine's integration tests: a real aiohttp upstream (in its own thread, so
one serves a whole module), real ``sidecars breaker`` processes, and a raw HTTP client that
shows exactly what went over the wire."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httptools
import pytest
from aiohttp import WSMsgType, web
from support import LOOPBACK, Sidecar, free_port, metric_value


def pattern(size: int) -> bytes:
    """``size`` bytes of a recognisable pattern (for byte-exact checks of big bodies)."""
    block = bytes(range(251)) * 261  # a prime period: shifted or lost blocks show
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def payload() -> Callable[[int], bytes]:
    return pattern


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_size": len(body),
        }
    )


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    data = pattern(size)
    if request.query.get("chunked"):
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, size, 65536):
            await response.write(data[start : start + 65536])
        await response.write_eof()
        return response
    return web.Response(body=data)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "0.5")))
    return web.Response(text="slow answer")


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str("echo: " + message.data)
    return ws


class Backend:
    """An aiohttp upstream running on its own event loop in a thread."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Backend:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/big", big)
        app.router.add_get("/slow", slow)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/ws", websocket)
        app.router.add_route("*", "/{tail:.*}", echo)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Proxy:
    """A running ``sidecars breaker``: its data port and its admin plane."""

    def __init__(self, sidecar: Sidecar, port: int) -> None:
        self.sidecar = sidecar
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def metric(self, name: str, **labels: str) -> float:
        return metric_value(await asyncio.to_thread(self.sidecar.metrics), name, **labels)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.sidecar.log_events() if event.get("event") == name]


def start_proxy(env: dict[str, str], command: str = "breaker") -> Proxy:
    prefix = command.upper()
    port, admin_port = free_port(), free_port()
    full_env = {
        f"{prefix}_LISTEN": f"{LOOPBACK}:{port}",
        f"{prefix}_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        "SIDECAR_ADMIN_TOKEN": "secret",
        **env,
    }
    sidecar = Sidecar([command], full_env, admin_port).start()
    try:
        sidecar.wait_ready_sync()
    except BaseException:
        sidecar.close()
        raise
    return Proxy(sidecar, port)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(backend: Backend) -> Iterator[Proxy]:
    """One sidecar in front of ``backend`` for a whole module (tests read metric deltas)."""
    running = start_proxy({"BREAKER_UPSTREAM": backend.url, "BREAKER_HEADER_TIMEOUT": "1s"})
    yield running
    running.sidecar.close()


@pytest.fixture
def proxies() -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(env: dict[str, str], command: str = "breaker") -> Proxy:
        running = start_proxy(env, command)
        started.append(running)
        return running

    yield start
    for running in started:
        running.sidecar.close()


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False


class RawConnection:
    """Bytes out, parsed responses back: for checks a friendly client would hide."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._responses: list[Response] = []
        self._parser = httptools.HttpResponseParser(self)
        self._current = Response()
        self.head_only = False

    def on_message_begin(self) -> None:
        self._current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self._current.status = self._parser.get_status_code()
        if self.head_only:
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        if not self._current.complete:
            self._finish()

    def _finish(self) -> None:
        self._current.complete = True
        self._responses.append(self._current)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> Response:
        """The next complete response (skipping 1xx interim ones); 10 s at most."""
        async with asyncio.timeout(10):
            while True:
                while self._responses:
                    response = self._responses.pop(0)
                    if response.status >= 200 or response.status == 101:
                        return response
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed before a complete response")
                with contextlib.suppress(httptools.HttpParserUpgrade):
                    self._parser.feed_data(data)

    async def closed(self) -> bool:
        """True once the peer closed (whatever else it still sent is dropped); 10 s at most."""
        async with asyncio.timeout(10):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], Any]]:
    opened: list[RawConnection] = []

    async def open_to(port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        connection = RawConnection(reader, writer)
        opened.append(connection)
        return connection

    yield open_to
    for connection in opened:
        await connection.close()
