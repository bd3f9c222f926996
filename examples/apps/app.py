"""The example app: an order service whose two dependencies sit behind sidecars.

Run: ``python -m sidecars_examples.app``. ``POST /orders`` checks stock with the inventory
service through the retry ambassador (an idempotent GET: blips are retried), then charges
through the circuit breaker (a POST with an ``Idempotency-Key``). The app knows nothing of
retries or circuits: it calls two localhost URLs and reports what came back, including the
sidecars' ``X-Sidecar-Attempts`` and ``X-Sidecar-Error`` headers.

==================== ============================ ============================================
variable             default                      meaning
==================== ============================ ============================================
``APP_LISTEN``       0.0.0.0:8080                 where to listen
``APP_INVENTORY_URL`` http://127.0.0.1:15002      inventory, through the ambassador
``APP_PAYMENTS_URL`` http://127.0.0.1:15001       payments, through the breaker
``APP_TIMEOUT``      5s                           client timeout per dependency call
``APP_LOG_FILE``     unset (stdout)               application logs (JSON, logfmt, tracebacks);
                                                  a file is rotated at 32 MiB, 2 kept
``APP_ACCESS_LOG``   unset (stdout)               combined access log (same rotation)
==================== ============================ ============================================

Pages: ``GET /`` (what the app saw, refreshing), ``GET /stats`` (the same as JSON),
``GET /healthz``.
"""

from __future__ import annotations

import html
import itertools
import logging
import os
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from . import applog
from .envconfig import duration, env, listen_address

orders_log = logging.getLogger("orders")
inventory_log = logging.getLogger("inventory")
payments_log = logging.getLogger("payments")

SKUS = ("tea", "kettle", "mug", "teapot")


@dataclass(frozen=True)
class Call:
    """One dependency call as the app saw it."""

    dependency: str
    ok: bool
    status: int | None
    attempts: int | None
    sidecar_error: str | None
    ms: float
    detail: str | None = None


class DependencyError(Exception):
    """A dependency did not give a usable answer."""

    def __init__(self, call: Call) -> None:
        if call.status is None:
            message = f"{call.dependency} unreachable: {call.detail}"
        elif call.sidecar_error:
            message = f"{call.dependency} answered {call.status} ({call.sidecar_error})"
        else:
            message = f"{call.dependency} answered {call.status}"
        super().__init__(message)
        self.call = call


@dataclass
class OrderStats:
    """What the app saw, per dependency, for the status page."""

    orders: Counter[str]
    calls: dict[str, Counter[str]]
    recent: deque[dict[str, Any]]

    @classmethod
    def empty(cls) -> OrderStats:
        return cls(Counter(), {"inventory": Counter(), "payments": Counter()}, deque(maxlen=20))

    def record_call(self, call: Call) -> None:
        counter = self.calls[call.dependency]
        counter["calls"] += 1
        counter["ok" if call.ok else "failed"] += 1
        if call.ok and (call.attempts or 1) > 1:
            counter["ok_after_retries"] += 1
        if call.sidecar_error:
            counter[f"sidecar_error:{call.sidecar_error}"] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "orders": dict(self.orders),
            "calls": {name: dict(counter) for name, counter in self.calls.items()},
            "recent": list(self.recent),
        }


