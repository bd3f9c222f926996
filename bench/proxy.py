"""Proxy benchmark: the breaker and ambassador sidecars beside HAProxy, same nginx, same run.

Every contestant forwards to one nginx upstream (a tiny static 200). ``wrk`` drives each in
turn, alternating peer and sidecar every round; the ratio of median requests/s is printed per
scenario, with the sidecar's RSS after load, CPU seconds per 1,000 requests and time to ready.

    python -m bench.proxy                    # every scenario, 5 rounds of 5 s
    python -m bench.proxy --quick            # 3 rounds of 2 s
    python -m bench.proxy --scenario plain --scenario ready
    python -m bench.proxy --baseline 7a4c2d3 # plus that commit's breaker in ``plain``

Beside the wrk scenarios: ``latency`` (added p50/p99 at 1,000 and 5,000 req/s open loop,
``bench/openloop.c``), ``idle`` (KiB per idle keep-alive connection over 5,000, RSS after they
close) and ``body`` (peak RSS under 1 MiB responses at c32).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from bench.common import (
    BENCH_DIR,
    LOOPBACK,
    REPO_DIR,
    BenchError,
    ManagedProcess,
    Patience,
    Target,
    build_sidecars,
    cpu_seconds,
    finish_run,
    free_port,
    http_request,
    measured_quietly,
    median,
    print_table,
    scratch_dir,
    sidecar_env,
    status_kib,
    stop_children_on_sigterm,
    warn_if_busy,
)
from bench.idle import idle_connections, open_descriptors, wait_descriptors_below
from bench.openloop import OpenLoopRun, build_generator, run_openloop

CONFIG_DIR = BENCH_DIR / "config"
ADMIN_TOKEN = "bench-token"
SCENARIOS = (
    "plain", "ambassador", "open", "relay", "cluster", "faults", "canary", "caps", "ready",
    "latency", "idle", "body",
)  # fmt: skip
# The cluster scenario's three upstreams: one nginx listening on three loopback addresses.
CLUSTER_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
RATIO_TARGET = 0.5
# Issue 17's throughput targets: forwarding at c32 (req/s and CPU per request) beside HAProxy,
# the ambassador allowed 3 attempts beside the breaker, the open circuit beside HAProxy's 503.
FORWARDING_TARGET = 0.75
AMBASSADOR_VS_BREAKER_TARGET = 0.95
OPEN_TARGET = 0.8
# Today's sidecar beside a previous commit's (--baseline), both as ratios to HAProxy.
BASELINE_TARGET = 0.97
# The latency scenario: open-loop rates, and the sidecar's added latency (over nginx direct)
# beside HAProxy's: p50 at most 1.5x, p99 no worse.
LATENCY_RATES = (1000, 5000)
LATENCY_CONNECTIONS = 32
ADDED_P50_TARGET = 1.5
ADDED_P99_TARGET = 1.0
# The idle scenario: keep-alive connections that sent one request each, then idle.
IDLE_CONNECTIONS = 5000
IDLE_KIB_TARGET = 2.0
# The body scenario: a 1 MiB static file through the proxy at c32, peak RSS.
BODY_BYTES = 1 << 20
BODY_PATH = "static/1m"
PEAK_RSS_TARGET_MB = 40.0
# Faults configured at 0% (none injected): forwarding within 3% of the same sidecar without.
FAULTS_AT_ZERO = {"BREAKER_FAULT_ABORT": "503@0%", "BREAKER_FAULT_DELAY": "200ms@0%",
                  "BREAKER_FAULT_RESET": "0%"}  # fmt: skip
FAULTS_OVERHEAD_TARGET = 0.97
# A canary configured at weight 0 costs at most 3% of the forwarding rate of the same sidecar.
CANARY_IDLE_TARGET = 0.97
CANARY_IDLE_NAME = "breaker (canary at 0)"
RSS_TARGET_MB = 40.0
READY_TARGET_S = 0.5
# The caps scenario: overload limits configured but never reached cost at most 3%.
CAPS_TARGET = 0.97
CAPS = {
    "BREAKER_MAX_REQUESTS": "100000",
    "BREAKER_MAX_PENDING": "1000",
    "BREAKER_MAX_ACTIVE_RETRIES": "1000",
    "BREAKER_RATE_LIMIT": "100000000/s",
}

# HAProxy's own answer in the rejection scenario, shaped like the sidecar's circuit_open body.
HAPROXY_STATIC_503 = (
    "    http-request return status 503 content-type application/json "
    "hdr Retry-After 30 hdr X-Sidecar-Error circuit_open "
    'string \'{"error":"circuit_open","detail":"circuit open","upstream":"nginx"}\''
)


@dataclass(frozen=True)
class LoadShape:
    rounds: int
    seconds: int
    warmup_seconds: int
    connections: int
    threads: int
    ready_starts: int
    latency_seconds: int


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(count for kind, count in self.errors.items() if kind != "status")


def run_wrk(url: str, seconds: int, shape: LoadShape) -> WrkRun:
    argv = [
        "wrk",
        f"-t{shape.threads}",
        f"-c{shape.connections}",
        f"-d{seconds}s",
        "-s",
        str(CONFIG_DIR / "wrk_report.lua"),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            return WrkRun(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors={k: int(v) for k, v in data["errors"].items()},
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
            )
    raise BenchError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()}")


@dataclass
class Contestant:
    """One process under load (or none: nginx measured directly) and its measured rounds."""

    name: str
    role: str  # "peer", "sidecar" or "reference"
    url: str
    expect_status: int
    process: ManagedProcess | None
    check: Callable[[int, dict[str, str]], str | None] | None = None
    ready_seconds: float | None = None
    runs: list[WrkRun] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    rss_kib: int | None = None
    hwm_kib: int | None = None

    def verify(self) -> None:
        """One request before the load: the contestant answers what the scenario expects."""
        try:
            status, headers, body = http_request(self.url)
        except OSError as error:
            raise BenchError(f"{self.name}: GET {self.url} failed: {error!r}") from error
        if status != self.expect_status:
            raise BenchError(
                f"{self.name}: GET {self.url} gave {status}, expected {self.expect_status}: "
                f"{body[:200]!r}"
            )
        problem = self.check(status, headers) if self.check else None
        if problem:
            raise BenchError(f"{self.name}: {problem}")

    def measure(self, seconds: int, shape: LoadShape) -> tuple[WrkRun, float]:
        """One wrk run; returns it and the contestant's CPU seconds meanwhile."""
        before = cpu_seconds(self.process.pid) if self.process else 0.0
        run = run_wrk(self.url, seconds, shape)
        used = cpu_seconds(self.process.pid) - before if self.process else 0.0
        if self.process:
            self.process.check_alive()
        return run, used

    def keep(self, run: WrkRun, cpu: float, others: float) -> None:
        self.runs.append(run)
        self.cpu.append(cpu)
        self.others.append(others)

    @property
    def median_rps(self) -> float:
        return median([run.rps for run in self.runs])

    @property
    def cpu_per_1k(self) -> float | None:
        requests = sum(run.requests for run in self.runs)
        if self.process is None or not requests:
            return None
        return sum(self.cpu) / requests * 1000

    @property
    def bad_responses(self) -> int:
        """Socket errors plus responses whose status class is not the one expected."""
        bad = 0
        for run in self.runs:
            status_errors = run.errors.get("status", 0)
            bad += run.socket_errors
            # wrk counts every status >= 400 under "status".
            bad += status_errors if self.expect_status < 400 else run.requests - status_errors
        return bad

    def summary(self, peer_rps: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "rps": [round(run.rps, 1) for run in self.runs],
            "median_rps": round(self.median_rps, 1),
            "ratio_vs_peer": round(self.median_rps / peer_rps, 3) if peer_rps else None,
            "latency_p50_ms": median([run.latency_us["p50"] / 1000 for run in self.runs]),
            "latency_p99_ms": median([run.latency_us["p99"] / 1000 for run in self.runs]),
            "requests": sum(run.requests for run in self.runs),
            "bad_responses": self.bad_responses,
            "errors": [run.errors for run in self.runs],
            "cpu_seconds_per_1k_requests": self.cpu_per_1k,
            "rss_mb_after_load": self.rss_kib / 1024 if self.rss_kib is not None else None,
            "peak_rss_mb": self.hwm_kib / 1024 if self.hwm_kib is not None else None,
            "ready_seconds": self.ready_seconds,
            "others_cpu_share_per_round": [round(share, 3) for share in self.others],
        }


