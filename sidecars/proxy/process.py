"""The proxy process: every route's listener, the admin plane, and the drain on stop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sidecars import admin
from sidecars.observability import get_logger
from sidecars.proxy.accesslog import AccessLog, StdoutWriter, close_output, stdout_output
from sidecars.proxy.batch import EndOfIteration
from sidecars.proxy.client import ClientConnection
from sidecars.proxy.fault_drills import drills_for, faults_resource
from sidecars.proxy.filters.canary import admin_resource as canary_resource
from sidecars.proxy.headers import RequestIds
from sidecars.proxy.listener import DescriptorBudget, Listener, bind
from sidecars.proxy.resolver import DnsResolver
from sidecars.proxy.route import Route
from sidecars.proxy.tcp import TcpRelay
from sidecars.runtime import Lifecycle, wait_drained
from sidecars.settings import ProxySettings, to_json_dict

if TYPE_CHECKING:
    from sidecars.proxy.shared_state import SharedCircuitState, SharedRollout

log = get_logger("sidecars.proxy")
# How long requests cut at the end of the drain may take to be logged (see run()).
_CUT_SETTLE = 1.0


async def run(settings: ProxySettings, lifecycle: Lifecycle) -> None:
    loop = asyncio.get_running_loop()
    end_of_iteration = EndOfIteration(loop)
    stdout = stdout_output(settings.sidecar, settings.access_log_buffer)
    access_log = _access_log(settings, loop, end_of_iteration, stdout)
    resolver = DnsResolver(loop, settings.dns_servers)
    request_ids = RequestIds()
    drills = drills_for(loop)  # admin /faults: every HTTP route injects them
    routes = [
        Route(
            settings,
            route,
            loop,
            resolver=resolver,
            request_ids=request_ids,
            access_log=access_log,
            end_of_iteration=end_of_iteration,
            drills=drills,
        )
        for route in settings.routes
    ]
    for route in routes:
        await route.start()
    shared: list[SharedCircuitState | SharedRollout] = []
    shared += await _share_breaker_state(settings, routes)
    shared += await _share_rollouts(settings, routes)
    budget = DescriptorBudget()
    listeners = {route.name: _listen(loop, route, budget, settings.sidecar) for route in routes}

    def status() -> Mapping[str, Any]:
        return {
            "sidecar": settings.sidecar,
            "settings": to_json_dict(settings),
            "routes": {route.name: route.status() for route in routes},
            "fault_drills": drills.active(),
            "descriptors": {
                **budget.status(),
                "accepting": {
                    name: all(listener.accepting for listener in route_listeners)
                    for name, route_listeners in listeners.items()
                },
            },
        }

    admin_server = admin.AdminServer(
        lifecycle,
        status,
        {
            "/breaker/open": _breaker_action(routes, "open"),
            "/breaker/close": _breaker_action(routes, "close"),
        },
        settings.common.admin_token,
        {
            "/faults": faults_resource(drills, loop),
            "/canary": canary_resource({r.name: r.canary for r in routes if r.canary is not None}),
        },
    )
    await admin_server.start(settings.common.admin_listen)
    _freeze_start_up_objects()
    lifecycle.serving()

    await lifecycle.stop_requested.wait()
    # Readiness already answers 503; stop accepting, then let in-flight requests finish.
    for route_listeners in listeners.values():
        for listener in route_listeners:
            listener.close()
    for route in routes:
        route.drain()
    drained = await wait_drained(
        lambda: sum(route.in_flight for route in routes), settings.common.drain_timeout
    )
    log.info("drained", complete=drained, cut=sum(route.in_flight for route in routes))
    for route in routes:
        await route.stop()
        route.close()
    # The requests cut there end as their connections' losses are seen, a loop iteration or
    # two later: their access lines (status 499) are written before the log is closed.
    await wait_drained(lambda: sum(route.in_flight for route in routes), _CUT_SETTLE)
    for state in shared:
        await state.close()
    await admin_server.close()
    close_output(stdout, access_log, settings.sidecar)


def _freeze_start_up_objects() -> None:
    """Move what start-up made (modules, settings, routes, metric families: tens of thousands
    of objects) out of the cyclic collector's sight: they live as long as the process, yet
    every full collection would walk them all, a pause of milliseconds in some request's
    latency. Requests make no reference cycles (a client connection breaks its own when it
    closes), so the young generations stay small and their default thresholds are kept."""
    gc.collect()  # what start-up left over is not frozen for good
    gc.freeze()


def _access_log(
    settings: ProxySettings,
    loop: asyncio.AbstractEventLoop,
    end_of_iteration: EndOfIteration,
    output: StdoutWriter,
) -> AccessLog | None:
    if not settings.access_log:
        return None
    return AccessLog(
        end_of_iteration,
        loop,
        settings.sidecar,
        output,
        buffer_size=settings.access_log_buffer,
        flush_interval=settings.access_log_flush,
    )


def _listen(
    loop: asyncio.AbstractEventLoop, route: Route, budget: DescriptorBudget, sidecar: str
) -> list[Listener]:
    factory: Callable[[], asyncio.Protocol]
    if route.settings.protocol == "tcp":
        factory = lambda: TcpRelay(route)  # noqa: E731
    else:
        factory = lambda: ClientConnection(route)  # noqa: E731
    listen = route.settings.listen
    listeners = [
        Listener(loop, sock, factory, budget, (sidecar, route.name)) for sock in bind(listen)
    ]
    log.info(
        "listening",
        route=route.name,
        address=str(listen),
        upstream=str(route.settings.upstream),
        protocol=route.settings.protocol,
    )
    return listeners


def _breaker_action(routes: list[Route], action: str) -> admin.Action:
    """POST /breaker/open|close: every route, or the one named by ``?route=``."""

    async def run(query: Mapping[str, str]) -> Mapping[str, Any]:
        wanted = query.get("route")
        chosen = [route for route in routes if wanted is None or route.name == wanted]
        if not chosen:
            raise admin.AdminError(404, "not_found", f"no route named {wanted!r}")
        states: dict[str, str] = {}
        for route in chosen:
            breaker = route.breaker
            if breaker is None:
                states[route.name] = "breaker off"
            elif action == "open":
                breaker.force_open()
                states[route.name] = breaker.state
            else:
                breaker.force_close()
                states[route.name] = breaker.state
        return {"breaker": action, "routes": states}

    return run


async def _share_breaker_state(
    settings: ProxySettings, routes: list[Route]
) -> list[SharedCircuitState]:
    """A SharedCircuitState per route with P_STATE_REDIS_URL (never fails start-up); the
    redis client is imported only then."""
    states: list[SharedCircuitState] = []
    for route in routes:
        url = route.settings.breaker.state_redis_url
        if not url or route.breaker is None:
            continue
        from sidecars.proxy.shared_state import SharedCircuitState  # noqa: PLC0415

        state = SharedCircuitState(
            route.breaker,
            url,
            f"sidecars:{settings.sidecar}:{route.name}",
            settings.sidecar,
            route.name,
        )
        await state.start()
        route.shared_state = state
        states.append(state)
    return states


async def _share_rollouts(settings: ProxySettings, routes: list[Route]) -> list[SharedRollout]:
    """A SharedRollout per route with a canary and P_STATE_REDIS_URL: one rollout for every
    replica."""
    shared: list[SharedRollout] = []
    for route in routes:
        url = route.settings.breaker.state_redis_url
        if not url or route.canary is None:
            continue
        from sidecars.proxy.shared_state import SharedRollout  # noqa: PLC0415

        rollout = SharedRollout(
            route.canary,
            url,
            f"sidecars:{settings.sidecar}:{route.name}:canary",
            settings.sidecar,
            route.name,
        )
        await rollout.start()
        route.shared_rollout = rollout
        shared.append(rollout)
    return shared
