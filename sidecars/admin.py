"""The admin HTTP server (aiohttp): health, readiness, metrics, status and guarded actions."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecars.envparse import HostPort
from sidecars.observability import REGISTRY, get_logger
from sidecars.runtime import Lifecycle

Action = Callable[[], Awaitable[Mapping[str, Any]]]
# An action that reads the request's query string (e.g. ``?route=payments``).
QueryAction = Callable[[Mapping[str, str]], Awaitable[Mapping[str, Any]]]
log = get_logger("sidecars.admin")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str), status=status, content_type="application/json"
    )


def not_found(detail: str) -> web.HTTPNotFound:
    """For an action to raise when its query names something that does not exist."""
    return web.HTTPNotFound(
        body=orjson.dumps({"error": "not_found", "detail": detail}),
        content_type="application/json",
    )


def build_app(
    lifecycle: Lifecycle,
    status: Callable[[], Mapping[str, Any]],
    actions: Mapping[str, Action],
    token: str | None,
    query_actions: Mapping[str, QueryAction] | None = None,
) -> web.Application:
    """``actions`` maps a path (``/breaker/open``) to a coroutine run on an authorised POST;
    ``query_actions`` the same for coroutines given the request's query parameters."""

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        return _json({"status": lifecycle.state}, 200 if lifecycle.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def status_view(_: web.Request) -> web.Response:
        return _json({"state": lifecycle.state, **status()})

    def guarded(
        path: str, action: QueryAction
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if token is None:
                log.warn("admin_action_refused", path=path, reason="no_token_configured")
                return _json({"error": "forbidden", "detail": "SIDECAR_ADMIN_TOKEN is not set"},
                             403)
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                log.warn("admin_action_refused", path=path, reason="bad_token",
                         remote=request.remote)
                return _json({"error": "unauthorized", "detail": "Bearer token required"}, 401)
            result = await action(request.query)
            log.info("admin_action", path=path, remote=request.remote)
            return _json(result)

        return handler

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_view)
    for path, action in actions.items():
        app.router.add_post(path, guarded(path, _ignoring_query(action)))
    for path, query_action in (query_actions or {}).items():
        app.router.add_post(path, guarded(path, query_action))
    return app


def _ignoring_query(action: Action) -> QueryAction:
    async def run(_: Mapping[str, str]) -> Mapping[str, Any]:
        return await action()

    return run


async def start(app: web.Application, listen: HostPort) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    await site.start()
    log.info("admin_listening", address=str(listen))
    return runner
