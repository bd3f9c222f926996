"""What every benchmark needs: managed processes, /proc readings, medians, tables, results."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from tools.compiled import CompileError, compiled_tree

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOISY_SHARE = 0.1  # a round beside other work above this share of the CPUs is measured again
NOISY_RETRIES = 2
MAX_WAIT_SECONDS = 10.0
T = TypeVar("T")


class BenchError(RuntimeError):
    """A contestant could not be measured (failed to start, died, answered wrongly)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_request(
    url: str, method: str = "GET", headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers.items()), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), dict(error.headers.items()), bytes(error.read())


def sidecar_env(
    extra: Mapping[str, str], *, pure_python: bool = False, root: Path | None = None
) -> dict[str, str]:
    """A clean environment for ``python -m sidecars``: PATH, ``extra``, and the sidecars
    importable from ``root`` (another tree: a baseline commit's build), else from the shipped
    build (``build_sidecars``), or from the working tree."""
    root = root or (REPO_DIR if pure_python else _shipped_root)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(root), **extra}


# --- /proc readings -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx's workers, anything a sidecar forks)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its descendants."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(member)
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def status_kib(pid: int, field: str, tree: bool = True) -> int:
    """A ``/proc/<pid>/status`` size field (VmRSS, VmHWM) in KiB, summed over the tree."""
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


# --- processes ------------------------------------------------------------------------------


class ManagedProcess:
    """A contestant run as a child process, its output kept in files for post-mortems."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.workdir = workdir or Path(self._tmp.name)
        self.stdout_path = Path(self._tmp.name) / "stdout"
        self.stderr_path = Path(self._tmp.name) / "stderr"
        self.stdin = stdin
        self.stdout = stdout
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ManagedProcess:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdin=self.stdin,
                stdout=self.stdout if self.stdout is not None else out,
                stderr=err,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output_tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}:\n" + "\n".join(text))
        return "\n".join(parts)

    def check_alive(self) -> None:
        if not self.alive():
            code = self.process.returncode if self.process else None
            raise BenchError(f"{self.name} exited with {code}\n{self.output_tail()}")

    def wait_port(self, port: int, timeout: float = 15.0) -> float:
        """Seconds from exec until ``port`` accepts a connection."""
        deadline = time.perf_counter() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
                return time.perf_counter() - self.started_at
            if time.perf_counter() > deadline:
                raise BenchError(f"{self.name}: port {port} not open after {timeout}s")
            time.sleep(0.005)  # polling interval, not a readiness guess

    def wait_http_ok(self, url: str, timeout: float = 15.0) -> float:
        """Seconds from exec until ``url`` answers 200 (a sidecar's /readyz)."""
        deadline = time.perf_counter() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http_request(url, timeout=0.5)[0] == 200:
                    return time.perf_counter() - self.started_at
            if time.perf_counter() > deadline:
                raise BenchError(f"{self.name}: {url} not 200 after {timeout}s")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


# --- figures --------------------------------------------------------------------------------


_shipped_root = REPO_DIR  # where sidecar_env imports the sidecars from (build_sidecars)


def build_sidecars() -> None:
    """Measure what the images ship: from here on the sidecars run from ``tools.compiled``'s
    copy (the log adapter's per-line modules compiled by mypyc, the rest bytecode). The
    working tree is compiled to bytecode too, for the pure-Python contestants: with
    PYTHONDONTWRITEBYTECODE set, an edited module would be compiled again at every start,
    and start-up counts in the log adapter's rate."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO_DIR / "sidecars")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    global _shipped_root
    started = time.perf_counter()
    try:
        _shipped_root = compiled_tree()
    except CompileError as error:
        raise BenchError(str(error)) from error
    print(f"compiled build: {_shipped_root} ({time.perf_counter() - started:.1f}s)", flush=True)


def stop_children_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, CI) into SystemExit, so every ``with`` block stops its
    processes and removes its temp dir instead of leaving nginx or a sidecar running."""

    def leave(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Target:
    """A figure the team must hit: ``value`` compared with ``threshold``."""

    name: str
    value: float | None
    threshold: float
    at_least: bool
    unit: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.threshold if self.at_least else self.value < self.threshold

    def row(self) -> list[str]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]
        if self.value is None:
            value = "-"
        elif abs(self.value) >= 1000:
            value = f"{self.value:,.0f}{self.unit}"
        else:
            value = f"{self.value:.3g}{self.unit}"
        sign = ">=" if self.at_least else "<"
        return [self.name, value, f"{sign} {self.threshold:,g}{self.unit}", verdict]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "passed": self.passed,
        }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for index, row in enumerate([headers, *rows]):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    sys.stdout.flush()


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds``: what else is running before a benchmark."""
    busy_before, total_before = _cpu_times()
    time.sleep(seconds)
    busy_after, total_after = _cpu_times()
    return (busy_after - busy_before) / max(1, total_after - total_before)


class OtherWork:
    """How much of the machine other people's processes used while a round ran.

    Busy CPU time from /proc/stat, less what this harness, its reaped children (wrk, cat, a
    contestant that exited) and the still-running ``own_pids`` trees used, as a fraction of
    every CPU over the round. A round beside someone's test suite says little.
    """

    def __init__(self, own_pids: Sequence[int] = ()) -> None:
        self.own_pids = list(own_pids)
        self.fraction = 0.0
        self._start = (0.0, 0.0, 0.0)

    def _ours(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        running = sum(cpu_seconds(pid) for pid in self.own_pids)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime + running

    def __enter__(self) -> OtherWork:
        self._start = (time.perf_counter(), _cpu_times()[0] / CLOCK_TICKS, self._ours())
        return self

    def __exit__(self, *_: object) -> None:
        started, busy_before, ours_before = self._start
        elapsed = time.perf_counter() - started
        busy = _cpu_times()[0] / CLOCK_TICKS - busy_before
        others = busy - (self._ours() - ours_before)
        self.fraction = max(0.0, others / (elapsed * (os.cpu_count() or 1)))


def wait_for_quiet(max_wait: float, threshold: float = 0.15, window: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) until other work leaves the CPUs idle; returns busy fraction.

    On a shared machine a round measured beside someone's test suite says little, so each
    round starts in a quiet moment when there is one. ``max_wait`` 0 only measures.
    """
    deadline = time.perf_counter() + max_wait
    while True:
        busy = machine_busy(window)
        if busy < threshold or time.perf_counter() >= deadline:
            return busy


