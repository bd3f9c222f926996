"""A dependency with a failure switch: the upstream the demo and the example stack break on purpose.

Run: ``python -m sidecars_examples.flaky``. Every path except ``/control`` and ``/healthz`` is
the dependency's "business" answer (JSON naming the service, the path and the attempt number
the sidecar stamped). Its behaviour starts from the environment and changes at run time with
``POST /control``:

==========================  ===========  ==================================================
variable / control field    default      meaning
==========================  ===========  ==================================================
``FLAKY_LISTEN``            0.0.0.0:8080 where to listen
``FLAKY_NAME``              flaky        the service name in answers and logs
``FLAKY_FAILURE_RATE``      0            share of calls answered with the failure status
``FLAKY_FAILURE_STATUS``    503          that status
``FLAKY_LATENCY``           0            delay before every answer (``250ms``, ``1s``)
``FLAKY_OUTAGE``            off          ``off``; ``error``: every call fails with the
                                         failure status; ``reset``: connections are reset
                                         without an answer; ``hang``: no answer until the
                                         outage ends
``FLAKY_SEED``              unset        seed for the failure draw (repeatable runs)
==========================  ===========  ==================================================

``GET /control`` shows the behaviour and counters; ``POST /control`` with a JSON object of any
of ``failure_rate``, ``failure_status``, ``latency`` (seconds or ``"250ms"``) and ``outage``
changes them (400 naming the field for a bad value). ``/healthz`` always answers 200: a
simulated outage is about the data path, not the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .envconfig import duration, env, exit_config_error, listen_address, ratio

OUTAGES = ("off", "error", "reset", "hang")


def log(event: str, **fields: Any) -> None:
    """One JSON line on stdout per event."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
    print(json.dumps({**record, **fields}), flush=True)


@dataclass(frozen=True)
class Behaviour:
    failure_rate: float = 0.0
    failure_status: int = 503
    latency: float = 0.0
    outage: str = "off"


def _failure_status(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).isdigit():
        raise ValueError("an HTTP status from 400 to 599")
    status = int(raw)
    if not 400 <= status <= 599:
        raise ValueError("an HTTP status from 400 to 599")
    return status


def _latency(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("seconds (a number) or a duration such as 250ms")
    if isinstance(raw, (int, float)) and raw >= 0:
        return float(raw)
    if isinstance(raw, str):
        return duration(raw)
    raise ValueError("seconds (a number) or a duration such as 250ms")


def _rate(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError("a number from 0 to 1")
    return ratio(str(raw))


def _outage(raw: object) -> str:
    if raw not in OUTAGES:
        raise ValueError("one of " + ", ".join(OUTAGES))
    return str(raw)


_FIELD_PARSERS = {
    "failure_rate": _rate,
    "failure_status": _failure_status,
    "latency": _latency,
    "outage": _outage,
}


def changed(current: Behaviour, changes: Mapping[str, object]) -> tuple[Behaviour, dict[str, str]]:
    """``current`` with ``changes`` applied, and what is wrong with each bad or unknown field."""
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for field, raw in changes.items():
        parser = _FIELD_PARSERS.get(field)
        if parser is None:
            problems[field] = f"unknown field (known: {', '.join(_FIELD_PARSERS)})"
            continue
        try:
            values[field] = parser(raw)
        except ValueError as error:
            problems[field] = f"{raw!r} is invalid: expected {error}"
    return dataclasses.replace(current, **values), problems


class FlakyService:
    """The switchable dependency: its behaviour, its counters and its handlers."""

    def __init__(self, name: str, behaviour: Behaviour, rng: random.Random) -> None:
        self.name = name
        self.behaviour = behaviour
        self.rng = rng
        self.counters: Counter[str] = Counter()
        self.outage_over = asyncio.Event()
        self.set_behaviour(behaviour)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        if behaviour.outage == "hang":
            self.outage_over.clear()
        else:
            self.outage_over.set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "behaviour": dataclasses.asdict(self.behaviour),
            "counters": dict(self.counters),
        }

    async def call(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        behaviour = self.behaviour
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        if behaviour.outage == "hang":
            self.counters["hung"] += 1
            await self.outage_over.wait()
            behaviour = self.behaviour
        if behaviour.outage == "reset":
            self.counters["reset"] += 1
            _reset_connection(request)
            raise web.HTTPServiceUnavailable()  # never written: the connection is gone
        if behaviour.outage == "error" or self.rng.random() < behaviour.failure_rate:
            self.counters["failed"] += 1
            return web.json_response(
                {"error": "injected_failure", "service": self.name},
                status=behaviour.failure_status,
            )
        self.counters["ok"] += 1
        return web.json_response(
            {
                "service": self.name,
                "method": request.method,
                "path": request.path,
                "attempt": request.headers.get("X-Sidecar-Attempt"),
                "request_id": request.headers.get("X-Request-Id"),
            }
        )

    async def show_control(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def set_control(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        if not isinstance(changes, dict):
            return web.json_response(
                {"error": "bad_request", "detail": "expected a JSON object"}, status=400
            )
        behaviour, problems = changed(self.behaviour, changes)
        if problems:
            return web.json_response({"error": "bad_request", "problems": problems}, status=400)
        self.set_behaviour(behaviour)
        log("behaviour_changed", service=self.name, **dataclasses.asdict(behaviour))
        return web.json_response(self.snapshot())


def _reset_connection(request: web.Request) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed or overloaded peer does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def build_app(service: FlakyService) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/control", service.show_control)
    app.router.add_post("/control", service.set_control)
    app.router.add_route("*", "/{tail:.*}", service.call)
    return app


def behaviour_from_env() -> Behaviour:
    initial = {
        "failure_rate": env("FLAKY_FAILURE_RATE", str, "0"),
        "failure_status": env("FLAKY_FAILURE_STATUS", str, "503"),
        "latency": env("FLAKY_LATENCY", str, "0"),
        "outage": env("FLAKY_OUTAGE", str, "off"),
    }
    behaviour, problems = changed(Behaviour(), initial)
    if problems:
        exit_config_error(
            "\n".join(f"FLAKY_{field.upper()}={message}" for field, message in problems.items())
        )
    return behaviour


def main() -> None:
    host, port = env("FLAKY_LISTEN", listen_address, "0.0.0.0:8080")
    name = env("FLAKY_NAME", str, "flaky")
    seed = os.environ.get("FLAKY_SEED")
    service = FlakyService(name, behaviour_from_env(), random.Random(seed))
    log(
        "listening", service=name, address=f"{host}:{port}", **dataclasses.asdict(service.behaviour)
    )
    web.run_app(
        build_app(service),
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
    )


if __name__ == "__main__":
    main()
