"""The admin HTTP server: health, readiness, metrics, status and token-guarded actions.

A small HTTP/1.1 server on asyncio streams and httptools (already on the data path), rather
than aiohttp: the admin plane answers a handful of GETs from probes and Prometheus, and
leaving aiohttp out of the sidecar processes keeps about 12 MB off their resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httptools
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecars.envparse import HostPort
from sidecars.observability import (
    ADMIN_CONNECTIONS_CLOSED,
    REGISTRY,
    LogThrottle,
    build_kinds,
    get_logger,
)
from sidecars.runtime import Lifecycle

Action = Callable[[Mapping[str, str]], Awaitable[Mapping[str, Any]]]
"""A POST action: given the query parameters, changes state and returns a JSON view."""


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """A request to a token-guarded resource: ``rest`` is the path after the resource's
    own (``""`` or ``"/<id>"``)."""

    method: str
    rest: str
    query: Mapping[str, str]
    body: bytes


Resource = Callable[[ResourceRequest], Awaitable[tuple[int, Any]]]
"""A token-guarded resource (every method): its answer's status and JSON view."""

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
IDLE_SECONDS = 30.0
# The admin port is often bound to every interface: a request must arrive this long after
# accept (after its first byte on keep-alive), and only so many connections are served at once.
REQUEST_SECONDS = 5.0
MAX_CONNECTIONS = 64
log = get_logger("sidecars.admin")


class AdminError(Exception):
    """Raised by an action to answer with an error (e.g. 404 for an unknown route)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: bytes
    keep_alive: bool
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    send_body: bool = True
    """False for HEAD: the head (Content-Length included) is GET's, the body is left out."""


def _json(data: Any, status: int = 200) -> _Response:
    return _Response(status, orjson.dumps(data, default=str))


def _error(status: int, error: str, detail: str) -> _Response:
    return _json({"error": error, "detail": detail}, status)


