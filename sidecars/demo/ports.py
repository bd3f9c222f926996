"""The demo's fixed block of loopback ports, and the check that they are free.

Everything listens on 127.0.0.1 in the block 18000-18999 (``SIDECARS_DEMO_BASE_PORT`` moves
the block), so the numbers in the terminal are the same on every machine.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

DEFAULT_BASE_PORT = 18000
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """Where each process of the demo listens: ``base`` plus a fixed offset."""

    base: int = DEFAULT_BASE_PORT

    @property
    def breaker(self) -> int:
        return self.base + 1

    @property
    def ambassador(self) -> int:
        return self.base + 2

    @property
    def app(self) -> int:
        return self.base + 80

    @property
    def inventory(self) -> int:
        return self.base + 81

    @property
    def payments(self) -> int:
        return self.base + 82

    @property
    def adapter_forward(self) -> int:
        return self.base + 224

    @property
    def breaker_admin(self) -> int:
        return self.base + 901

    @property
    def ambassador_admin(self) -> int:
        return self.base + 902

    @property
    def adapter_admin(self) -> int:
        return self.base + 903

    def named(self) -> dict[str, int]:
        return {
            "example app": self.app,
            "inventory (flaky dependency)": self.inventory,
            "payments (flaky dependency)": self.payments,
            "breaker data port": self.breaker,
            "breaker admin": self.breaker_admin,
            "ambassador data port": self.ambassador,
            "ambassador admin": self.ambassador_admin,
            "log adapter forward input": self.adapter_forward,
            "log adapter admin": self.adapter_admin,
        }


def base_port(raw: str | None) -> int:
    """``SIDECARS_DEMO_BASE_PORT``: unset means 18000; the block needs base..base+903."""
    if raw is None or not raw.strip():
        return DEFAULT_BASE_PORT
    text = raw.strip()
    if not text.isdigit() or not 1024 <= int(text) <= 65535 - 903:
        raise ValueError(
            f"SIDECARS_DEMO_BASE_PORT={raw!r} is invalid: expected a port from 1024 to 64632"
        )
    return int(text)


def port_taken(port: int, host: str = LOOPBACK) -> bool:
    """True when something already listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def taken_ports(ports: DemoPorts) -> list[tuple[str, int]]:
    return [(name, port) for name, port in ports.named().items() if port_taken(port)]
