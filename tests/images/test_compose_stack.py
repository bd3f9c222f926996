"""The example stack (docker-compose.yml) brought up by podman-compose from the built images,
in a network namespace this test makes (the stack publishes fixed ports: there they clash
with nothing): orders are served through both sidecars, the scripted outage opens the
breaker's circuit and the recovery closes it, and the adapter tails the app's access log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator

import engine
import pytest
from support import metric_value

pytestmark = pytest.mark.timeout(900)
PROJECT = f"sidecars-compose-{os.getpid()}"
BREAKER_ADMIN = "http://127.0.0.1:9901/metrics"
AMBASSADOR_ADMIN = "http://127.0.0.1:9902/metrics"
PAYMENTS_CONTROL = "http://127.0.0.1:8082/control"
# One HTTP call made from inside the namespace: python, as nsenter runs it there.
HTTP_CALL = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode() or None)
with urllib.request.urlopen(request, timeout=3) as response:
    sys.stdout.write(response.read().decode())
"""


def in_namespace(url: str, body: str = "") -> str:
    """The body of ``url`` fetched inside the stack's namespace ('' when it fails)."""
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{PROJECT}", sys.executable, "-c", HTTP_CALL, url, body],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout if result.returncode == 0 else ""


def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("podman-compose")
    assert tool is not None
    global_args = " ".join(engine.PODMAN[1:])
    command = ["nsenter", f"--net=/run/netns/{PROJECT}", tool, "--project-name", PROJECT]
    command += [f"--podman-args={global_args}", f"--podman-run-args={' '.join(engine.ULIMITS)}"]
    return subprocess.run(
        [*command, *args],
        cwd=engine.REPO,
        env=engine.ENGINE_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def stack(images: dict[str, float]) -> Iterator[None]:
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed (pip install podman-compose)")
    version = tomllib.loads((engine.REPO / "pyproject.toml").read_text())["project"]["version"]
    for target in engine.TARGETS:  # the names docker-compose.yml runs
        engine.run([*engine.PODMAN, "tag", engine.tag(target), f"sidecars/{target}:{version}"])
    subprocess.run(["ip", "netns", "add", PROJECT], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", PROJECT, "ip", "link", "set", "lo", "up"], check=True
        )
        up = compose("up", "--detach", "--no-build")
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        compose("down", "--volumes", "--timeout", "25")
        engine.run([*engine.PODMAN, "network", "rm", f"{PROJECT}_default"], check=False)
        subprocess.run(["ip", "netns", "delete", PROJECT], check=False)


def wait_for(what: str, done: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what}\n{compose('logs', '--tail', '20').stdout}"
        time.sleep(0.5)  # polling interval


def breaker(name: str, **labels: str) -> float:
    return metric_value(in_namespace(BREAKER_ADMIN), name, upstream="payments", **labels)


def test_podman_compose_runs_the_example_stack(stack: None) -> None:
    wait_for(
        "orders never went through both sidecars",
        lambda: (
            breaker("sidecar_requests_total", code="200") > 0
            and metric_value(in_namespace(AMBASSADOR_ADMIN), "sidecar_requests_total", code="200")
            > 0
        ),
    )
    assert "payments" in in_namespace(PAYMENTS_CONTROL, '{"outage": "error"}')
    wait_for(
        "the outage never opened the circuit",
        lambda: breaker("sidecar_circuit_state", state="open") == 1,
    )
    assert "payments" in in_namespace(PAYMENTS_CONTROL, '{"outage": "off"}')
    wait_for(
        "the recovery never closed the circuit",
        lambda: (
            breaker("sidecar_circuit_transitions_total", to="closed") >= 1
            and breaker("sidecar_circuit_state", state="closed") == 1
        ),
    )
    adapter = engine.Container(f"{PROJECT}_log-adapter_1", "log-adapter").logs()
    tailed = [r for r in engine.json_lines(adapter) if r.get("service") == "orders" and "http" in r]
    assert tailed, "no access-log record came through the shared volume"
