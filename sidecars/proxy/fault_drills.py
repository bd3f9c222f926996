"""Fault drills at run time: the admin resource ``/faults`` (token required) over the
process's ``Drills``, every drill's start and end logged, and each ended when its time is up.

``POST /faults`` with a JSON body, one of ``"abort": STATUS``, ``"delay": DURATION``
(``"250ms"`` or seconds) or ``"reset": true``, with ``"percent"`` (default 100),
``"duration"`` (required, at most ``MAX_DRILL_SECONDS``), optional ``"path_prefix"``,
``"header": {"name": ..., "value": ...}`` and ``"scope"`` (``attempt``/``request``; the
route's ``P_FAULT_SCOPE`` when absent) -> 201 with the drill and its ``id``.
``GET /faults`` lists the active drills; ``DELETE /faults/<id>`` ends one, ``DELETE /faults``
all of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from sidecars.admin import AdminError, Resource, ResourceRequest
from sidecars.envparse import duration
from sidecars.observability import get_logger
from sidecars.policies.faults import SCOPES, Drill, DrillRefused, Drills, Fault, abort_status

log = get_logger("sidecars.proxy")


def drills_for(loop: asyncio.AbstractEventLoop) -> Drills:
    """The process's drills, each end logged."""

    def ended(drill: Drill, reason: str) -> None:
        log.info("fault_drill_ended", id=drill.id, reason=reason, **drill.fault.describe())

    return Drills(clock=loop.time, on_end=ended)


def faults_resource(drills: Drills, loop: asyncio.AbstractEventLoop) -> Resource:
    async def serve(request: ResourceRequest) -> tuple[int, Any]:
        drill_id = request.rest.lstrip("/")
        if request.method == "GET" and not drill_id:
            return 200, _listing(drills)
        if request.method == "POST" and not drill_id:
            fault, seconds = parse_drill(request.body)
            try:
                drill = drills.add(fault, seconds)
            except DrillRefused as refused:
                raise AdminError(409, "too_many_drills", str(refused)) from None
            except ValueError as error:
                raise AdminError(400, "bad_request", str(error)) from None
            # Ended on time even when no request comes to notice it.
            loop.call_later(seconds, drills.expire)
            log.warn("fault_drill_started", id=drill.id, duration=seconds, **fault.describe())
            return 201, drill.describe(drills.now())
        if request.method == "DELETE":
            if drill_id:
                if drills.remove(drill_id) is None:
                    raise AdminError(404, "not_found", f"no active drill {drill_id!r}")
                return 200, {"deleted": [drill_id]}
            return 200, {"deleted": [drill.id for drill in drills.clear()]}
        raise AdminError(405, "method_not_allowed", f"{request.method} /faults{request.rest}")

    return serve


def _listing(drills: Drills) -> dict[str, Any]:
    return {
        "drills": drills.active(),
        "max_active": drills.max_active,
        "max_duration": drills.max_seconds,
    }


def parse_drill(body: bytes) -> tuple[Fault, float]:
    """A drill's fault and duration from its JSON body (AdminError 400 when wrong)."""
    try:
        spec = orjson.loads(body)
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object")
        return _fault(spec), _seconds(spec.get("duration"), "duration")
    except (ValueError, TypeError) as error:
        raise AdminError(400, "bad_request", f"bad drill: {error}") from None


def _fault(spec: dict[str, Any]) -> Fault:
    kinds = [kind for kind in ("abort", "delay", "reset") if spec.get(kind) not in (None, False)]
    if len(kinds) != 1:
        raise ValueError('one of "abort" (a status), "delay" (a duration) or "reset": true')
    share = spec.get("percent", 100)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 100:
        raise ValueError('"percent" from 0 to 100')
    scope = spec.get("scope", "")
    if scope and scope not in SCOPES:
        raise ValueError('"scope": attempt or request')
    prefix = spec.get("path_prefix", "")
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ValueError('"path_prefix" a path starting with /')
    header = spec.get("header")
    matched: tuple[bytes, bytes] | None = None
    if header is not None:
        if not isinstance(header, dict) or not all(
            isinstance(header.get(key), str) and header.get(key) for key in ("name", "value")
        ):
            raise ValueError('"header": {"name": ..., "value": ...}')
        matched = (header["name"].lower().encode("latin-1"), header["value"].encode("latin-1"))
    (kind,) = kinds
    value = spec[kind]
    return Fault(
        kind,
        float(share),
        status=abort_status(str(value)) if kind == "abort" else 0,
        delay=_seconds(value, "delay") if kind == "delay" else 0.0,
        path_prefix=prefix.encode("latin-1"),
        header=matched,
        scope=scope,
    )


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, str):
        return duration(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f'"{name}": seconds or a duration such as "60s"')
