"""The demo's processes and their environment: docker-compose.yml's stack, as local processes.

The same wiring as a task or pod: the app calls inventory through the ambassador and payments
through the breaker on loopback; its stdout reaches the log adapter's Forward input (the demo
plays Docker's fluentd log driver) and its access log file is tailed from a shared directory.
"""

from __future__ import annotations

from pathlib import Path

from sidecars.demo.ports import LOOPBACK, DemoPorts
from sidecars.demo.processes import ChildSpec

APP_SERVICE = "orders"


def _url(port: int, path: str = "") -> str:
    return f"http://{LOOPBACK}:{port}{path}"


def _address(port: int) -> str:
    return f"{LOOPBACK}:{port}"


def control_urls(ports: DemoPorts) -> dict[str, str]:
    return {
        "inventory": _url(ports.inventory, "/control"),
        "payments": _url(ports.payments, "/control"),
    }


def admin_urls(ports: DemoPorts) -> dict[str, str]:
    return {
        "ambassador": _url(ports.ambassador_admin),
        "breaker": _url(ports.breaker_admin),
        "log-adapter": _url(ports.adapter_admin),
    }


def describe(ports: DemoPorts) -> list[tuple[str, str, str]]:
    """(process, address, role) rows for the banner."""
    return [
        ("app", _url(ports.app, "/"), "the example app: GET / shows what it saw"),
        (
            "inventory",
            _url(ports.inventory, "/control"),
            "flaky dependency, called through the ambassador",
        ),
        (
            "payments",
            _url(ports.payments, "/control"),
            "flaky dependency, called through the breaker",
        ),
        (
            "ambassador",
            f"{_address(ports.ambassador)} -> inventory",
            f"retries; admin {_url(ports.ambassador_admin, '/status')}",
        ),
        (
            "breaker",
            f"{_address(ports.breaker)} -> payments",
            f"circuit breaker; admin {_url(ports.breaker_admin, '/status')}",
        ),
        (
            "log-adapter",
            f"forward {_address(ports.adapter_forward)} + tail",
            f"normalises the app's logs; admin {_url(ports.adapter_admin, '/status')}",
        ),
    ]


def log_directory(workdir: Path) -> Path:
    """The "shared volume": the app writes its access log here, the adapter tails it."""
    return workdir / "app-logs"


def dependencies(ports: DemoPorts) -> list[ChildSpec]:
    return [
        ChildSpec(
            name=name,
            module_args=("sidecars_examples.flaky",),
            env={"FLAKY_LISTEN": _address(port), "FLAKY_NAME": name},
            ready_url=_url(port, "/healthz"),
        )
        for name, port in (("inventory", ports.inventory), ("payments", ports.payments))
    ]


def drill_admin(ports: DemoPorts) -> str:
    """The admin address the demo's fault drill goes to (``sidecars fault --admin``)."""
    return _address(ports.ambassador_admin)


def sidecars(
    ports: DemoPorts, workdir: Path, open_seconds: float, admin_token: str
) -> list[ChildSpec]:
    common = {
        "SIDECAR_DRAIN_TIMEOUT": "2s",
        "SIDECAR_LOG_LEVEL": "info",
        "SIDECAR_ADMIN_TOKEN": admin_token,  # the demo's own, for its fault drill
    }
    return [
        ChildSpec(
            name="log-adapter",
            module_args=("sidecars", "log-adapter"),
            env={
                **common,
                "LOGADAPTER_INPUTS": "forward,tail",
                "LOGADAPTER_FORWARD_LISTEN": _address(ports.adapter_forward),
                "LOGADAPTER_TAIL_PATHS": str(log_directory(workdir) / "*.log"),
                "LOGADAPTER_STATE_DIR": str(workdir / "log-adapter-state"),
                "LOGADAPTER_SERVICE": APP_SERVICE,
                "LOGADAPTER_OUTPUTS": "stdout",
                "LOGADAPTER_ADMIN_LISTEN": _address(ports.adapter_admin),
            },
            ready_url=_url(ports.adapter_admin, "/readyz"),
            piped=frozenset({"stdout"}),
        ),
        ChildSpec(
            name="ambassador",
            module_args=("sidecars", "ambassador"),
            env={
                **common,
                "AMBASSADOR_UPSTREAM": _url(ports.inventory),
                "AMBASSADOR_NAME": "inventory",  # the metrics' upstream label, not 127.0.0.1
                "AMBASSADOR_LISTEN": _address(ports.ambassador),
                "AMBASSADOR_ADMIN_LISTEN": _address(ports.ambassador_admin),
                "AMBASSADOR_MAX_ATTEMPTS": "3",
                # Blips must be retried, not trip the ambassador's own breaker: 30% failures
                # make 5 in a row likely within seconds, 10 in a row practically never.
                "AMBASSADOR_FAILURE_THRESHOLD": "10",
                "AMBASSADOR_TIMEOUT": "2s",
            },
            ready_url=_url(ports.ambassador_admin, "/readyz"),
        ),
        ChildSpec(
            name="breaker",
            module_args=("sidecars", "breaker"),
            env={
                **common,
                "BREAKER_UPSTREAM": _url(ports.payments),
                "BREAKER_NAME": "payments",
                "BREAKER_LISTEN": _address(ports.breaker),
                "BREAKER_ADMIN_LISTEN": _address(ports.breaker_admin),
                "BREAKER_FAILURE_THRESHOLD": "5",
                "BREAKER_OPEN_SECONDS": f"{open_seconds:g}",
                "BREAKER_TIMEOUT": "2s",
            },
            ready_url=_url(ports.breaker_admin, "/readyz"),
        ),
    ]


def app(ports: DemoPorts, workdir: Path) -> ChildSpec:
    return ChildSpec(
        name="app",
        module_args=("sidecars_examples.app",),
        env={
            "APP_LISTEN": _address(ports.app),
            "APP_INVENTORY_URL": _url(ports.ambassador),
            "APP_PAYMENTS_URL": _url(ports.breaker),
            "APP_ACCESS_LOG": str(log_directory(workdir) / "access.log"),
        },
        ready_url=_url(ports.app, "/healthz"),
        piped=frozenset({"stdout", "stderr"}),
    )