@dataclass
class Patience:
    """How long a benchmark may spend, in all, waiting for quiet and re-running noisy rounds.

    Each wait is capped at ``MAX_WAIT_SECONDS`` and each round re-run at most
    ``NOISY_RETRIES`` times; once ``budget`` seconds are spent, rounds run straight away and
    their noise is only reported. A budget of 0 never waits.
    """

    budget: float
    spent: float = 0.0

    @property
    def left(self) -> float:
        return max(0.0, self.budget - self.spent)

    def wait_for_quiet(self) -> float:
        started = time.perf_counter()
        busy = wait_for_quiet(min(MAX_WAIT_SECONDS, self.left)) if self.left else 0.0
        self.spent += time.perf_counter() - started
        return busy


def measured_quietly(
    measure: Callable[[], T], label: str, patience: Patience, own_pids: Sequence[int] = ()
) -> tuple[T, float]:
    """Run ``measure`` in a quiet moment; again when other people's processes took more than
    ``NOISY_SHARE`` of the machine meanwhile. Returns the last result and that share."""
    for attempt in range(NOISY_RETRIES + 1):
        patience.wait_for_quiet()
        started = time.perf_counter()
        with OtherWork(own_pids) as others:
            result = measure()
        if others.fraction <= NOISY_SHARE or attempt == NOISY_RETRIES or not patience.left:
            break
        patience.spent += time.perf_counter() - started
        print(
            f"    {label} noisy, others used {others.fraction:.0%} of the CPUs: again",
            flush=True,
        )
    return result, others.fraction


def warn_if_busy(label: str) -> float:
    """Print a warning when the machine is not idle; figures taken beside other work drift."""
    busy = machine_busy()
    if busy > 0.1:
        print(
            f"  WARNING: {busy:.0%} of the CPUs were busy {label} (other processes): "
            "expect noisy figures; run benchmarks alone",
            flush=True,
        )
    return busy


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_results(kind: str, data: Mapping[str, Any]) -> Path:
    """``bench/results/<kind>-<UTC time>.json`` plus ``<kind>-latest.json`` (git-ignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {"kind": kind, "time": stamp, "machine": machine_facts(), **data}
    text = json.dumps(payload, indent=2, default=str) + "\n"
    path = RESULTS_DIR / f"{kind}-{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / f"{kind}-latest.json").write_text(text)
    return path


def finish_run(
    kind: str,
    results: dict[str, Any],
    targets: Sequence[Target],
    started: float,
    patience: Patience,
) -> Path:
    """Print the targets, add the run's own facts to ``results`` and write them."""
    print("\n== targets")
    print_table(["target", "value", "goal", "verdict"], [target.row() for target in targets])
    results["targets"] = [target.as_dict() for target in targets]
    results["cpu_busy_after"] = round(warn_if_busy("after the run"), 3)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["patience_spent_seconds"] = round(patience.spent, 1)
    path = write_results(kind, results)
    print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)
