"""The admin app over real sockets (aiohttp's test server)."""

from collections.abc import Mapping
from typing import Any

from sidecars import admin
from sidecars.runtime import Lifecycle


async def make_client(aiohttp_client: Any, token: str | None, calls: list[str]) -> Any:
    lifecycle = Lifecycle()

    async def open_breaker() -> Mapping[str, Any]:
        calls.append("open")
        return {"state": "open"}

    app = admin.build_app(
        lifecycle, lambda: {"routes": []}, {"/breaker/open": open_breaker}, token
    )
    client = await aiohttp_client(app)
    client.lifecycle = lifecycle
    return client


async def test_health_and_readiness_follow_the_lifecycle(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, None, [])
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "starting"
    client.lifecycle.serving()
    assert (await client.get("/readyz")).status == 200
    client.lifecycle.request_stop("SIGTERM")
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "draining"
    assert (await client.get("/healthz")).status == 200
    status = await (await client.get("/status")).json()
    assert status == {"state": "draining", "routes": []}


async def test_metrics_are_prometheus_text(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, None, [])
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    body = await response.text()
    assert "# TYPE sidecar_requests_total counter" in body


async def test_actions_need_a_configured_token(aiohttp_client: Any) -> None:
    calls: list[str] = []
    client = await make_client(aiohttp_client, None, calls)
    response = await client.post("/breaker/open", headers={"Authorization": "Bearer x"})
    assert response.status == 403
    assert calls == []


async def test_actions_check_the_bearer_token(aiohttp_client: Any) -> None:
    calls: list[str] = []
    client = await make_client(aiohttp_client, "s3cret", calls)
    assert (await client.post("/breaker/open")).status == 401
    wrong = await client.post("/breaker/open", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    right = await client.post("/breaker/open", headers={"Authorization": "Bearer s3cret"})
    assert right.status == 200
    assert await right.json() == {"state": "open"}
    assert calls == ["open"]
    assert (await client.get("/breaker/open")).status == 405