class _RequestReader:
    """httptools callbacks collecting complete requests (pipelined ones queue up)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.complete: deque[_Request] = deque()
        self.head_bytes = 0
        self.body_bytes = 0
        self._url = b""
        self._authorization = b""
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._url = b""
        self._authorization = b""
        self._body = []
        self.head_bytes = 0
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if name.lower() == b"authorization":
            self._authorization = value

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes <= MAX_BODY_BYTES:
            self._body.append(body)

    def on_message_complete(self) -> None:
        url = urlsplit(self._url.decode("latin-1"))
        self.complete.append(
            _Request(
                method=self.parser.get_method().decode("latin-1"),
                path=url.path,
                query=dict(parse_qsl(url.query)),
                authorization=self._authorization,
                keep_alive=self.parser.should_keep_alive(),
                body=b"".join(self._body),
            )
        )


class AdminServer:
    """Serves GET /healthz /readyz /metrics /status, the POST ``actions`` (by path) and the
    ``resources`` (by path prefix, every method), both behind the admin token."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        status: Callable[[], Mapping[str, Any]],
        actions: Mapping[str, Action],
        token: str | None,
        resources: Mapping[str, Resource] | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.status = status
        self.actions = actions
        self.resources = resources or {}
        self.token = token
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closes_logged = LogThrottle()
        # /status's "builds": each compiled group's build (looked up once, on the first ask)
        self._compiled: dict[str, str] | None = None

    async def start(self, listen: HostPort) -> None:
        self._server = await asyncio.start_server(
            self._connection, listen.host, listen.port, reuse_address=True
        )
        log.info("admin_listening", address=str(listen))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            self._closed_by_server("too_many")
            writer.close()
            return
        self._connections.add(task)
        requests = _RequestReader()
        # The first request is timed from accept, the next ones from their first byte.
        started: float | None = asyncio.get_running_loop().time()
        try:
            while True:
                request = await self._next_request(reader, requests, started)
                if request is None:
                    return
                started = None
                response = await self._dispatch(request)
                writer.write(_encode(response, request.keep_alive))
                await writer.drain()
                if not request.keep_alive:
                    return
        except _RequestTimeout:
            self._closed_by_server("request_timeout")
        except _BadRequest as bad:
            log.warn("admin_bad_request", reason=bad.reason)
            writer.write(_encode(_error(bad.status, "bad_request", bad.reason), False))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _closed_by_server(self, reason: str) -> None:
        ADMIN_CONNECTIONS_CLOSED.labels(reason).inc()
        held_back = self._closes_logged.due()
        if held_back is not None:
            log.warn("admin_connection_closed", reason=reason, held_back=held_back)

    async def _next_request(
        self, reader: asyncio.StreamReader, requests: _RequestReader, started: float | None
    ) -> _Request | None:
        """The next request, complete within REQUEST_SECONDS of ``started``, or of its first
        byte when None (the wait for that byte is bounded by IDLE_SECONDS); None at the end."""
        loop = asyncio.get_running_loop()
        deadline = None if started is None else started + REQUEST_SECONDS
        while not requests.complete:
            try:
                async with asyncio.timeout_at(
                    loop.time() + IDLE_SECONDS if deadline is None else deadline
                ):
                    data = await reader.read(16 * 1024)
            except TimeoutError:
                if deadline is None:
                    return None  # idle between requests: closed quietly
                raise _RequestTimeout from None
            if not data:
                return None
            if deadline is None:
                deadline = loop.time() + REQUEST_SECONDS
            try:
                requests.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise _BadRequest(400, "upgrade not supported") from None
            except httptools.HttpParserError as error:
                raise _BadRequest(400, f"malformed request: {error}") from None
            if requests.head_bytes > MAX_HEAD_BYTES:
                raise _BadRequest(431, "request head too large")
            if requests.body_bytes > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
        return requests.complete.popleft()

    async def _dispatch(self, request: _Request) -> _Response:
        if request.method == "HEAD":  # as GET without the body (RFC 9110 9.3.2): curl -I
            answer = await self._dispatch(dataclasses.replace(request, method="GET"))
            return dataclasses.replace(answer, send_body=False)
        if request.method == "GET":
            view = self._views.get(request.path)
            if view is not None:
                return view(self)
        elif request.method == "POST" and request.path in self.actions:
            return await self._run_action(request)
        for prefix, resource in self.resources.items():
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return await self._serve_resource(request, prefix, resource)
        known = request.path in self._views or request.path in self.actions
        if known:
            return _error(405, "method_not_allowed", f"{request.method} {request.path}")
        return _error(404, "not_found", f"no admin endpoint {request.path}")

    def _refused(self, request: _Request) -> _Response | None:
        """The answer to a request without the admin token (None: the token is right)."""
        if self.token is None:
            log.warn("admin_action_refused", path=request.path, reason="no_token_configured")
            return _error(403, "forbidden", "SIDECAR_ADMIN_TOKEN is not set")
        # The scheme is case-insensitive (RFC 9110 11.1), the token is not.
        scheme, _, token = request.authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            token.strip(), self.token.encode()
        ):
            log.warn("admin_action_refused", path=request.path, reason="bad_token")
            return _error(401, "unauthorized", "Bearer token required")
        return None

    async def _serve_resource(
        self, request: _Request, prefix: str, resource: Resource
    ) -> _Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            status, view = await resource(
                ResourceRequest(
                    request.method, request.path[len(prefix) :], request.query, request.body
                )
            )
        except AdminError as error:
            return _error(error.status, error.error, error.detail)
        if request.method != "GET":
            log.info("admin_action", path=request.path, method=request.method)
        return _json(view, status)

    async def _run_action(self, request: _Request) -> _Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            result = await self.actions[request.path](request.query)
        except AdminError as error:
            return _error(error.status, error.error, error.detail)
        log.info("admin_action", path=request.path, query=request.query)
        return _json(result)

    def _healthz(self) -> _Response:
        return _json({"status": "alive"})

    def _readyz(self) -> _Response:
        return _json({"status": self.lifecycle.state}, 200 if self.lifecycle.ready else 503)

    def _metrics(self) -> _Response:
        return _Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())

    def _status(self) -> _Response:
        if self._compiled is None:
            self._compiled = build_kinds()
        return _json({"state": self.lifecycle.state, "builds": self._compiled, **self.status()})

    _views: Mapping[str, Callable[[AdminServer], _Response]] = {
        "/healthz": _healthz,
        "/readyz": _readyz,
        "/metrics": _metrics,
        "/status": _status,
    }


class _RequestTimeout(Exception):
    """A request that did not arrive within REQUEST_SECONDS."""


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _encode(response: _Response, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    head = (
        f"HTTP/1.1 {response.status} {phrase}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
    ).encode()
    body = response.body if response.send_body else b""
    return head + b"Content-Type: " + response.content_type + b"\r\n\r\n" + body
