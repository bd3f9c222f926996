"""Shared test support: free ports, and the real ``sidecars`` command run as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port not given before in this test process: the kernel may hand a
    port just closed out again, and two settings of one sidecar would then name the same."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; 0 when absent."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        pairs = dict(
            item.split("=", 1) for item in label_text.rstrip("}").split(",") if "=" in item
        )
        if all(pairs.get(key) == f'"{want}"' for key, want in labels.items()):
            total += float(value)
    return total


class Sidecar:
    """``python -m sidecars <args>`` with an environment; stdout/stderr kept in files."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        admin_port: int | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> None:
        self.args = args
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        self.admin_port = admin_port
        self._dir = tempfile.TemporaryDirectory(prefix="sidecar-test-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        self.stdin = stdin
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sidecars", *self.args],
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=self.stdin,
            )
        return self

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def _ready_once(self) -> bool:
        try:
            status, _ = http_get(self.admin_url + "/readyz", timeout=0.5)
        except OSError:
            return False
        return status == 200

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"sidecars {' '.join(self.args)} exited {self.process.returncode}\n"
                f"stdout:\n{self.stdout_text()}\nstderr:\n{self.stderr_text()}"
            )

    def wait_ready_sync(self, timeout: float = 15.0) -> Sidecar:
        deadline = time.monotonic() + timeout
        while not self._ready_once():
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout}s\n{self.stdout_text()}")
            time.sleep(0.02)  # polling interval, not a readiness guess
        return self

    async def wait_ready(self, within: float = 15.0) -> Sidecar:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(self._ready_once):
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {within}s\n{self.stdout_text()}")
            await asyncio.sleep(0.02)
        return self

    def metrics(self) -> str:
        return http_get(self.admin_url + "/metrics")[1].decode()

    def status(self) -> dict[str, Any]:
        return dict(json.loads(http_get(self.admin_url + "/status")[1]))

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_events(self, stream: str = "stdout") -> list[dict[str, Any]]:
        text = self.stdout_text() if stream == "stdout" else self.stderr_text()
        # Whole lines only: a running sidecar may be in the middle of writing the last one
        # (a reader of a growing file sees a batch's bytes as they are copied in).
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def terminate(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._dir.cleanup()


@contextlib.contextmanager
def running(args: list[str], env: Mapping[str, str], admin_port: int) -> Iterator[Sidecar]:
    """Start a sidecar, wait for /readyz, and always stop it."""
    sidecar = Sidecar(args, env, admin_port).start()
    try:
        sidecar.wait_ready_sync()
        yield sidecar
    finally:
        sidecar.close()


class FakeClock:
    """A clock for sans-IO code: ``clock()`` reads it, ``advance`` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
