"""Admin plane and drain of the real process: /status, forced breaker states, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Callable
from typing import Any

from support import LOOPBACK, free_port, http_get, port_open

GET = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"


def post(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


async def test_status_shows_settings_and_route_state(proxy: Any) -> None:
    status = proxy.sidecar.status()
    assert status["state"] == "serving"
    assert status["settings"]["common"]["admin_token"] == "***"
    (route,) = status["routes"].values()
    assert route["breaker"]["state"] == "closed"
    assert set(route["retry_budget"]) >= {"requests", "retries", "available"}
    assert {"in_flight", "connections", "answered", "pool"} <= set(route)


async def test_the_breaker_is_forced_open_and_closed_per_route(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    other = free_port()
    proxy = proxies(
        {
            "BREAKER_UPSTREAM": backend.url,
            "BREAKER_ROUTES": "extra",
            "BREAKER_ROUTE_EXTRA_UPSTREAM": backend.url,
            "BREAKER_ROUTE_EXTRA_LISTEN": f"{LOOPBACK}:{other}",
        }
    )
    admin = proxy.sidecar.admin_url
    assert post(admin + "/breaker/open?route=extra", None)[0] == 401
    assert post(admin + "/breaker/open?route=nope", "secret")[0] == 404
    assert post(admin + "/breaker/open?route=extra", "secret") == (
        200,
        {"breaker": "open", "routes": {"extra": "open"}},
    )
    connection = await connect(other)
    await connection.send(GET)
    response = await connection.response()
    assert (response.status, response.headers["x-sidecar-error"]) == (503, "circuit_open")
    assert int(response.headers["retry-after"]) >= 1
    untouched = await connect(proxy.port)
    await untouched.send(GET)
    assert (await untouched.response()).status == 200
    assert post(admin + "/breaker/close", "secret")[0] == 200
    await connection.send(GET)
    assert (await connection.response()).status == 200
    transitions = [(e["from"], e["to"], e["reason"]) for e in proxy.events("circuit_transition")]
    assert transitions == [("closed", "open", "forced"), ("open", "closed", "forced")]
    assert await proxy.metric("sidecar_circuit_rejected_total", upstream="extra") == 1


async def test_sigterm_drains_in_flight_requests(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "SIDECAR_DRAIN_TIMEOUT": "10s"})
    idle = await connect(proxy.port)
    await idle.send(GET)
    assert (await idle.response()).status == 200
    busy = await connect(proxy.port)
    await busy.send(b"GET /slow?delay=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    await wait_for(lambda: proxy.sidecar.status()["routes"]["127.0.0.1"]["in_flight"] == 1)
    assert proxy.sidecar.process is not None
    proxy.sidecar.process.send_signal(signal.SIGTERM)
    await wait_for(lambda: http_get(proxy.sidecar.admin_url + "/readyz")[0] == 503)
    assert await idle.closed()  # idle keep-alive connections are closed at once
    assert not port_open(proxy.port)  # no new connections
    response = await busy.response()  # the in-flight request finishes...
    assert (response.status, response.body) == (200, b"slow answer")
    assert response.headers["connection"] == "close"  # ...and its connection closes
    assert await asyncio.to_thread(proxy.sidecar.process.wait, 10) == 0


async def test_the_drain_timeout_cuts_what_is_left(
    backend: Any, proxies: Callable[..., Any], connect: Any
) -> None:
    proxy = proxies({"BREAKER_UPSTREAM": backend.url, "SIDECAR_DRAIN_TIMEOUT": "200ms"})
    busy = await connect(proxy.port)
    await busy.send(b"GET /slow?delay=30 HTTP/1.1\r\nHost: a\r\n\r\n")
    await wait_for(lambda: proxy.sidecar.status()["routes"]["127.0.0.1"]["in_flight"] == 1)
    assert proxy.sidecar.process is not None
    proxy.sidecar.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.sidecar.process.wait, 10) == 0
    assert await busy.closed()
    assert any(event["event"] == "drain_timeout" for event in proxy.sidecar.log_events())


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition (in a thread: it may do blocking I/O) for up to 10 s."""
    for _ in range(500):
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.02)  # polling interval
    raise AssertionError("condition not reached")
