"""The open-loop load generator (``bench/openloop.c``): built with gcc on first use, run per
measurement, its one JSON line read back.

wrk is closed loop (a slow answer delays the next request, so latency under a fixed rate is
not what it measures) and wrk2 is not in Debian; h2load's ``--rate`` paces connections, not
requests. The C program sends request n at ``start + n / rate`` whatever the answers do and
counts latency from that intended time (no coordinated omission).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, REPO_DIR, BenchError

SOURCE = BENCH_DIR / "openloop.c"
BINARY = REPO_DIR / "build" / "openloop"


def build_generator() -> Path:
    """``build/openloop``, compiled again when ``openloop.c`` is newer."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    building = BINARY.with_name(f"{BINARY.name}.{os.getpid()}")  # then renamed: no torn file
    argv = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(building), str(SOURCE)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"gcc failed for {SOURCE.name}:\n{done.stderr}")
    os.replace(building, BINARY)
    return BINARY


@dataclass(frozen=True)
class OpenLoopRun:
    """One run's figures: what was due, what came back, latency percentiles in us."""

    target_rate: float
    achieved_rate: float
    due: int
    recorded: int
    errors: int
    timeouts: int
    unanswered: int
    non_2xx: int
    max_queue: int
    max_send_late_us: float
    latency_us: dict[str, float]

    @property
    def bad(self) -> int:
        return self.errors + self.timeouts + self.unanswered + self.non_2xx

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenLoopRun:
        return cls(
            target_rate=float(data["target_rate"]),
            achieved_rate=float(data["achieved_rate"]),
            due=int(data["due"]),
            recorded=int(data["recorded"]),
            errors=int(data["errors"]),
            timeouts=int(data["timeouts"]),
            unanswered=int(data["unanswered"]),
            non_2xx=int(data["non_2xx"]),
            max_queue=int(data["max_queue"]),
            max_send_late_us=float(data["max_send_late_us"]),
            latency_us={key: float(value) for key, value in data["latency_us"].items()},
        )


def parse_output(stdout: str) -> dict[str, Any]:
    """The generator's JSON line (the last line that is a JSON object)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise BenchError(f"openloop printed no JSON: {stdout[-300:]!r}")


def run_openloop(
    host: str,
    port: int,
    path: str,
    rate: float,
    seconds: float,
    *,
    connections: int = 32,
    warmup_seconds: float = 0.5,
    timeout_seconds: float = 2.0,
) -> OpenLoopRun:
    """``rate`` requests/s for ``seconds`` (the first ``warmup_seconds`` not recorded)."""
    argv = [
        str(build_generator()),
        host,
        str(port),
        path,
        str(rate),
        str(seconds),
        str(connections),
        str(warmup_seconds),
        str(timeout_seconds),
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=seconds + timeout_seconds + 30
    )
    if done.returncode != 0:
        raise BenchError(f"openloop exited {done.returncode}: {done.stderr.strip()}")
    return OpenLoopRun.from_json(parse_output(done.stdout))


def histogram_percentiles(latencies_ns: list[int]) -> dict[str, Any]:
    """The generator's histogram over ``latencies_ns`` (``--histogram-test``), for tests."""
    done = subprocess.run(
        [str(build_generator()), "--histogram-test"],
        input="\n".join(str(value) for value in latencies_ns) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_output(done.stdout)
