"""What happens to the dependencies over time: healthy -> blips -> outage -> recovery.

The demo plays the chaos engineer: at each phase it sets both flaky dependencies through their
``POST /control`` endpoint; the blips are a fault drill started with ``sidecars fault``
through the ambassador's admin API, lasting the phase. ``speed`` compresses the script (tests
run it at 2.5x) together with the breaker's open period, so every phase still shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp

BREAKER_OPEN_SECONDS = 2.0
ORDERS_PER_SECOND = 20.0


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A flaky dependency's switch settings (its ``/control`` fields)."""

    failure_rate: float = 0.0
    outage: str = "off"

    def control_body(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


HEALTHY = Behaviour()


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    headline: str
    inventory: Behaviour
    payments: Behaviour
    drill: tuple[str, ...] = ()  # ``sidecars fault`` arguments; it lasts the phase


SCRIPT: tuple[Phase, ...] = (
    Phase("healthy", 4.0, "both dependencies answer every call", HEALTHY, HEALTHY),
    Phase(
        "blips",
        7.0,
        "a drill: sidecars fault --abort 503 --percent 30 on the ambassador; its retries "
        "absorb the injected failures",
        HEALTHY,
        HEALTHY,
        drill=("--abort", "503", "--percent", "30"),
    ),
    Phase(
        "outage",
        8.0,
        "payments is down (503 on every call); the breaker opens and answers at once",
        HEALTHY,
        Behaviour(outage="error"),
    ),
    Phase(
        "recovery",
        6.0,
        "payments is back; after the open period one trial call closes the circuit",
        HEALTHY,
        HEALTHY,
    ),
)


def scaled(script: tuple[Phase, ...], speed: float) -> tuple[Phase, ...]:
    return tuple(dataclasses.replace(phase, seconds=phase.seconds / speed) for phase in script)


def speed_factor(raw: str | None) -> float:
    """``SIDECARS_DEMO_SPEED``: 1 plays the script in real time (~25 s), 2.5 in ~10 s."""
    if raw is None or not raw.strip():
        return 1.0
    try:
        speed = float(raw)
    except ValueError:
        speed = 0.0
    if not 0.1 <= speed <= 20:
        raise ValueError(f"SIDECARS_DEMO_SPEED={raw!r} is invalid: expected a number 0.1-20")
    return speed


async def apply(phase: Phase, session: aiohttp.ClientSession, control_urls: dict[str, str]) -> None:
    """Set each dependency to the phase's behaviour; raises on a refused change."""
    for name, behaviour in (("inventory", phase.inventory), ("payments", phase.payments)):
        async with session.post(control_urls[name], json=behaviour.control_body()) as response:
            if response.status != 200:
                body = await response.text()
                raise RuntimeError(f"{name} refused {behaviour}: {response.status} {body}")


async def start_drill(phase: Phase, admin: str, token: str) -> None:
    """The phase's fault drill through the real ``sidecars fault`` command (it expires with
    the phase); raises when refused."""
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecars",
        "fault",
        "--admin",
        admin,
        *phase.drill,
        "--for",
        f"{phase.seconds:.3f}s",
        env={**os.environ, "SIDECAR_ADMIN_TOKEN": token},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await command.communicate()
    if command.returncode != 0:
        raise RuntimeError(f"sidecars fault {' '.join(phase.drill)}: {err.decode().strip()}")
