"""The pod/task wiring for real: app and sidecars as processes in one network namespace.

Everything runs inside a fresh network namespace (``ip netns add``) with the images' default
ports (app 8080, breaker 15001/9901, ambassador 15002/9902, adapter 9903): the app reaches its
dependencies only through the sidecars on that namespace's localhost, the sidecars' own
health-check command works there, and the adapter tails the app's log files from a shared
directory (the pod's emptyDir). Needs root or CAP_SYS_ADMIN; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pod import NS_CLIENT, Pod

pytestmark = pytest.mark.netns

INVENTORY, PAYMENTS = 8081, 8082


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")
    name = f"sidecars-test-{os.getpid()}"
    created = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, check=False
    )
    if created.returncode != 0:
        pytest.skip(
            f"cannot create a network namespace: {created.stderr.strip()} "
            "(needs root or CAP_SYS_ADMIN)"
        )
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_namespace(
    netns: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, *args],
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(netns: str, steps: list[list[Any]]) -> list[list[Any]]:
    result = in_namespace(netns, "-c", NS_CLIENT, "calls", json.dumps(steps))
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_app_and_sidecars_share_localhost_in_one_namespace(netns: str, tmp_path: Path) -> None:
    logs = tmp_path / "app-logs"
    logs.mkdir()
    pod = Pod(["ip", "netns", "exec", netns], tmp_path)
    env = {
        "inventory": {"FLAKY_LISTEN": f"127.0.0.1:{INVENTORY}", "FLAKY_NAME": "inventory"},
        "payments": {"FLAKY_LISTEN": f"127.0.0.1:{PAYMENTS}", "FLAKY_NAME": "payments"},
        # Only what a user must set: the upstream. Ports and listeners are the defaults.
        "ambassador": {"AMBASSADOR_UPSTREAM": f"http://127.0.0.1:{INVENTORY}"},
        "breaker": {"BREAKER_UPSTREAM": f"http://127.0.0.1:{PAYMENTS}"},
        "log-adapter": {
            "LOGADAPTER_INPUTS": "tail",
            "LOGADAPTER_TAIL_PATHS": f"{logs}/*.log",
            "LOGADAPTER_SERVICE": "orders",
            "SIDECAR_DRAIN_TIMEOUT": "5s",
        },
        # The app's defaults already point at the sidecars' default listeners.
        "app": {"APP_LOG_FILE": f"{logs}/app.log", "APP_ACCESS_LOG": f"{logs}/access.log"},
    }
    try:
        for name in ("inventory", "payments"):
            pod.start(name, ["sidecars_examples.flaky"], env[name])
        for name in ("log-adapter", "breaker", "ambassador"):
            pod.start(name, ["sidecars", name], env[name])
        pod.start("app", ["sidecars_examples.app"], env["app"])
        ready = [
            f"http://127.0.0.1:{port}/{path}"
            for port, path in (
                (INVENTORY, "healthz"),
                (PAYMENTS, "healthz"),
                (9903, "readyz"),
                (9901, "readyz"),
                (9902, "readyz"),
                (8080, "healthz"),
            )
        ]
        waited = in_namespace(netns, "-c", NS_CLIENT, "wait", json.dumps(ready))
        assert waited.returncode == 0, waited.stderr + pod.outputs()

        # The containers' HEALTHCHECK command, with the container's environment.
        for name in ("breaker", "ambassador", "log-adapter"):
            health = in_namespace(netns, "-m", "sidecars", "health", name, env=env[name])
            assert health.returncode == 0, f"{name}: {health.stderr}"

        listening = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-Hltn"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in listening.splitlines()}
        assert ports == {8080, 15001, 15002, 9901, 9902, 9903, INVENTORY, PAYMENTS}

        app = "http://127.0.0.1:8080"
        placed = calls(netns, [["POST", f"{app}/orders"]] * 3)
        assert [status for status, _ in placed] == [201, 201, 201]
        assert placed[0][1]["calls"]["inventory"]["attempts"] == 1  # through the ambassador

        calls(netns, [["POST", f"http://127.0.0.1:{PAYMENTS}/control", {"outage": "error"}]])
        failing = calls(netns, [["POST", f"{app}/orders"]] * 8)
        errors = [answer["calls"]["payments"]["sidecar_error"] for _, answer in failing]
        assert errors[:5] == [None] * 5, "the breaker's threshold is 5 consecutive failures"
        assert errors[5:] == ["circuit_open"] * 3

        codes = pod.stop("app")
        codes.update(pod.stop("breaker", "ambassador", "inventory", "payments"))
        codes.update(pod.stop("log-adapter"))
        assert codes == dict.fromkeys(codes, 0), pod.outputs()
    finally:
        pod.kill_all()

    records = [
        json.loads(line)
        for line in pod.processes["log-adapter"].stdout.read_text().splitlines()
        if line.strip()
    ]
    assert records and all(record["service"] == "orders" for record in records)
    traces = [r for r in records if isinstance(r.get("error"), dict)]
    assert traces and "Traceback (most recent call last):" in traces[0]["error"]["stack_trace"]
    assert any(r.get("http", {}).get("path") == "/orders" for r in records)