# --- the processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxUpstream:
    port: int
    pid: int
    hosts: tuple[str, ...] = (LOOPBACK,)


@contextlib.contextmanager
def nginx_upstream(hosts: tuple[str, ...] = (LOOPBACK,)) -> Iterator[NginxUpstream]:
    """nginx answering on ``port`` of every address in ``hosts``."""
    with scratch_dir("bench-nginx-") as prefix:
        port = free_port()
        listen = "\n".join(f"        listen {host}:{port} reuseport;" for host in hosts)
        conf = Template((CONFIG_DIR / "nginx.conf.tmpl").read_text()).substitute(
            prefix=prefix, port=port, listen=listen
        )
        (prefix / "nginx.conf").write_text(conf)
        # Readable by nginx's workers, which run as another user when the harness is root.
        prefix.chmod(0o755)
        (prefix / "static").mkdir(mode=0o755)
        (prefix / BODY_PATH).write_bytes(b"x" * BODY_BYTES)
        (prefix / BODY_PATH).chmod(0o644)
        argv = [
            "nginx",
            "-p",
            str(prefix),
            "-e",
            str(prefix / "error.log"),
            "-c",
            str(prefix / "nginx.conf"),
        ]
        with ManagedProcess("nginx", argv, workdir=prefix) as nginx:
            nginx.wait_port(port)
            yield NginxUpstream(port, nginx.pid, hosts)


