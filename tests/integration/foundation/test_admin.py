"""The admin server over real sockets."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from sidecars import admin
from sidecars.envparse import HostPort
from sidecars.observability import build_kinds
from sidecars.runtime import Lifecycle


class Admin:
    def __init__(self, server: admin.AdminServer, lifecycle: Lifecycle, calls: list[Any]) -> None:
        self.server = server
        self.lifecycle = lifecycle
        self.calls = calls
        self.url = f"http://127.0.0.1:{server.port}"


async def start_admin(token: str | None) -> Admin:
    lifecycle = Lifecycle()
    calls: list[Any] = []

    async def open_breaker(query: Mapping[str, str]) -> Mapping[str, Any]:
        if query.get("route") == "missing":
            raise admin.AdminError(404, "not_found", "no route named 'missing'")
        calls.append(dict(query))
        return {"state": "open"}

    server = admin.AdminServer(
        lifecycle, lambda: {"routes": []}, {"/breaker/open": open_breaker}, token
    )
    await server.start(HostPort("127.0.0.1", 0))
    return Admin(server, lifecycle, calls)


@pytest.fixture
async def open_admin() -> AsyncIterator[Admin]:
    server = await start_admin(None)
    yield server
    await server.server.close()


@pytest.fixture
async def guarded_admin() -> AsyncIterator[Admin]:
    server = await start_admin("s3cret")
    yield server
    await server.server.close()


async def test_health_and_readiness_follow_the_lifecycle(open_admin: Admin) -> None:
    async with aiohttp.ClientSession(open_admin.url) as http:
        assert (await http.get("/healthz")).status == 200
        response = await http.get("/readyz")
        assert response.status == 503
        assert (await response.json())["status"] == "starting"
        open_admin.lifecycle.serving()
        assert (await http.get("/readyz")).status == 200
        open_admin.lifecycle.request_stop("SIGTERM")
        response = await http.get("/readyz")
        assert response.status == 503
        assert (await response.json())["status"] == "draining"
        assert (await http.get("/healthz")).status == 200
        status = await (await http.get("/status")).json()
        assert status == {"state": "draining", "builds": build_kinds(), "routes": []}


async def test_metrics_are_prometheus_text(open_admin: Admin) -> None:
    async with aiohttp.ClientSession(open_admin.url) as http:
        response = await http.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        # Which families a sidecar process serves: tests/integration/*/test_metrics.py.


async def test_unknown_paths_and_methods(open_admin: Admin) -> None:
    async with aiohttp.ClientSession(open_admin.url) as http:
        missing = await http.get("/nope")
        assert missing.status == 404
        assert (await missing.json())["error"] == "not_found"
        assert (await http.post("/healthz")).status == 405
        assert (await http.get("/breaker/open")).status == 405


async def test_actions_need_a_configured_token(open_admin: Admin) -> None:
    async with aiohttp.ClientSession(open_admin.url) as http:
        response = await http.post("/breaker/open", headers={"Authorization": "Bearer x"})
        assert response.status == 403
    assert open_admin.calls == []


async def test_actions_check_the_bearer_token(guarded_admin: Admin) -> None:
    async with aiohttp.ClientSession(guarded_admin.url) as http:
        assert (await http.post("/breaker/open")).status == 401
        wrong = await http.post("/breaker/open", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        right = await http.post(
            "/breaker/open?route=pay", headers={"Authorization": "Bearer s3cret"}
        )
        assert right.status == 200
        assert await right.json() == {"state": "open"}
        missing = await http.post(
            "/breaker/open?route=missing", headers={"Authorization": "Bearer s3cret"}
        )
        assert missing.status == 404
        # The scheme is case-insensitive (RFC 9110 11.1); the token is not.
        lower = await http.post(
            "/breaker/open?route=pay", headers={"Authorization": "bearer s3cret"}
        )
        assert lower.status == 200
        upper_token = await http.post(
            "/breaker/open?route=pay", headers={"Authorization": "Bearer S3CRET"}
        )
        assert upper_token.status == 401
        other_scheme = await http.post(
            "/breaker/open?route=pay", headers={"Authorization": "Basic s3cret"}
        )
        assert other_scheme.status == 401
    assert guarded_admin.calls == [{"route": "pay"}, {"route": "pay"}]


async def raw_exchange(admin_server: Admin, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin_server.server.port)
    writer.write(payload)
    await writer.drain()
    data = await reader.read()  # until the server closes
    writer.close()
    return data


async def test_keep_alive_and_pipelining(open_admin: Admin) -> None:
    answer = await raw_exchange(
        open_admin,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 ") == 2
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 503 Service Unavailable\r\n" in answer


async def test_garbage_and_oversized_heads_get_clean_errors(open_admin: Admin) -> None:
    garbage = await raw_exchange(open_admin, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    huge = await raw_exchange(
        open_admin, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    )
    assert huge.startswith(b"HTTP/1.1 431 ")
    # The server is still serving.
    ok = await raw_exchange(open_admin, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
