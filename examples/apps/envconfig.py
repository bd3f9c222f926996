"""Environment parsing for the example services: addresses, durations, rates.

The example apps stand in for a user's own services, so they depend on aiohttp only, never on
the ``sidecars`` package; a bad value stops the service at start with one line naming it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0}


def duration(raw: str) -> float:
    """``0.25``, ``250ms``, ``2s`` or ``1m`` -> seconds."""
    match = _DURATION.match(raw)
    if match is None:
        raise ValueError("seconds or a number with ms/s/m, e.g. 250ms")
    return float(match.group(1)) * _UNITS[match.group(2)]


def ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError("a number from 0 to 1")
    return value


def positive_number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError("a number above 0")
    return value


def listen_address(raw: str) -> tuple[str, int]:
    """``0.0.0.0:8080`` or ``:8080`` -> (host, port)."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("host:port, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def exit_config_error(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(2)


def env(name: str, parse: Callable[[str], T], default: str) -> T:
    """Parse ``name`` from the environment (``default`` when unset); exit 2 when invalid."""
    raw = os.environ.get(name, "").strip() or default
    try:
        return parse(raw)
    except ValueError as error:
        exit_config_error(f"{name}={raw!r} is invalid: expected {error}")