@contextlib.contextmanager
def haproxy(
    upstream_port: int,
    *,
    frontend: str = "",
    backend: str = "",
    hosts: tuple[str, ...] = (LOOPBACK,),
    path: str = "",
) -> Iterator[Contestant]:
    with scratch_dir("bench-haproxy-") as workdir:
        port = free_port()
        servers = "\n".join(
            f"    server nginx{n} {host}:{upstream_port}" for n, host in enumerate(hosts)
        )
        conf = Template((CONFIG_DIR / "haproxy.cfg.tmpl").read_text()).substitute(
            port=port,
            frontend_extra=frontend,
            backend_extra=backend,
            servers=servers,
        )
        (workdir / "haproxy.cfg").write_text(conf)
        argv = ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")]
        with ManagedProcess("haproxy", argv, workdir=workdir) as process:
            ready = process.wait_port(port)
            yield Contestant(
                name="haproxy",
                role="peer",
                url=f"http://{LOOPBACK}:{port}/{path}",
                expect_status=200,
                process=process,
                ready_seconds=ready,
            )


def _sidecar_checks(expect_error: str | None) -> Callable[[int, dict[str, str]], str | None]:
    def check(_: int, headers: dict[str, str]) -> str | None:
        lowered = {key.lower(): value for key, value in headers.items()}
        if expect_error is None and lowered.get("x-sidecar-attempts") != "1":
            return f"expected X-Sidecar-Attempts: 1, got headers {headers}"
        if expect_error is not None and lowered.get("x-sidecar-error") != expect_error:
            return f"expected X-Sidecar-Error: {expect_error}, got headers {headers}"
        return None

    return check


def start_sidecar(
    command: str,
    upstream_port: int,
    log_level: str,
    extra: dict[str, str] | None = None,
    hosts: tuple[str, ...] = (LOOPBACK,),
    *,
    root: Path | None = None,
) -> tuple[ManagedProcess, int, int]:
    """``python -m sidecars <command>`` on free ports; returns (process, data, admin port).
    Several ``hosts``: a cluster of one endpoint per address. ``root``: the tree to import
    the sidecars from (default the shipped build)."""
    prefix = command.upper()
    port, admin_port = free_port(), free_port()
    env = sidecar_env(
        {
            f"{prefix}_UPSTREAM": ",".join(f"http://{host}:{upstream_port}" for host in hosts),
            f"{prefix}_LISTEN": f"{LOOPBACK}:{port}",
            f"{prefix}_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
            "SIDECAR_ADMIN_TOKEN": ADMIN_TOKEN,
            "SIDECAR_LOG_LEVEL": log_level,
            **(extra or {}),
        },
        root=root,
    )
    argv = [sys.executable, "-m", "sidecars", command]
    return ManagedProcess(command, argv, env=env), port, admin_port


@contextlib.contextmanager
def sidecar(
    command: str,
    upstream_port: int,
    log_level: str,
    *,
    extra: dict[str, str] | None = None,
    force_open: bool = False,
    hosts: tuple[str, ...] = (LOOPBACK,),
    name: str | None = None,
    root: Path | None = None,
    role: str = "sidecar",
    path: str = "",
) -> Iterator[Contestant]:
    process, port, admin_port = start_sidecar(
        command, upstream_port, log_level, extra, hosts, root=root
    )
    with process:
        ready = process.wait_http_ok(f"http://{LOOPBACK}:{admin_port}/readyz")
        if force_open:
            status, _, body = http_request(
                f"http://{LOOPBACK}:{admin_port}/breaker/open",
                method="POST",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            if status != 200:
                raise BenchError(f"POST /breaker/open gave {status}: {body[:200]!r}")
        yield Contestant(
            name=name or command + (" (open)" if force_open else ""),
            role=role,
            url=f"http://{LOOPBACK}:{port}/{path}",
            expect_status=503 if force_open else 200,
            process=process,
            check=_sidecar_checks("circuit_open" if force_open else None),
            ready_seconds=ready,
        )


@contextlib.contextmanager
def relay(upstream_port: int) -> Iterator[Contestant]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.relay",
        "--listen",
        str(port),
        "--upstream",
        str(upstream_port),
    ]
    with ManagedProcess("relay", argv, env=sidecar_env({})) as process:
        ready = process.wait_port(port)
        yield Contestant(
            name="uvloop relay",
            role="reference",
            url=f"http://{LOOPBACK}:{port}/",
            expect_status=200,
            process=process,
            ready_seconds=ready,
        )


# --- scenarios ------------------------------------------------------------------------------


