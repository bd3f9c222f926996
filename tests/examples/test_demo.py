"""`sidecars demo` end to end: the real command, its real children, the scripted phases at 2.5x.

Each test uses its own free block of ports (SIDECARS_DEMO_BASE_PORT), so a demo running on the
default block 18000-18999 on the same machine does not disturb it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import http_get

from sidecars.demo.ports import DemoPorts, port_taken

SPEED = "2.5"  # the ~25 s script in ~10 s; the breaker's open period shrinks with it


def free_block() -> DemoPorts:
    for _ in range(200):
        ports = DemoPorts(random.randrange(20000, 60000))
        if not any(port_taken(port) for port in ports.named().values()):
            return ports
    raise AssertionError("no free block of ports for the demo")


def demo_env(ports: DemoPorts, workdir: Path, **extra: str) -> dict[str, str]:
    """The demo's environment; TMPDIR keeps the work directory it keeps on failure in pytest's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECARS_DEMO_")}
    return {
        **env,
        "SIDECARS_DEMO_BASE_PORT": str(ports.base),
        "SIDECARS_DEMO_SPEED": SPEED,
        "TMPDIR": str(workdir),
        **extra,
    }


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in the output:\n{text}"
    return int(match.group(1))


@pytest.fixture
def ports() -> DemoPorts:
    return free_block()


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """Any directory will do: the demo must not rely on the repository being the cwd."""
    return tmp_path


def test_demo_shows_retries_the_circuit_opening_and_closing_and_normalised_logs(
    ports: DemoPorts, demo_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars", "demo", "--duration", "11"],
        env=demo_env(ports, demo_dir),
        cwd=demo_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "\033[" not in out, "colours when piped"
    for heading in ("1/4 healthy", "2/4 blips", "3/4 outage", "4/4 recovery"):
        assert heading in out
    # Retries absorbed the blips.
    assert number(r"retries (\d+)", out) > 0
    assert number(r"\((\d+) after retries\)", out) > 0
    # The circuit opened, answered fast, went half-open and closed again.
    assert number(r"closed->open (\d+)", out) >= 1
    assert number(r"open->half_open (\d+)", out) >= 1
    assert number(r"half_open->closed (\d+)", out) >= 1
    assert number(r"(\d+) rejected by the open circuit", out) > 0
    assert re.search(r"now closed", out)
    assert ">> breaker circuit closed -> open" in out
    # The app's logs were normalised: tracebacks joined, access logs parsed, several formats.
    assert number(r"(\d+) normalised", out) > 0
    assert number(r"stack trace (\d+)", out) > 0
    assert number(r"access log (\d+)", out) > 0
    assert number(r"logfmt (\d+)", out) > 0
    assert '"error":{"type":"DependencyError"' in out
    assert "6 stopped cleanly (exit 0)" in out
    # Every child is gone: the whole block is free again.
    assert [name for name, port in ports.named().items() if port_taken(port)] == []


def test_ctrl_c_stops_the_looping_demo_with_a_summary(ports: DemoPorts, demo_dir: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "sidecars", "demo"],
        env=demo_env(ports, demo_dir),
        cwd=demo_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stats = f"http://127.0.0.1:{ports.app}/stats"
        deadline = time.monotonic() + 30
        while True:  # wait until orders flow through the app, then press Ctrl-C
            assert demo.poll() is None, demo.communicate()
            try:
                status, body = http_get(stats, timeout=0.5)
            except OSError:
                status, body = 0, b""
            if status == 200 and b'"placed"' in body:
                break
            assert time.monotonic() < deadline, "the demo never sent an order"
            time.sleep(0.05)  # polling interval
        # Each sidecar names its upstream: the two dependencies tell apart in the metrics.
        for admin, upstream in (
            (ports.breaker_admin, "payments"),
            (ports.ambassador_admin, "inventory"),
        ):
            metrics = http_get(f"http://127.0.0.1:{admin}/metrics")[1].decode()
            assert f'upstream="{upstream}"' in metrics
            assert 'upstream="127.0.0.1"' not in metrics
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, out + err
    assert "== summary" in out and "6 stopped cleanly (exit 0)" in out
    assert [name for name, port in ports.named().items() if port_taken(port)] == []


def test_a_taken_port_is_named_and_nothing_starts(ports: DemoPorts, demo_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ports.breaker_admin))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "sidecars", "demo", "--duration", "5"],
            env=demo_env(ports, demo_dir),
            cwd=demo_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {ports.breaker_admin} on 127.0.0.1 (breaker admin) is already in use" in (
        result.stderr
    )
    assert "SIDECARS_DEMO_BASE_PORT" in result.stderr
    assert result.stdout == ""
    assert not port_taken(ports.app), "a child was started anyway"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--duration", "0"], {}, "--duration 0 is invalid"),
        ([], {"SIDECARS_DEMO_SPEED": "fast"}, "SIDECARS_DEMO_SPEED='fast' is invalid"),
        ([], {"SIDECARS_DEMO_BASE_PORT": "80"}, "SIDECARS_DEMO_BASE_PORT='80' is invalid"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    ports: DemoPorts, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars", "demo", *args],
        env=demo_env(ports, tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def listener_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (from ``ss -ltnp``)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"pid=(\d+)", out)
    assert match is not None, out
    return int(match.group(1))


def test_a_crashed_child_stops_the_demo_with_its_output(ports: DemoPorts, demo_dir: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "sidecars", "demo", "--duration", "60"],
        env=demo_env(ports, demo_dir),
        cwd=demo_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_taken(ports.app):  # the app starts last: the stack is up
            assert demo.poll() is None, demo.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling interval
        os.kill(listener_pid(ports.breaker_admin), signal.SIGKILL)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 1, out + err
    assert "sidecars demo: breaker: exited with code -9" in out
    assert "process logs kept in " in out
    kept = Path(out.rsplit("process logs kept in ", 1)[1].split()[0])
    assert kept.parent == demo_dir and (kept / "breaker.stdout.log").exists()
    assert [name for name, port in ports.named().items() if port_taken(port)] == []