class OrderService:
    def __init__(self, inventory_url: str, payments_url: str, timeout: float) -> None:
        self.inventory_url = inventory_url.rstrip("/")
        self.payments_url = payments_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.stats = OrderStats.empty()
        self.numbers = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None

    async def client_session(self, _: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            self.session = session
            yield
        self.session = None

    async def _call(
        self, dependency: str, method: str, url: str, headers: dict[str, str], body: Any = None
    ) -> Call:
        assert self.session is not None
        started = time.perf_counter()
        try:
            async with self.session.request(method, url, headers=headers, json=body) as response:
                await response.read()
                attempts = response.headers.get("X-Sidecar-Attempts")
                return Call(
                    dependency=dependency,
                    ok=response.status < 400,
                    status=response.status,
                    attempts=int(attempts) if attempts and attempts.isdigit() else None,
                    sidecar_error=response.headers.get("X-Sidecar-Error"),
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return Call(
                dependency=dependency,
                ok=False,
                status=None,
                attempts=None,
                sidecar_error=None,
                ms=round((time.perf_counter() - started) * 1000, 2),
                detail=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
            )

    async def _check_stock(self, order_id: str, sku: str, headers: dict[str, str]) -> Call:
        call = await self._call("inventory", "GET", f"{self.inventory_url}/stock/{sku}", headers)
        fields = {"order_id": order_id, "status": call.status, "attempts": call.attempts}
        if call.ok and (call.attempts or 1) > 1:
            inventory_log.warning("stock answered after retries", extra=fields)
        elif not call.ok:
            fields["sidecar_error"] = call.sidecar_error or call.detail
            inventory_log.error("stock check failed", extra=fields)
        return call

    async def _charge(self, order_id: str, amount: float, headers: dict[str, str]) -> Call:
        call = await self._call(
            "payments",
            "POST",
            f"{self.payments_url}/charges",
            {**headers, "Idempotency-Key": order_id},
            {"order": order_id, "amount": amount},
        )
        if not call.ok:
            raise DependencyError(call)
        return call

    async def place_order(self, request: web.Request) -> web.Response:
        body = await _order_body(request)
        if body is None:
            return web.json_response(
                {"error": "bad_request", "detail": 'expected {"sku": str, "amount": number}'},
                status=400,
            )
        order_id = f"o-{next(self.numbers):06d}"
        trace_id = secrets.token_hex(16)
        sku = str(body.get("sku", SKUS[int(order_id[2:]) % len(SKUS)]))
        amount = float(body.get("amount", 12.5))
        headers = {
            "X-Request-Id": order_id,
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
        }
        calls = [await self._check_stock(order_id, sku, headers)]
        if calls[0].ok:
            try:
                calls.append(await self._charge(order_id, amount, headers))
            except DependencyError as error:
                calls.append(error.call)
                payments_log.exception("payment failed for order %s", order_id)
        for call in calls:
            self.stats.record_call(call)
        placed = all(call.ok for call in calls)
        self.stats.orders["placed" if placed else "failed"] += 1
        outcome = {
            "order": order_id,
            "status": "placed" if placed else "failed",
            "calls": {call.dependency: asdict(call) for call in calls},
        }
        self.stats.recent.appendleft(outcome)
        orders_log.log(
            logging.INFO if placed else logging.ERROR,
            "order placed" if placed else "order failed",
            extra={"order_id": order_id, "sku": sku, "trace_id": trace_id},
        )
        return web.json_response(outcome, status=201 if placed else 502)

    async def stats_json(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text=render_page(self.stats), content_type="text/html")


async def _order_body(request: web.Request) -> dict[str, Any] | None:
    """The optional JSON body of ``POST /orders``; None when it is not a valid order."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    amount = body.get("amount", 0)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return None
    return body


def render_page(stats: OrderStats) -> str:
    def cell(value: object) -> str:
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    counters = "".join(
        f"<tr><th>{html.escape(name)}</th>{cell(', '.join(f'{k} {v}' for k, v in c.items()))}</tr>"
        for name, c in stats.calls.items()
    )
    rows = []
    for order in stats.recent:
        calls = order["calls"]
        rows.append(
            "<tr>"
            + cell(order["order"])
            + cell(order["status"])
            + "".join(
                cell(
                    f"{c['status']} x{c['attempts'] or 1} {c['sidecar_error'] or ''} {c['ms']}ms"
                    if c
                    else "-"
                )
                for c in (calls.get("inventory"), calls.get("payments"))
            )
            + "</tr>"
        )
    return (
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>"
        "<title>orders</title><h1>orders: what the app saw</h1>"
        f"<p>orders: {html.escape(str(dict(stats.orders)))}</p>"
        f"<table border=1>{counters}</table><h2>recent</h2><table border=1>"
        "<tr><th>order</th><th>status</th><th>inventory (ambassador)</th>"
        f"<th>payments (breaker)</th></tr>{''.join(rows)}</table>"
    )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def build_app(service: OrderService) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(service.client_session)
    app.router.add_get("/", service.page)
    app.router.add_get("/stats", service.stats_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/orders", service.place_order)
    return app


def main() -> None:
    host, port = env("APP_LISTEN", listen_address, "0.0.0.0:8080")
    service = OrderService(
        inventory_url=env("APP_INVENTORY_URL", str, "http://127.0.0.1:15002"),
        payments_url=env("APP_PAYMENTS_URL", str, "http://127.0.0.1:15001"),
        timeout=env("APP_TIMEOUT", duration, "5s"),
    )
    applog.configure(
        applog.destination(os.environ.get("APP_LOG_FILE") or None),
        applog.destination(os.environ.get("APP_ACCESS_LOG") or None),
    )
    orders_log.info("listening", extra={"address": f"{host}:{port}"})
    web.run_app(
        build_app(service),
        host=host,
        port=port,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format=applog.ACCESS_LOG_FORMAT,
        print=None,
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()
