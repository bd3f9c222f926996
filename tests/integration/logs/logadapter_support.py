"""Helpers for tests of the real ``sidecars log-adapter`` process."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from support import LOOPBACK, Sidecar, free_port


class Adapter(Sidecar):
    """A log adapter process with helpers to read the records it wrote on stdout."""

    def records(self) -> list[dict[str, Any]]:
        """Complete JSON lines of stdout (a line being written is left for later)."""
        data = self.stdout_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.splitlines()]

    def messages(self) -> list[str]:
        return [record["message"] for record in self.records()]

    def process_logs(self) -> list[dict[str, Any]]:
        return self.log_events("stderr")

    def wait_records(self, count: int, seconds: float = 15.0) -> list[dict[str, Any]]:
        wait_for(
            lambda: len(self.records()) >= count,
            seconds,
            lambda: f"{len(self.records())} of {count} records\n{self.stderr_text()[-3000:]}",
        )
        return self.records()


def wait_for(
    condition: Callable[[], bool], seconds: float = 15.0, describe: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds}s: {describe()}")
        time.sleep(0.02)  # polling interval


def forward_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "LOGADAPTER_INPUTS": "forward",
        "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{port}",
        **extra,
    }


def start_adapter(
    env: dict[str, str], *, stdin: int | None = subprocess.DEVNULL, ready: bool = True
) -> Adapter:
    admin_port = free_port()
    full_env = {
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
        "SIDECAR_DRAIN_TIMEOUT": "5s",
        **env,
    }
    adapter = Adapter(["log-adapter"], full_env, admin_port, stdin=stdin)
    adapter.start()
    if ready:
        adapter.wait_ready_sync()
    return adapter


StartAdapter = Callable[..., Adapter]
"""The ``adapters`` fixture: ``adapters(env, stdin=..., ready=...)`` starts one."""