def alternate(
    contestants: list[Contestant],
    shape: LoadShape,
    bystanders: Sequence[int],
    patience: Patience,
) -> None:
    """Warm every contestant up, then run rounds, reversing the order every other round.

    ``bystanders`` are our own processes that work during every round (nginx), so that their
    CPU is not taken for other people's.
    """
    for contestant in contestants:
        contestant.verify()
        contestant.measure(shape.warmup_seconds, shape)
    for round_index in range(shape.rounds):
        order = contestants if round_index % 2 == 0 else contestants[::-1]
        for contestant in order:
            label = f"round {round_index + 1}: {contestant.name:<18}"
            (run, cpu), others = measured_quietly(
                functools.partial(contestant.measure, shape.seconds, shape),
                label,
                patience,
                own_pids=[*([contestant.process.pid] if contestant.process else []), *bystanders],
            )
            contestant.keep(run, cpu, others)
            print(
                f"    {label} {run.rps:>10,.0f} req/s  (others used {others:.0%} of the CPUs)",
                flush=True,
            )
    for contestant in contestants:
        if contestant.process is not None:
            contestant.rss_kib = status_kib(contestant.process.pid, "VmRSS")
            contestant.hwm_kib = status_kib(contestant.process.pid, "VmHWM")


@dataclass(frozen=True)
class Baseline:
    """A previous commit's build, run as one more contestant (``--baseline``)."""

    commit: str
    root: Path

    @property
    def name(self) -> str:
        return f"breaker @{self.commit[:7]}"


def build_baseline(commit: str) -> Baseline:
    """``commit``'s tree (``git archive``, nothing added to the repository's worktrees) in
    ``build/baseline/<sha>``, compiled by its own ``tools/compiled.py`` with this interpreter
    (so with this venv's dependencies), reused by later runs."""
    sha = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if sha.returncode != 0:
        raise BenchError(f"--baseline {commit}: not a commit: {sha.stderr.strip()}")
    full = sha.stdout.strip()
    tree = REPO_DIR / "build" / "baseline" / full
    if not (tree / "sidecars").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO_DIR), "archive", "--format=tar", full],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    started = time.perf_counter()
    if (tree / "tools" / "compiled.py").exists():
        done = subprocess.run(
            [sys.executable, "-m", "tools.compiled"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"baseline {full[:7]}: build failed:\n{done.stdout}{done.stderr}")
        root = Path(done.stdout.strip().splitlines()[-1])
    else:
        root = tree
    print(f"baseline build: {root} ({time.perf_counter() - started:.1f}s)", flush=True)
    return Baseline(full, root)


def run_scenario(
    name: str,
    upstream: NginxUpstream,
    shape: LoadShape,
    log_level: str,
    patience: Patience,
    *,
    baseline: Baseline | None = None,
) -> list[Contestant]:
    upstream_port = upstream.port
    with contextlib.ExitStack() as stack:
        if name == "plain":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
            ]
            if baseline is not None:
                contestants.append(
                    stack.enter_context(
                        sidecar(
                            "breaker",
                            upstream_port,
                            log_level,
                            name=baseline.name,
                            root=baseline.root,
                            role="baseline",
                        )
                    )
                )
        elif name == "ambassador":
            contestants = [
                stack.enter_context(
                    haproxy(
                        upstream_port,
                        backend="    retries 3\n    retry-on all-retryable-errors",
                    )
                ),
                stack.enter_context(
                    sidecar(
                        "ambassador",
                        upstream_port,
                        log_level,
                        extra={"AMBASSADOR_MAX_ATTEMPTS": "3"},
                    )
                ),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
            ]
        elif name == "open":
            peer = stack.enter_context(haproxy(upstream_port, frontend=HAPROXY_STATIC_503))
            peer.expect_status = 503
            contestants = [
                peer,
                stack.enter_context(
                    sidecar(
                        "breaker",
                        upstream_port,
                        log_level,
                        extra={"BREAKER_OPEN_SECONDS": "1h"},
                        force_open=True,
                    )
                ),
            ]
        elif name == "cluster":
            hosts = CLUSTER_HOSTS
            contestants = [
                stack.enter_context(
                    haproxy(upstream_port, backend="    balance leastconn", hosts=hosts)
                ),
                stack.enter_context(sidecar("breaker", upstream_port, log_level, hosts=hosts)),
            ]
        elif name == "faults":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar(
                        "breaker",
                        upstream_port,
                        log_level,
                        extra=FAULTS_AT_ZERO,
                        name="breaker (faults 0%)",
                    )
                ),
            ]
        elif name == "canary":
            # The same nginx as the canary: weight 0 sends it nothing, the filter still runs.
            canary = {
                "BREAKER_CANARY_UPSTREAM": f"http://{LOOPBACK}:{upstream_port}",
                "BREAKER_CANARY_WEIGHT": "0",
            }
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar(
                        "breaker", upstream_port, log_level, extra=canary, name=CANARY_IDLE_NAME
                    )
                ),
            ]
        elif name == "caps":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar("breaker", upstream_port, log_level, extra=CAPS, name="breaker capped")
                ),
            ]
        elif name == "body":
            contestants = [
                stack.enter_context(haproxy(upstream_port, path=BODY_PATH)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level, path=BODY_PATH)),
            ]
        elif name == "relay":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(relay(upstream_port)),
                Contestant(
                    "nginx direct", "reference", f"http://{LOOPBACK}:{upstream_port}/", 200, None
                ),
            ]
        else:
            raise ValueError(name)
        alternate(contestants, shape, [upstream.pid], patience)
        return contestants


def measure_ready(
    upstream_port: int, starts: int, log_level: str, patience: Patience
) -> list[float]:
    """Seconds from exec of ``python -m sidecars breaker`` to /readyz 200, per start."""
    seconds = []
    for _ in range(starts):
        patience.wait_for_quiet()
        process, _, admin_port = start_sidecar("breaker", upstream_port, log_level)
        with process:
            seconds.append(process.wait_http_ok(f"http://{LOOPBACK}:{admin_port}/readyz"))
    return seconds


# --- open-loop latency ----------------------------------------------------------------------


def _host_port(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or LOOPBACK, parts.port or 80, parts.path or "/"


def run_latency(
    upstream: NginxUpstream, shape: LoadShape, log_level: str, patience: Patience
) -> dict[str, Any]:
    """nginx direct, HAProxy and the breaker at each of ``LATENCY_RATES`` open loop, rounds
    alternating as in the wrk scenarios; latency counted from each request's due time."""
    build_generator()
    seconds = shape.latency_seconds
    runs: dict[str, dict[int, list[OpenLoopRun]]] = {}
    with contextlib.ExitStack() as stack:
        contestants = [
            Contestant(
                "nginx direct", "reference", f"http://{LOOPBACK}:{upstream.port}/", 200, None
            ),
            stack.enter_context(haproxy(upstream.port)),
            stack.enter_context(sidecar("breaker", upstream.port, log_level)),
        ]
        for contestant in contestants:
            contestant.verify()
            host, port, path = _host_port(contestant.url)
            run_openloop(host, port, path, LATENCY_RATES[0], 1, warmup_seconds=0)  # warm-up
            runs[contestant.name] = {rate: [] for rate in LATENCY_RATES}
        for round_index in range(shape.rounds):
            order = contestants if round_index % 2 == 0 else contestants[::-1]
            for rate in LATENCY_RATES:
                for contestant in order:
                    host, port, path = _host_port(contestant.url)
                    label = f"round {round_index + 1}: {contestant.name:<14} {rate:>5}/s"
                    run, others = measured_quietly(
                        functools.partial(
                            run_openloop,
                            host,
                            port,
                            path,
                            rate,
                            seconds,
                            connections=LATENCY_CONNECTIONS,
                        ),
                        label,
                        patience,
                        own_pids=[
                            *([contestant.process.pid] if contestant.process else []),
                            upstream.pid,
                        ],
                    )
                    if contestant.process:
                        contestant.process.check_alive()
                    runs[contestant.name][rate].append(run)
                    print(
                        f"    {label} p50 {run.latency_us['p50']:>7.0f} us  "
                        f"p99 {run.latency_us['p99']:>7.0f} us  "
                        f"{run.achieved_rate:>6.0f}/s  bad {run.bad}  "
                        f"(others used {others:.0%} of the CPUs)",
                        flush=True,
                    )
    return latency_summary(runs)


def _added(runs: list[OpenLoopRun], direct: list[OpenLoopRun], key: str) -> float:
    """Median over rounds of (proxy - direct) latency in ms, rounds paired."""
    return median(
        [
            (run.latency_us[key] - ref.latency_us[key]) / 1000
            for run, ref in zip(runs, direct, strict=True)
        ]
    )


def latency_summary(runs: dict[str, dict[int, list[OpenLoopRun]]]) -> dict[str, Any]:
    direct = runs["nginx direct"]
    rows = []
    for name, by_rate in runs.items():
        for rate, rate_runs in by_rate.items():
            rows.append(
                {
                    "name": name,
                    "rate": rate,
                    "achieved_rate": [run.achieved_rate for run in rate_runs],
                    "p50_ms": [run.latency_us["p50"] / 1000 for run in rate_runs],
                    "p99_ms": [run.latency_us["p99"] / 1000 for run in rate_runs],
                    "median_p50_ms": median([run.latency_us["p50"] / 1000 for run in rate_runs]),
                    "median_p99_ms": median([run.latency_us["p99"] / 1000 for run in rate_runs]),
                    "added_p50_ms": _added(rate_runs, direct[rate], "p50"),
                    "added_p99_ms": _added(rate_runs, direct[rate], "p99"),
                    "bad": sum(run.bad for run in rate_runs),
                    "max_queue": max(run.max_queue for run in rate_runs),
                }
            )
    return {"rates": list(LATENCY_RATES), "rows": rows}


def _over(value: float, peer: float) -> float | None:
    """``value`` / ``peer`` for added latencies; none when the peer added nothing measurable."""
    return round(value / peer, 3) if peer > 0 else None


def print_latency(summary: dict[str, Any]) -> None:
    print("\n== latency (open loop; added = minus nginx direct, paired by round)")
    print_table(
        ["contestant", "rate", "p50 ms per round", "p99 ms per round", "achieved/s",
         "added p50", "added p99", "bad", "queue max"],
        [
            [
                row["name"],
                str(row["rate"]),
                " ".join(f"{v:.3f}" for v in row["p50_ms"]),
                " ".join(f"{v:.2f}" for v in row["p99_ms"]),
                f"{min(row['achieved_rate']):,.0f}",
                f"{row['added_p50_ms']:+.3f}",
                f"{row['added_p99_ms']:+.3f}",
                str(row["bad"]),
                str(row["max_queue"]),
            ]
            for row in summary["rows"]
        ],
    )  # fmt: skip


def latency_targets(summary: dict[str, Any] | None) -> list[Target]:
    """Per rate: the breaker's added p50 and p99 over HAProxy's (none: unmeasured, n/a)."""
    by = {(row["name"], row["rate"]): row for row in summary["rows"]} if summary else {}
    targets = []
    for rate in LATENCY_RATES:
        peer, ours = by.get(("haproxy", rate)), by.get(("breaker", rate))
        for label, threshold in (("p50", ADDED_P50_TARGET), ("p99", ADDED_P99_TARGET)):
            key = f"added_{label}_ms"
            ratio = _over(ours[key], peer[key]) if peer and ours else None
            targets.append(
                Target(
                    f"latency {rate}/s: breaker added {label} / haproxy's",
                    ratio,
                    threshold,
                    at_least=False,
                )
            )
    return targets


# --- idle connections -----------------------------------------------------------------------


def measure_idle(contestant: Contestant, count: int) -> dict[str, Any]:
    """RSS before, with ``count`` idle keep-alive connections open, and after they closed."""
    assert contestant.process is not None
    pid = contestant.process.pid
    host, port, path = _host_port(contestant.url)
    contestant.verify()
    run_openloop(host, port, path, 1000, 1, warmup_seconds=0)  # warm the request path
    fds_before = open_descriptors(pid)
    before = status_kib(pid, "VmRSS")
    with idle_connections(host, port, count):
        contestant.process.check_alive()
        held = status_kib(pid, "VmRSS")
        fds_held = open_descriptors(pid)
    closed_seen = wait_descriptors_below(pid, fds_before + 16)
    after = status_kib(pid, "VmRSS")
    # A second storm: what the first left behind is either reused (no growth: kept by the
    # allocator) or not (growth: something still holds the first storm's connections).
    with idle_connections(host, port, count):
        contestant.process.check_alive()
        second_held = status_kib(pid, "VmRSS")
    closed_seen = wait_descriptors_below(pid, fds_before + 16) and closed_seen
    second_after = status_kib(pid, "VmRSS")
    contestant.process.check_alive()
    grown = held - before
    return {
        "name": contestant.name,
        "connections": count,
        "rss_before_mb": before / 1024,
        "rss_held_mb": held / 1024,
        "rss_after_close_mb": after / 1024,
        "rss_second_held_mb": second_held / 1024,
        "rss_after_second_close_mb": second_after / 1024,
        "kib_per_connection": grown / count,
        "returned_share": round((held - after) / grown, 3) if grown > 0 else None,
        "descriptors_before": fds_before,
        "descriptors_held": fds_held,
        "closes_seen": closed_seen,
    }


def run_idle(upstream: NginxUpstream, log_level: str, patience: Patience) -> list[dict[str, Any]]:
    rows = []
    for start in (
        functools.partial(haproxy, upstream.port),
        functools.partial(sidecar, "breaker", upstream.port, log_level),
    ):
        with start() as contestant:
            patience.wait_for_quiet()
            rows.append(measure_idle(contestant, IDLE_CONNECTIONS))
            row = rows[-1]
            print(
                f"    {row['name']:<10} {row['rss_before_mb']:.1f} -> {row['rss_held_mb']:.1f} MB "
                f"with {IDLE_CONNECTIONS:,} idle, {row['rss_after_close_mb']:.1f} MB after close; "
                f"again {row['rss_second_held_mb']:.1f} -> "
                f"{row['rss_after_second_close_mb']:.1f} MB",
                flush=True,
            )
    return rows


def print_idle(rows: list[dict[str, Any]]) -> None:
    print(f"\n== idle ({IDLE_CONNECTIONS:,} keep-alive connections, one request each)")
    print_table(
        ["contestant", "RSS before MB", "held MB", "KiB/conn", "after close MB", "returned",
         "2nd held MB", "2nd after MB", "fds held"],
        [
            [
                row["name"],
                f"{row['rss_before_mb']:.1f}",
                f"{row['rss_held_mb']:.1f}",
                f"{row['kib_per_connection']:.2f}",
                f"{row['rss_after_close_mb']:.1f}",
                _fmt(row["returned_share"], ".0%"),
                f"{row['rss_second_held_mb']:.1f}",
                f"{row['rss_after_second_close_mb']:.1f}",
                str(row["descriptors_held"]),
            ]
            for row in rows
        ],
    )  # fmt: skip


def idle_targets(rows: list[dict[str, Any]]) -> list[Target]:
    ours = next((row for row in rows if row["name"] == "breaker"), None)
    return [
        Target(
            f"idle: breaker KiB per connection ({IDLE_CONNECTIONS:,})",
            ours["kib_per_connection"] if ours else None,
            IDLE_KIB_TARGET,
            at_least=False,
            unit=" KiB",
        )
    ]


# --- report ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_scenario(name: str, contestants: list[Contestant]) -> list[dict[str, Any]]:
    peer_rps = contestants[0].median_rps
    summaries = [contestant.summary(peer_rps) for contestant in contestants]
    rows = [
        [
            s["name"],
            " ".join(f"{rps / 1000:.1f}k" for rps in s["rps"]),
            f"{s['median_rps']:,.0f}",
            _fmt(s["ratio_vs_peer"], ".2f"),
            f"{s['latency_p50_ms']:.2f}/{s['latency_p99_ms']:.2f}",
            _fmt(s["cpu_seconds_per_1k_requests"], ".4f"),
            _fmt(s["rss_mb_after_load"], ".1f"),
            str(s["bad_responses"]),
            f"{max(s['others_cpu_share_per_round']):.0%}",
        ]
        for s in summaries
    ]
    print(f"\n== {name}")
    print_table(
        [
            "contestant",
            "req/s per round",
            "median",
            "ratio",
            "p50/p99 ms",
            "cpu s/1k",
            "RSS MB",
            "bad",
            "others max",
        ],
        rows,
    )
    return summaries


# The sidecar contestants of each wrk scenario, by name: their targets are shown (n/a) even
# when the scenario failed.
SCENARIO_SIDECARS = {
    "plain": ("breaker",),
    "ambassador": ("ambassador", "breaker"),
    "open": ("breaker (open)",),
    "cluster": ("breaker",),
    "faults": ("breaker", "breaker (faults 0%)"),
    "canary": ("breaker", CANARY_IDLE_NAME),
    "caps": ("breaker", "breaker capped"),
    "body": ("breaker",),
}


def _ratio(value: float | None, other: float | None) -> float | None:
    return round(value / other, 3) if value is not None and other else None


def wrk_targets(
    name: str, summaries: list[dict[str, Any]], baseline: Baseline | None
) -> list[Target]:
    """A wrk scenario's targets from its summaries (none: a failed scenario, all n/a)."""
    by_name = {summary["name"]: summary for summary in summaries}

    def value(contestant: str, key: str) -> float | None:
        figure = by_name.get(contestant, {}).get(key)
        return None if figure is None else float(figure)

    goal = {"plain": FORWARDING_TARGET, "open": OPEN_TARGET}.get(name, RATIO_TARGET)
    targets = []
    for contestant in SCENARIO_SIDECARS.get(name, ()):
        if name != "body":
            ratio = value(contestant, "ratio_vs_peer")
            targets.append(Target(f"{name}: {contestant} / haproxy", ratio, goal, True))
        rss = value(contestant, "rss_mb_after_load")
        targets.append(
            Target(f"{name}: {contestant} RSS after load", rss, RSS_TARGET_MB, False, " MB")
        )
    if name == "plain":
        cpu = _ratio(
            value("haproxy", "cpu_seconds_per_1k_requests"),
            value("breaker", "cpu_seconds_per_1k_requests"),
        )
        targets.append(
            Target("plain: haproxy CPU per request / breaker's", cpu, FORWARDING_TARGET, True)
        )
        if baseline is not None:
            after = _ratio(value("breaker", "ratio_vs_peer"), value(baseline.name, "ratio_vs_peer"))
            targets.append(
                Target(f"plain: after / before ({baseline.name})", after, BASELINE_TARGET, True)
            )
    elif name == "ambassador":
        ambassador = _ratio(value("ambassador", "median_rps"), value("breaker", "median_rps"))
        targets.append(
            Target(
                "ambassador (3 attempts) / breaker",
                ambassador,
                AMBASSADOR_VS_BREAKER_TARGET,
                True,
            )
        )
    elif name == "faults":
        overhead = _ratio(
            value("breaker (faults 0%)", "ratio_vs_peer"), value("breaker", "ratio_vs_peer")
        )
        targets.append(Target("faults: 0% faults / none", overhead, FAULTS_OVERHEAD_TARGET, True))
    elif name == "canary":
        idle = _ratio(value(CANARY_IDLE_NAME, "median_rps"), value("breaker", "median_rps"))
        targets.append(Target("canary: at weight 0 / without", idle, CANARY_IDLE_TARGET, True))
    elif name == "caps":
        capped = _ratio(value("breaker capped", "ratio_vs_peer"), value("breaker", "ratio_vs_peer"))
        targets.append(Target("caps: capped / uncapped", capped, CAPS_TARGET, True))
    elif name == "body":
        peak = value("breaker", "peak_rss_mb")
        targets.append(
            Target("body: breaker peak RSS (1 MiB, c32)", peak, PEAK_RSS_TARGET_MB, False, " MB")
        )
    return targets


def print_comparisons(
    name: str, summaries: list[dict[str, Any]], baseline: Baseline | None
) -> None:
    """The lines beside a scenario's table that its targets judge."""
    by_name = {summary["name"]: summary for summary in summaries}
    if name == "plain" and baseline is not None:
        before, after = (by_name[n]["ratio_vs_peer"] for n in (baseline.name, "breaker"))
        print(
            f"  ratio to haproxy, before ({baseline.name}) -> after: {_fmt(before, '.3f')} -> "
            f"{_fmt(after, '.3f')}  (after / before {_fmt(_ratio(after, before), '.3f')})"
        )
    if name == "body":
        print(
            "  peak RSS (VmHWM): "
            + ", ".join(
                f"{s['name']} {s['peak_rss_mb']:.1f} MB" for s in summaries if s["peak_rss_mb"]
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of 2 s (latency: 3 s), 3 starts"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only these (repeatable); default: all",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds per contestant")
    parser.add_argument("--seconds", type=int, help="seconds per measured round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--log-level",
        default="info",
        help="SIDECAR_LOG_LEVEL for the sidecars (default: info, the default)",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=120.0,
        help="seconds the run may spend in all waiting for other work to leave the CPUs "
        "idle and re-running noisy rounds (default 120; 0: never wait)",
    )
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run COMMIT's breaker (its own compiled build) in the plain scenario and "
        "print the ratio to HAProxy before -> after (default: none)",
    )
    args = parser.parse_args(argv)
    stop_children_on_sigterm()
    build_sidecars()
    baseline = build_baseline(args.baseline) if args.baseline else None
    patience = Patience(args.patience)
    shape = LoadShape(
        rounds=args.rounds or (3 if args.quick else 5),
        seconds=args.seconds or (2 if args.quick else 5),
        warmup_seconds=1 if args.quick else 2,
        connections=args.connections,
        threads=1,
        ready_starts=3 if args.quick else 7,
        latency_seconds=args.seconds or (3 if args.quick else 5),
    )
    scenarios = args.scenario or list(SCENARIOS)
    results: dict[str, Any] = {
        "shape": shape.__dict__,
        "log_level": args.log_level,
        "baseline": baseline.commit if baseline else None,
        "scenarios": {},
    }
    targets: list[Target] = []
    failed = False
    results["cpu_busy_before"] = round(warn_if_busy("before the run"), 3)
    started = time.perf_counter()
    with nginx_upstream((LOOPBACK, *CLUSTER_HOSTS)) as upstream:
        for name in scenarios:
            print(f"\n-- scenario {name}", flush=True)
            try:
                if name == "ready":
                    starts = measure_ready(
                        upstream.port, shape.ready_starts, args.log_level, patience
                    )
                    ready = median(starts)
                    print(
                        f"\n== ready\n  exec -> /readyz 200: median {ready:.3f}s of "
                        f"{', '.join(f'{s:.3f}' for s in starts)}"
                    )
                    results["scenarios"]["ready"] = {"seconds": starts, "median": ready}
                    targets.append(ready_target(ready))
                elif name == "latency":
                    latency = run_latency(upstream, shape, args.log_level, patience)
                    results["scenarios"]["latency"] = latency
                    print_latency(latency)
                    targets.extend(latency_targets(latency))
                elif name == "idle":
                    rows = run_idle(upstream, args.log_level, patience)
                    results["scenarios"]["idle"] = {"contestants": rows}
                    print_idle(rows)
                    targets.extend(idle_targets(rows))
                else:
                    contestants = run_scenario(
                        name, upstream, shape, args.log_level, patience, baseline=baseline
                    )
                    summaries = print_scenario(name, contestants)
                    results["scenarios"][name] = {"contestants": summaries}
                    print_comparisons(name, summaries, baseline)
                    targets.extend(wrk_targets(name, summaries, baseline))
            except BenchError as error:
                failed = True
                print(f"  FAILED: {error}", flush=True)
                results["scenarios"][name] = {"error": str(error)}
                targets.extend(unmeasured_targets(name, baseline))
    finish_run("proxy", results, targets, started, patience)
    return 1 if failed else 0


def ready_target(ready: float | None) -> Target:
    return Target("sidecar ready (median)", ready, READY_TARGET_S, at_least=False, unit=" s")


def unmeasured_targets(scenario: str, baseline: Baseline | None) -> list[Target]:
    """The targets a failed scenario would have judged, shown as n/a rather than left out."""
    if scenario == "ready":
        return [ready_target(None)]
    if scenario == "latency":
        return latency_targets(None)
    if scenario == "idle":
        return idle_targets([])
    return wrk_targets(scenario, [], baseline)


if __name__ == "__main__":
    sys.exit(main())
